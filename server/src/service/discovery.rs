//! `DiscoveryService`: eDiscovery cases, KQL search, export, case holds and purge (SPEC §5,
//! §6) over gRPC. Each handler authenticates, decodes, calls the application layer
//! (`app::cases`, `app::search`, `app::export`, `app::holds`, `app::purge`) and encodes.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use holdfast_proto::v1 as pb;
use holdfast_proto::v1::discovery_service_server::DiscoveryService;
use tonic::{Request, Response, Status};

use super::retention::hold_to_proto;
use super::{authenticate, decoded};
use crate::app::cases::{CaseChange, NewCase};
use crate::app::export::{ExportMessage, ExportRequest};
use crate::app::holds::{HoldView, NewCaseHold};
use crate::app::purge::{PurgeReport, PurgeRequest};
use crate::app::search::{HitLocation, SearchPage, SearchRequest};
use crate::app::App;
use crate::app::EDISCOVERY;
use crate::cases::{CaseRecord, CaseStatus};
use crate::convert;
use crate::error::Error;
use crate::search::searcher::Sort;

pub struct DiscoveryApi {
    app: Arc<App>,
}

impl DiscoveryApi {
    pub fn new(app: Arc<App>) -> Self {
        DiscoveryApi { app }
    }
}

pub(super) fn case_to_proto(case: &CaseRecord) -> pb::Case {
    pb::Case {
        id: case.id.to_string(),
        name: case.name.clone(),
        description: case.description.clone(),
        status: match case.status {
            CaseStatus::Open => pb::CaseStatus::Open,
            CaseStatus::Closed => pb::CaseStatus::Closed,
        } as i32,
        members: case.members.iter().cloned().collect(),
        custodians: case.custodians.iter().map(|m| m.to_string()).collect(),
        created_at: Some(convert::time_to_timestamp(case.created_at)),
        created_by: case.created_by.clone(),
        closed_at: case.closed_at.map(convert::time_to_timestamp),
    }
}

fn search_page_to_proto(page: SearchPage) -> pb::SearchResponse {
    let hits = page
        .hits
        .into_iter()
        .map(|hit| pb::SearchHit {
            id: hit.id.to_string(),
            mailbox_id: hit.mailbox_id.to_string(),
            thread_id: hit.thread_id,
            app: hit.app,
            created_at: Some(convert::time_to_timestamp(hit.created_at)),
            location: match hit.location {
                HitLocation::Active => pb::Location::Active,
                HitLocation::HoldsArea => pb::Location::HoldsArea,
            } as i32,
            score: hit.score,
            snippets: hit
                .snippets
                .into_iter()
                .map(|snippet| pb::Snippet {
                    field: snippet.field.into(),
                    text: snippet.text,
                    highlights: snippet
                        .highlights
                        .into_iter()
                        .map(|(start, end)| pb::Highlight {
                            start: start as u32,
                            end: end as u32,
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    pb::SearchResponse {
        hits,
        total: page.total,
        counts_by_mailbox: page.counts_by_mailbox.into_iter().collect(),
        counts_by_app: page.counts_by_app.into_iter().collect(),
        counts_by_location: page.counts_by_location.into_iter().collect(),
        next_page_token: page.next_page_token,
    }
}

fn hold_view_to_proto(view: &HoldView) -> pb::HoldInfo {
    let mut info = hold_to_proto(&view.record);
    info.items_held = view.items_held;
    info
}

fn purge_report_to_proto(report: PurgeReport) -> pb::PurgeResponse {
    pb::PurgeResponse {
        dry_run: report.dry_run,
        max_per_mailbox: report.max_per_mailbox,
        ids: report.ids.iter().map(ToString::to_string).collect(),
        mailboxes: report
            .mailboxes
            .into_iter()
            .map(|mailbox| pb::PurgeMailboxResult {
                mailbox_id: mailbox.mailbox_id.to_string(),
                matched: mailbox.matched,
                selected: mailbox.selected,
                moved: mailbox.moved,
                capped: mailbox.capped,
            })
            .collect(),
    }
}

fn sort_from_proto(value: i32) -> Result<Sort, Error> {
    match pb::SearchSort::try_from(value) {
        Ok(pb::SearchSort::Unspecified | pb::SearchSort::Relevance) => Ok(Sort::Relevance),
        Ok(pb::SearchSort::Newest) => Ok(Sort::Newest),
        Ok(pb::SearchSort::Oldest) => Ok(Sort::Oldest),
        Err(_) => Err(Error::invalid("sort", "unknown sort order")),
    }
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportMessage, Status>> + Send>>;

#[tonic::async_trait]
impl DiscoveryService for DiscoveryApi {
    async fn create_case(
        &self,
        request: Request<pb::CreateCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let principal = authenticate(&self.app, &request, "CreateCase")?;
        let request = request.into_inner();
        let new = NewCase {
            name: request.name,
            description: request.description,
            members: request.members,
            custodians: request.custodians,
        };
        let case = self.app.create_case(&principal, new).await?;
        Ok(Response::new(case_to_proto(&case)))
    }

    async fn get_case(
        &self,
        request: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let principal = authenticate(&self.app, &request, "GetCase")?;
        let case = self
            .app
            .get_case(&principal, &request.get_ref().case_id)
            .await?;
        Ok(Response::new(case_to_proto(&case)))
    }

    async fn list_cases(
        &self,
        request: Request<pb::ListCasesRequest>,
    ) -> Result<Response<pb::ListCasesResponse>, Status> {
        let principal = authenticate(&self.app, &request, "ListCases")?;
        let cases = self.app.list_cases(&principal).await?;
        Ok(Response::new(pb::ListCasesResponse {
            cases: cases.iter().map(case_to_proto).collect(),
        }))
    }

    async fn update_case(
        &self,
        request: Request<pb::UpdateCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let principal = authenticate(&self.app, &request, "UpdateCase")?;
        let request = request.into_inner();
        let change = CaseChange {
            name: request.name,
            description: request.description,
            add_members: request.add_members,
            remove_members: request.remove_members,
            add_custodians: request.add_custodians,
            remove_custodians: request.remove_custodians,
        };
        let case = self
            .app
            .update_case(&principal, &request.case_id, change)
            .await?;
        Ok(Response::new(case_to_proto(&case)))
    }

    async fn close_case(
        &self,
        request: Request<pb::CloseCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let principal = authenticate(&self.app, &request, "CloseCase")?;
        let case = self
            .app
            .close_case(&principal, &request.get_ref().case_id)
            .await?;
        Ok(Response::new(case_to_proto(&case)))
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let principal = authenticate(&self.app, &request, "Search")?;
        let request = request.into_inner();
        let search = SearchRequest {
            case_id: request.case_id,
            query: request.query,
            mailboxes: request.mailboxes,
            sort: decoded(
                &self.app,
                &principal,
                "Search",
                EDISCOVERY,
                sort_from_proto(request.sort),
            )
            .await?,
            page_size: request.page_size,
            page_token: request.page_token,
        };
        let page = self.app.search(&principal, search).await?;
        Ok(Response::new(search_page_to_proto(page)))
    }

    type ExportStream = ExportStream;

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let principal = authenticate(&self.app, &request, "Export")?;
        let request = request.into_inner();
        let export = ExportRequest {
            case_id: request.case_id,
            query: request.query,
            mailboxes: request.mailboxes,
            after_id: request.after_id,
        };
        let export = self.app.export(&principal, export).await?;
        let messages = export.messages.map(|message| {
            let message = match message? {
                ExportMessage::Item(item) => {
                    pb::export_message::Message::Interaction(convert::interaction_to_proto(*item))
                }
                ExportMessage::Trailer { count, digest } => {
                    pb::export_message::Message::Trailer(pb::ExportTrailer { count, digest })
                }
            };
            Ok(pb::ExportMessage {
                message: Some(message),
            })
        });
        Ok(Response::new(Box::pin(messages)))
    }

    async fn place_case_hold(
        &self,
        request: Request<pb::PlaceCaseHoldRequest>,
    ) -> Result<Response<pb::HoldInfo>, Status> {
        let principal = authenticate(&self.app, &request, "PlaceCaseHold")?;
        let request = request.into_inner();
        let new = NewCaseHold {
            case_id: request.case_id,
            name: request.name,
            custodians: request.custodians,
            query: request.query,
            created_from: decoded(
                &self.app,
                &principal,
                "PlaceCaseHold",
                EDISCOVERY,
                convert::optional_time("created_from", request.created_from.as_ref()),
            )
            .await?,
            created_to: decoded(
                &self.app,
                &principal,
                "PlaceCaseHold",
                EDISCOVERY,
                convert::optional_time("created_to", request.created_to.as_ref()),
            )
            .await?,
        };
        let view = self.app.place_case_hold(&principal, new).await?;
        Ok(Response::new(hold_view_to_proto(&view)))
    }

    async fn list_case_holds(
        &self,
        request: Request<pb::ListCaseHoldsRequest>,
    ) -> Result<Response<pb::ListHoldsResponse>, Status> {
        let principal = authenticate(&self.app, &request, "ListCaseHolds")?;
        let request = request.into_inner();
        let holds = self
            .app
            .list_case_holds(&principal, &request.case_id, request.include_released)
            .await?;
        Ok(Response::new(pb::ListHoldsResponse {
            holds: holds.iter().map(hold_view_to_proto).collect(),
        }))
    }

    async fn release_case_hold(
        &self,
        request: Request<pb::ReleaseCaseHoldRequest>,
    ) -> Result<Response<pb::HoldInfo>, Status> {
        let principal = authenticate(&self.app, &request, "ReleaseCaseHold")?;
        let request = request.into_inner();
        let record = self
            .app
            .release_case_hold(&principal, &request.case_id, &request.hold_id)
            .await?;
        Ok(Response::new(hold_to_proto(&record)))
    }

    async fn purge(
        &self,
        request: Request<pb::PurgeRequest>,
    ) -> Result<Response<pb::PurgeResponse>, Status> {
        let principal = authenticate(&self.app, &request, "Purge")?;
        let request = request.into_inner();
        let purge = PurgeRequest {
            case_id: request.case_id,
            query: request.query,
            mailboxes: request.mailboxes,
            dry_run: request.dry_run,
        };
        let report = self.app.purge(&principal, purge).await?;
        Ok(Response::new(purge_report_to_proto(report)))
    }
}
