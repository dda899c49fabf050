//! `DiscoveryService`: eDiscovery cases, KQL search and export (SPEC §5, §6).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use holdfast_proto::v1 as pb;
use holdfast_proto::v1::discovery_service_server::DiscoveryService;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use ulid::Ulid;

use super::{blocking, now, Shared};
use crate::auth::{Principal, Role};
use crate::cases::{self, CaseRecord, CaseStatus};
use crate::convert;
use crate::domain::{InteractionId, MailboxId};
use crate::error::Error;
use crate::search::kql::{self, TextField};
use crate::search::query::{Highlighter, QueryError};
use crate::search::searcher::{self, Sort};

const ROLES: &[Role] = &[Role::Ediscovery, Role::EdiscoveryAdmin];
/// Items an export reads from the store at once.
const EXPORT_CHUNK: usize = 256;

pub struct DiscoveryApi {
    shared: Arc<Shared>,
}

impl DiscoveryApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        DiscoveryApi { shared }
    }

    async fn load_case(&self, principal: &Principal, case_id: &str) -> Result<CaseRecord, Error> {
        let id = Ulid::from_string(case_id)
            .map_err(|_| Error::invalid("case_id", "not a case id (26-character ULID)"))?;
        let store = Arc::clone(&self.shared.store);
        let case = blocking(move || Ok(store.get_case(id)?))
            .await?
            .ok_or_else(|| Error::NotFound(format!("no case with id {id}")))?;
        if !case.is_accessible_by(principal) {
            return Err(Error::PermissionDenied(format!(
                "{} is not a member of case {id}",
                principal.name
            )));
        }
        Ok(case)
    }

    async fn save_case(&self, case: CaseRecord) -> Result<CaseRecord, Error> {
        let store = Arc::clone(&self.shared.store);
        blocking(move || {
            store.put_case(&case)?;
            Ok(case)
        })
        .await
    }
}

fn case_to_proto(case: &CaseRecord) -> pb::Case {
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

fn parse_query(text: &str) -> Result<kql::Query, Error> {
    kql::parse(text).map_err(|error| Error::invalid("query", error.to_string()))
}

fn query_error(error: QueryError) -> Error {
    match error {
        QueryError::TooManyTerms { .. } => Error::invalid("query", error.to_string()),
        QueryError::Index(reason) => Error::Internal(reason),
    }
}

/// Where a page of results starts: the pinned snapshot, the offset, and a fingerprint of the
/// search so that a token is not reused for another one.
struct PageToken {
    snapshot: u64,
    offset: u64,
    fingerprint: u64,
}

impl PageToken {
    fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(24);
        for part in [self.snapshot, self.offset, self.fingerprint] {
            bytes.extend_from_slice(&part.to_be_bytes());
        }
        hex::encode(bytes)
    }

    fn decode(token: &str) -> Result<PageToken, Error> {
        let bad = || Error::invalid("page_token", "not a page token from this server");
        let bytes = hex::decode(token).map_err(|_| bad())?;
        if bytes.len() != 24 {
            return Err(bad());
        }
        let part = |i: usize| u64::from_be_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8"));
        Ok(PageToken {
            snapshot: part(0),
            offset: part(1),
            fingerprint: part(2),
        })
    }
}

fn fingerprint(case_id: &str, query: &str, mailboxes: &[MailboxId], sort: Sort) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(case_id.as_bytes());
    hasher.update([0]);
    hasher.update(query.as_bytes());
    for mailbox in mailboxes {
        hasher.update([0]);
        hasher.update(mailbox.as_str().as_bytes());
    }
    hasher.update(format!("{sort:?}").as_bytes());
    u64::from_be_bytes(hasher.finalize()[..8].try_into().expect("8 bytes"))
}

fn snippets(highlighter: &Highlighter, prompt: &str, response: &str) -> Vec<pb::Snippet> {
    [
        ("prompt", TextField::Prompt, prompt),
        ("response", TextField::Response, response),
    ]
    .into_iter()
    .filter_map(|(name, field, text)| {
        highlighter
            .snippet(field, text)
            .map(|(text, ranges)| pb::Snippet {
                field: name.into(),
                text,
                highlights: ranges
                    .into_iter()
                    .map(|(start, end)| pb::Highlight {
                        start: start as u32,
                        end: end as u32,
                    })
                    .collect(),
            })
    })
    .collect()
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportMessage, Status>> + Send>>;

#[tonic::async_trait]
impl DiscoveryService for DiscoveryApi {
    async fn create_case(
        &self,
        request: Request<pb::CreateCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let principal = self.shared.authorize(&request, "CreateCase", ROLES).await?;
        let request = request.into_inner();
        cases::validate_name(&request.name)?;
        cases::validate_description(&request.description)?;
        let mut members = cases::parse_members("members", &request.members)?;
        members.insert(principal.name.clone());
        let custodians = cases::parse_custodians("custodians", &request.custodians)?;
        let store = Arc::clone(&self.shared.store);
        let name = request.name.clone();
        let taken = blocking(move || {
            Ok(store
                .list_cases()?
                .iter()
                .any(|case| case.name.eq_ignore_ascii_case(&name)))
        })
        .await?;
        if taken {
            return Err(
                Error::AlreadyExists(format!("a case named {:?} exists", request.name)).into(),
            );
        }
        let case = CaseRecord {
            id: Ulid::new(),
            name: request.name,
            description: request.description,
            status: CaseStatus::Open,
            members,
            custodians,
            created_at: now(),
            created_by: principal.name.clone(),
            closed_at: None,
        };
        let case = self.save_case(case).await?;
        self.shared
            .audit_done(
                &principal,
                "CreateCase",
                case.id.to_string(),
                json!({ "name": case.name, "members": case.members, "custodians": case.custodians }),
                "ok".into(),
            )
            .await?;
        Ok(Response::new(case_to_proto(&case)))
    }

    async fn get_case(
        &self,
        request: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let principal = self.shared.authorize(&request, "GetCase", ROLES).await?;
        let case = self
            .load_case(&principal, &request.get_ref().case_id)
            .await?;
        Ok(Response::new(case_to_proto(&case)))
    }

    async fn list_cases(
        &self,
        request: Request<pb::ListCasesRequest>,
    ) -> Result<Response<pb::ListCasesResponse>, Status> {
        let principal = self.shared.authorize(&request, "ListCases", ROLES).await?;
        let store = Arc::clone(&self.shared.store);
        let all = blocking(move || Ok(store.list_cases()?)).await?;
        let cases = all
            .iter()
            .filter(|case| case.is_accessible_by(&principal))
            .map(case_to_proto)
            .collect();
        Ok(Response::new(pb::ListCasesResponse { cases }))
    }

    async fn update_case(
        &self,
        request: Request<pb::UpdateCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let principal = self.shared.authorize(&request, "UpdateCase", ROLES).await?;
        let request = request.into_inner();
        let mut case = self.load_case(&principal, &request.case_id).await?;
        case.require_open()?;
        if !request.name.is_empty() {
            cases::validate_name(&request.name)?;
            case.name = request.name.clone();
        }
        if !request.description.is_empty() {
            cases::validate_description(&request.description)?;
            case.description = request.description.clone();
        }
        let add_members = cases::parse_members("add_members", &request.add_members)?;
        let remove_members = cases::parse_members("remove_members", &request.remove_members)?;
        let add_custodians = cases::parse_custodians("add_custodians", &request.add_custodians)?;
        let remove_custodians =
            cases::parse_custodians("remove_custodians", &request.remove_custodians)?;
        case.members.extend(add_members.iter().cloned());
        case.members.retain(|m| !remove_members.contains(m));
        case.custodians.extend(add_custodians.iter().cloned());
        case.custodians.retain(|m| !remove_custodians.contains(m));
        if case.members.len() > cases::MAX_CASE_LIST || case.custodians.len() > cases::MAX_CASE_LIST
        {
            return Err(Error::invalid("case", "too many members or custodians").into());
        }
        let case = self.save_case(case).await?;
        self.shared
            .audit_done(
                &principal,
                "UpdateCase",
                case.id.to_string(),
                json!({
                    "name": request.name,
                    "add_members": add_members,
                    "remove_members": remove_members,
                    "add_custodians": add_custodians,
                    "remove_custodians": remove_custodians,
                }),
                "ok".into(),
            )
            .await?;
        Ok(Response::new(case_to_proto(&case)))
    }

    async fn close_case(
        &self,
        request: Request<pb::CloseCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let principal = self.shared.authorize(&request, "CloseCase", ROLES).await?;
        let mut case = self
            .load_case(&principal, &request.get_ref().case_id)
            .await?;
        case.require_open()?;
        case.status = CaseStatus::Closed;
        case.closed_at = Some(now());
        let case = self.save_case(case).await?;
        self.shared
            .audit_done(
                &principal,
                "CloseCase",
                case.id.to_string(),
                json!({}),
                "ok".into(),
            )
            .await?;
        Ok(Response::new(case_to_proto(&case)))
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let principal = self.shared.authorize(&request, "Search", ROLES).await?;
        let request = request.into_inner();
        let case = self.load_case(&principal, &request.case_id).await?;
        case.require_open()?;
        let query = parse_query(&request.query)?;
        let mailboxes = case.search_scope(&request.mailboxes)?;
        let sort = match pb::SearchSort::try_from(request.sort) {
            Ok(pb::SearchSort::Unspecified | pb::SearchSort::Relevance) => Sort::Relevance,
            Ok(pb::SearchSort::Newest) => Sort::Newest,
            Ok(pb::SearchSort::Oldest) => Sort::Oldest,
            Err(_) => return Err(Error::invalid("sort", "unknown sort order").into()),
        };
        let page_size = match request.page_size {
            0 => 50,
            1..=1000 => request.page_size as usize,
            _ => return Err(Error::invalid("page_size", "must be at most 1000").into()),
        };
        let print = fingerprint(&request.case_id, &request.query, &mailboxes, sort);
        let (snapshot, offset) = if request.page_token.is_empty() {
            let searcher = self.shared.index.reader.searcher();
            (self.shared.snapshots.pin(searcher), 0)
        } else {
            let token = PageToken::decode(&request.page_token)?;
            if token.fingerprint != print {
                return Err(Error::invalid(
                    "page_token",
                    "belongs to another search (query, mailboxes and sort must not change)",
                )
                .into());
            }
            (token.snapshot, token.offset as usize)
        };
        let searcher = self.shared.snapshots.get(snapshot).ok_or_else(|| {
            Error::FailedPrecondition("the page token has expired; run the search again".into())
        })?;
        let index = Arc::clone(&self.shared.index);
        let store = Arc::clone(&self.shared.store);
        let highlighter = Highlighter::new(&query);
        let search_query = query.clone();
        let (results, items) = blocking(move || {
            let results = searcher::execute(
                &searcher,
                &index.fields,
                &search_query,
                &mailboxes,
                sort,
                offset,
                page_size,
            )
            .map_err(query_error)?;
            let ids: Vec<InteractionId> = results.hits.iter().map(|hit| hit.id).collect();
            let items = store.get_interactions(&ids)?;
            Ok((results, items))
        })
        .await?;
        let mut hits = Vec::with_capacity(items.len());
        for (hit, item) in results.hits.iter().zip(items) {
            // An item destroyed since the snapshot was taken is simply left out.
            let Some(item) = item else { continue };
            let content = &item.content;
            hits.push(pb::SearchHit {
                id: item.id.to_string(),
                mailbox_id: content.mailbox_id.to_string(),
                thread_id: content.thread_id.clone(),
                app: content.app.clone(),
                created_at: Some(convert::time_to_timestamp(content.created_at)),
                location: if item.location.is_visible_to_user() {
                    pb::Location::Active
                } else {
                    pb::Location::HoldsArea
                } as i32,
                score: hit.score,
                snippets: snippets(&highlighter, &content.prompt, &content.response),
            });
        }
        let next_offset = offset + results.hits.len();
        let next_page_token = if (next_offset as u64) < results.total && !results.hits.is_empty() {
            PageToken {
                snapshot,
                offset: next_offset as u64,
                fingerprint: print,
            }
            .encode()
        } else {
            String::new()
        };
        self.shared
            .audit_done(
                &principal,
                "Search",
                case.id.to_string(),
                json!({
                    "query": request.query,
                    "mailboxes": request.mailboxes,
                    "sort": format!("{sort:?}").to_lowercase(),
                    "offset": offset,
                }),
                format!("ok: {} hits", results.total),
            )
            .await?;
        Ok(Response::new(pb::SearchResponse {
            hits,
            total: results.total,
            counts_by_mailbox: results.by_mailbox.into_iter().collect(),
            counts_by_app: results.by_app.into_iter().collect(),
            counts_by_location: results.by_location.into_iter().collect(),
            next_page_token,
        }))
    }

    type ExportStream = ExportStream;

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let principal = self.shared.authorize(&request, "Export", ROLES).await?;
        let request = request.into_inner();
        let case = self.load_case(&principal, &request.case_id).await?;
        case.require_open()?;
        let query = parse_query(&request.query)?;
        let mailboxes = case.search_scope(&request.mailboxes)?;
        let after: Option<InteractionId> = match request.after_id.as_str() {
            "" => None,
            text => Some(
                text.parse()
                    .map_err(|reason: String| Error::invalid("after_id", reason))?,
            ),
        };
        let index = Arc::clone(&self.shared.index);
        let searcher = index.reader.searcher();
        let ids = blocking(move || {
            searcher::matching_ids(&searcher, &index.fields, &query, &mailboxes)
                .map_err(query_error)
        })
        .await?;
        let ids: Vec<InteractionId> = match after {
            Some(after) => ids.into_iter().filter(|id| *id > after).collect(),
            None => ids,
        };
        self.shared
            .audit_done(
                &principal,
                "Export",
                case.id.to_string(),
                json!({
                    "query": request.query,
                    "mailboxes": request.mailboxes,
                    "after_id": request.after_id,
                }),
                format!("started: {} items", ids.len()),
            )
            .await?;
        // A small channel: the producer waits for the client, so memory stays constant.
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let store = Arc::clone(&self.shared.store);
        tokio::task::spawn_blocking(move || {
            let mut digest = Sha256::new();
            let mut count = 0u64;
            for chunk in ids.chunks(EXPORT_CHUNK) {
                let items = match store.get_interactions(chunk) {
                    Ok(items) => items,
                    Err(error) => {
                        let _ = sender.blocking_send(Err(Status::from(Error::Store(error))));
                        return;
                    }
                };
                // An item destroyed since the search ran is simply not exported.
                for item in items.into_iter().flatten() {
                    digest.update(hex::encode(item.content_sha256).as_bytes());
                    digest.update(b"\n");
                    count += 1;
                    let message = pb::ExportMessage {
                        message: Some(pb::export_message::Message::Interaction(
                            convert::interaction_to_proto(item),
                        )),
                    };
                    if sender.blocking_send(Ok(message)).is_err() {
                        return; // The client went away.
                    }
                }
            }
            let trailer = pb::ExportMessage {
                message: Some(pb::export_message::Message::Trailer(pb::ExportTrailer {
                    count,
                    digest: hex::encode(digest.finalize()),
                })),
            };
            let _ = sender.blocking_send(Ok(trailer));
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}
