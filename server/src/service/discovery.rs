//! `DiscoveryService`: eDiscovery cases, KQL search and export (SPEC §5, §6).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use holdfast_proto::v1 as pb;
use holdfast_proto::v1::discovery_service_server::DiscoveryService;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use ulid::Ulid;

use super::discovery_support::{
    complete_index, hold_query, parse_query, query_error, search_token_context, SearchCursor,
};
use super::{blocking, now, Shared};
use crate::admission::{Admission, Work};
use crate::audit::AuditEvent;
use crate::audit_intent::AuditIntent;
use crate::auth::{Principal, Role, TokenRegistry};
use crate::cases::{self, CaseRecord, CaseStatus};
use crate::convert;
use crate::domain::{InteractionId, MailboxId};
use crate::error::Error;
use crate::page_token::TokenKind;
use crate::retention::{HoldKind, HoldRecord};
use crate::search::id_pages::IdPages;
use crate::search::kql::TextField;
use crate::search::query::{translate, Highlighter};
use crate::search::searcher::{self, Sort};
use crate::store::Store;

const ROLES: &[Role] = &[Role::Ediscovery, Role::EdiscoveryAdmin];
const PURGE: &[Role] = &[Role::Purge];
/// Ids an export or a purge takes from the index at once (16 bytes each).
const ID_PAGE: usize = 16_384;
/// Items an export reads from the store at once (each up to a few MiB). With the queue this
/// bounds an open export's memory to `EXPORT_CHUNK + EXPORT_QUEUE` items, and `open_exports`
/// bounds the number of open exports.
const EXPORT_CHUNK: usize = 16;
/// Messages queued between an export's producer and its client.
const EXPORT_QUEUE: usize = 4;

pub struct DiscoveryApi {
    shared: Arc<Shared>,
    /// Held across every read-modify-write of a case and across placing a case hold, so that
    /// a racing UpdateCase cannot reopen a closed case and CloseCase cannot miss a hold being
    /// placed (cases change rarely: one lock for all of them costs nothing).
    cases_lock: tokio::sync::Mutex<()>,
}

impl DiscoveryApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        DiscoveryApi {
            shared,
            cases_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// `load_case` for calls that do not audit their outcome: a principal who is not a member
    /// is refused and the refusal is audited (SPEC §7).
    async fn member_case(
        &self,
        principal: &Principal,
        action: &'static str,
        case_id: &str,
    ) -> Result<CaseRecord, Error> {
        let loaded = self.load_case(principal, case_id).await;
        if let Err(error @ Error::PermissionDenied(_)) = &loaded {
            tracing::info!(actor = %principal.name, action, %error, "refused call");
            metrics::counter!("holdfast_refused_calls_total", "action" => action).increment(1);
            if let Err(audit_error) = self
                .shared
                .audit_done(
                    principal,
                    action,
                    case_id.to_string(),
                    json!({}),
                    format!("denied: {error}"),
                )
                .await
            {
                tracing::warn!(action, error = %audit_error.message(), "a refusal could not be audited");
            }
        }
        loaded
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

    async fn case_holds(
        &self,
        case_id: Ulid,
        include_released: bool,
    ) -> Result<Vec<HoldRecord>, Error> {
        let store = Arc::clone(&self.shared.store);
        let at = now();
        let holds = blocking(move || Ok(store.list_holds()?)).await?;
        Ok(holds
            .into_iter()
            .filter(|h| matches!(&h.kind, HoldKind::Case { case_id: c, .. } if *c == case_id))
            .filter(|h| include_released || h.is_active(at))
            .collect())
    }

    /// How many stored items a case hold covers now, by the search index.
    async fn items_held(&self, hold: &HoldRecord) -> Result<u64, Error> {
        let HoldKind::Case {
            query,
            created_from,
            created_to,
            ..
        } = &hold.kind
        else {
            return Ok(0);
        };
        let query = hold_query(query, *created_from, *created_to)?;
        let mailboxes: Vec<MailboxId> = hold.mailboxes.iter().cloned().collect();
        let index = complete_index(&self.shared.index)?;
        blocking(move || {
            let searcher = index.reader.searcher();
            searcher::count_matching(&searcher, &index.fields, &query, &mailboxes)
                .map_err(query_error)
        })
        .await
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

/// Produces one export from async code: a page of ids from the index, then the items in small
/// chunks, each read on a short blocking call. It never holds a thread while it waits for the
/// client, and gives up when the client reads nothing for `idle_timeout`.
struct ExportProducer {
    pages: Arc<IdPages>,
    store: Arc<dyn Store>,
    admission: Arc<Admission>,
    sender: tokio::sync::mpsc::Sender<Result<pb::ExportMessage, Status>>,
    idle_timeout: Duration,
    shutdown: CancellationToken,
    /// The caller's token, checked again before each chunk: a revoked token (or one that
    /// lost its eDiscovery role) stops exporting at once, not when the stream ends.
    tokens: Arc<TokenRegistry>,
    token_sha256: [u8; 32],
    /// The case exported and the caller: before each chunk the case is read again, so that a
    /// caller removed from the case, or a case closed meanwhile, stops the export.
    case_id: Ulid,
    principal: Principal,
}

impl ExportProducer {
    /// Streams every item after `after`, then the trailer. `Err(None)`: the client went away;
    /// `Err(Some(status))`: the export ended early and the client is told why.
    async fn run(self, mut after: Option<InteractionId>) -> Result<(), Option<Status>> {
        let mut digest = Sha256::new();
        let mut count = 0u64;
        loop {
            let pages = Arc::clone(&self.pages);
            let ids = self
                .admission
                .export_read(move || pages.page(after, ID_PAGE).map_err(query_error))
                .await
                .map_err(|error| Some(Status::from(error)))?;
            let Some(&last) = ids.last() else { break };
            after = Some(last);
            for chunk in ids.chunks(EXPORT_CHUNK) {
                if !self.tokens.is_current(&self.token_sha256, ROLES) {
                    return Err(Some(Status::permission_denied(
                        "the token of this export was revoked or lost its ediscovery role",
                    )));
                }
                let chunk = chunk.to_vec();
                let store = Arc::clone(&self.store);
                let (case_id, principal) = (self.case_id, self.principal.clone());
                let items = self
                    .admission
                    .export_read(move || {
                        let case = store
                            .get_case(case_id)?
                            .ok_or_else(|| Error::NotFound(format!("no case with id {case_id}")))?;
                        if !case.is_accessible_by(&principal) {
                            return Err(Error::PermissionDenied(format!(
                                "{} is no longer a member of case {case_id}",
                                principal.name
                            )));
                        }
                        case.require_open()?;
                        Ok(store.get_interactions(&chunk)?)
                    })
                    .await
                    .map_err(|error| Some(Status::from(error)))?;
                // An item destroyed since the search ran is simply not exported.
                for item in items.into_iter().flatten() {
                    digest.update(hex::encode(item.content_sha256).as_bytes());
                    digest.update(b"\n");
                    count += 1;
                    self.deliver(pb::ExportMessage {
                        message: Some(pb::export_message::Message::Interaction(
                            convert::interaction_to_proto(item),
                        )),
                    })
                    .await?;
                }
            }
            if ids.len() < ID_PAGE {
                break;
            }
        }
        self.deliver(pb::ExportMessage {
            message: Some(pb::export_message::Message::Trailer(pb::ExportTrailer {
                count,
                digest: hex::encode(digest.finalize()),
            })),
        })
        .await
    }

    async fn deliver(&self, message: pb::ExportMessage) -> Result<(), Option<Status>> {
        tokio::select! {
            sent = tokio::time::timeout(self.idle_timeout, self.sender.send(Ok(message))) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(None), // The client went away.
                Err(_) => {
                    metrics::counter!("holdfast_export_idle_timeouts_total").increment(1);
                    tracing::info!(
                        idle_seconds = self.idle_timeout.as_secs(),
                        "export stream ended: the client read nothing"
                    );
                    Err(Some(Status::deadline_exceeded(format!(
                        "the export was ended after {} s without the client reading; resume \
                         it with after_id",
                        self.idle_timeout.as_secs()
                    ))))
                }
            },
            _ = self.shutdown.cancelled() => Err(Some(Status::unavailable(
                "the server is shutting down; resume the export with after_id",
            ))),
        }
    }
}

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
        // Two creations with one name cannot both pass the check.
        let _cases = self.cases_lock.lock().await;
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
            .member_case(&principal, "GetCase", &request.get_ref().case_id)
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
        let add_members = cases::parse_members("add_members", &request.add_members);
        let remove_members = cases::parse_members("remove_members", &request.remove_members);
        let add_custodians = cases::parse_custodians("add_custodians", &request.add_custodians);
        let remove_custodians =
            cases::parse_custodians("remove_custodians", &request.remove_custodians);
        let parameters = json!({
            "name": request.name,
            "add_members": add_members.as_ref().ok(),
            "remove_members": remove_members.as_ref().ok(),
            "add_custodians": add_custodians.as_ref().ok(),
            "remove_custodians": remove_custodians.as_ref().ok(),
        });
        let outcome = async {
            // Read, change and write under the cases lock: a racing CloseCase cannot be undone.
            let _cases = self.cases_lock.lock().await;
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
            let (add_members, remove_members) = (add_members?, remove_members?);
            let (add_custodians, remove_custodians) = (add_custodians?, remove_custodians?);
            case.members.extend(add_members);
            case.members.retain(|m| !remove_members.contains(m));
            case.custodians.extend(add_custodians);
            case.custodians.retain(|m| !remove_custodians.contains(m));
            if case.members.len() > cases::MAX_CASE_LIST
                || case.custodians.len() > cases::MAX_CASE_LIST
            {
                return Err(Error::invalid("case", "too many members or custodians"));
            }
            self.save_case(case).await
        }
        .await;
        let case = self
            .shared
            .audited(
                &principal,
                "UpdateCase",
                request.case_id.clone(),
                parameters,
                outcome,
            )
            .await?;
        Ok(Response::new(case_to_proto(&case)))
    }

    async fn close_case(
        &self,
        request: Request<pb::CloseCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let principal = self.shared.authorize(&request, "CloseCase", ROLES).await?;
        let case_id = request.get_ref().case_id.clone();
        let outcome = async {
            // Under the cases lock: no hold can be placed between the check and the save.
            let _cases = self.cases_lock.lock().await;
            let mut case = self.load_case(&principal, &case_id).await?;
            case.require_open()?;
            let case_id = case.id;
            let holds = self.case_holds(case_id, false).await?;
            if !holds.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "case {case_id} has {} active hold(s); release them before closing it",
                    holds.len()
                )));
            }
            case.status = CaseStatus::Closed;
            case.closed_at = Some(now());
            self.save_case(case).await
        }
        .await;
        let case = self
            .shared
            .audited(&principal, "CloseCase", case_id, json!({}), outcome)
            .await?;
        Ok(Response::new(case_to_proto(&case)))
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let principal = self.shared.authorize(&request, "Search", ROLES).await?;
        let request = request.into_inner();
        let case = self
            .member_case(&principal, "Search", &request.case_id)
            .await?;
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
        let token_context =
            search_token_context(&request.case_id, &request.query, &mailboxes, sort);
        let index = complete_index(&self.shared.index)?;
        // The first page runs on the newest snapshot, pinned below only if there is a next
        // page; later pages on the snapshot their token names.
        let (pinned, offset, searcher) = if request.page_token.is_empty() {
            (None, 0, index.reader.searcher())
        } else {
            let payload = self.shared.page_tokens.open(
                TokenKind::Search,
                token_context,
                &request.page_token,
                now(),
            )?;
            let cursor = SearchCursor::from_payload(&payload)?;
            let searcher = self.shared.snapshots.get(cursor.snapshot).ok_or_else(|| {
                Error::FailedPrecondition(
                    "the page token's snapshot has expired; run the search again".into(),
                )
            })?;
            // Bounded before tantivy sees it: never past this search's total on the snapshot.
            if cursor.total > searcher.num_docs() {
                return Err(
                    Error::invalid("page_token", "starts past the end of its results").into(),
                );
            }
            (Some(cursor.snapshot), cursor.offset as usize, searcher)
        };
        let snapshot_searcher = searcher.clone();
        let store = Arc::clone(&self.shared.store);
        let highlighter = Highlighter::new(&query);
        let search_query = query.clone();
        let slot = self.shared.admission.admit(Work::Search, &principal.name)?;
        let (results, items) = self
            .shared
            .admission
            .search(slot, move || {
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
            let snapshot = pinned.unwrap_or_else(|| {
                self.shared
                    .snapshots
                    .pin(&principal.name, snapshot_searcher)
            });
            let cursor = SearchCursor {
                snapshot,
                offset: next_offset as u64,
                total: results.total,
            };
            self.shared
                .page_tokens
                .seal(TokenKind::Search, token_context, &cursor.payload(), now())
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
        let case = self
            .member_case(&principal, "Export", &request.case_id)
            .await?;
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
        complete_index(&self.shared.index)?;
        // The principal's place is taken before anything is read, and kept until the
        // producer ends (trailer sent, client gone, idle timeout or shutdown).
        let slot = self.shared.admission.admit(Work::Export, &principal.name)?;
        let searcher = self.shared.index.reader.searcher();
        let fields = self.shared.index.fields;
        let (pages, total) = self
            .shared
            .admission
            .export_read(move || {
                let pages =
                    IdPages::new(searcher, &fields, &query, &mailboxes).map_err(query_error)?;
                let total = pages.count(after).map_err(query_error)?;
                Ok((pages, total))
            })
            .await?;
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
                format!("started: {total} items"),
            )
            .await?;
        // A small queue: the producer waits for the client (never longer than the idle
        // timeout), so memory per export stays bounded and no thread waits on a client.
        let (sender, receiver) = tokio::sync::mpsc::channel(EXPORT_QUEUE);
        let (end_sender, end) = tokio::sync::oneshot::channel::<Status>();
        let producer = ExportProducer {
            pages: Arc::new(pages),
            store: Arc::clone(&self.shared.store),
            admission: Arc::clone(&self.shared.admission),
            sender,
            idle_timeout: Duration::from_secs(self.shared.concurrency.export_idle_timeout_seconds),
            shutdown: self.shared.shutdown.clone(),
            tokens: Arc::clone(&self.shared.tokens),
            token_sha256: principal.token_sha256,
            case_id: case.id,
            principal: principal.clone(),
        };
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(Some(status)) = producer.run(after).await {
                let _ = end_sender.send(status);
            }
        });
        // After the queued messages, a producer that ended early adds its error.
        let ending =
            futures::stream::once(end).filter_map(|ended| async move { ended.ok().map(Err) });
        Ok(Response::new(Box::pin(
            ReceiverStream::new(receiver).chain(ending),
        )))
    }

    async fn place_case_hold(
        &self,
        request: Request<pb::PlaceCaseHoldRequest>,
    ) -> Result<Response<pb::HoldInfo>, Status> {
        let principal = self
            .shared
            .authorize(&request, "PlaceCaseHold", ROLES)
            .await?;
        let request = request.into_inner();
        let parameters = json!({ "name": request.name, "custodians": request.custodians,
            "query": request.query, "created_from": request.created_from.map(|t| t.seconds),
            "created_to": request.created_to.map(|t| t.seconds) });
        let intent = AuditIntent::new(
            &principal.name,
            "PlaceCaseHold",
            &request.case_id,
            &parameters,
        );
        let outcome = async {
            // Under the cases lock: CloseCase cannot close the case while this hold is placed.
            let _cases = self.cases_lock.lock().await;
            let case = self.load_case(&principal, &request.case_id).await?;
            case.require_open()?;
            cases::validate_name(&request.name)?;
            let custodians = case.search_scope(&request.custodians)?;
            let created_from = request
                .created_from
                .map(|t| convert::timestamp_to_time("created_from", &t))
                .transpose()?;
            let created_to = request
                .created_to
                .map(|t| convert::timestamp_to_time("created_to", &t))
                .transpose()?;
            if let (Some(from), Some(to)) = (created_from, created_to) {
                if from >= to {
                    return Err(Error::invalid("created_to", "must be after created_from"));
                }
            }
            // The hold's query must translate against the index now (prefixes within their
            // limits), or it is not saved: a hold that cannot be evaluated protects nothing
            // predictable.
            let matched = hold_query(&request.query, created_from, created_to)?;
            let index = complete_index(&self.shared.index)?;
            blocking(move || {
                let searcher = index.reader.searcher();
                translate(&matched, &index.fields, &searcher).map_err(query_error)?;
                Ok(())
            })
            .await?;
            let record = HoldRecord {
                id: Ulid::new(),
                mailboxes: custodians.into_iter().collect(),
                kind: HoldKind::Case {
                    case_id: case.id,
                    name: request.name.clone(),
                    query: request.query.clone(),
                    created_from,
                    created_to,
                },
                created_at: now(),
                created_by: principal.name.clone(),
                released_at: None,
                released_by: None,
            };
            super::retention::save_hold(&self.shared, record, Some(intent.clone())).await
        }
        .await;
        let record = self
            .shared
            .audited_intent(&principal, "PlaceCaseHold", intent, outcome)
            .await?;
        let mut info = super::retention::hold_to_proto(&record);
        info.items_held = self.items_held(&record).await?;
        Ok(Response::new(info))
    }

    async fn list_case_holds(
        &self,
        request: Request<pb::ListCaseHoldsRequest>,
    ) -> Result<Response<pb::ListHoldsResponse>, Status> {
        let principal = self
            .shared
            .authorize(&request, "ListCaseHolds", ROLES)
            .await?;
        let request = request.into_inner();
        let case = self
            .member_case(&principal, "ListCaseHolds", &request.case_id)
            .await?;
        let mut holds = Vec::new();
        for record in self.case_holds(case.id, request.include_released).await? {
            let mut info = super::retention::hold_to_proto(&record);
            if record.released_at.is_none() {
                info.items_held = self.items_held(&record).await?;
            }
            holds.push(info);
        }
        Ok(Response::new(pb::ListHoldsResponse { holds }))
    }

    async fn release_case_hold(
        &self,
        request: Request<pb::ReleaseCaseHoldRequest>,
    ) -> Result<Response<pb::HoldInfo>, Status> {
        let principal = self
            .shared
            .authorize(&request, "ReleaseCaseHold", ROLES)
            .await?;
        let request = request.into_inner();
        let intent = AuditIntent::new(
            &principal.name,
            "ReleaseCaseHold",
            &request.hold_id,
            &json!({ "case_id": request.case_id,
                     "delay_hold_days": self.shared.retention.delay_hold_days }),
        );
        let outcome = async {
            let case = self.load_case(&principal, &request.case_id).await?;
            let wanted = Ulid::from_string(&request.hold_id)
                .map_err(|_| Error::invalid("hold_id", "not a hold id (26-character ULID)"))?;
            let hold = self
                .case_holds(case.id, true)
                .await?
                .into_iter()
                .find(|h| h.id == wanted)
                .ok_or_else(|| Error::NotFound(format!("case {} has no hold {wanted}", case.id)))?;
            super::retention::release_with_delay_audited(
                &self.shared,
                hold,
                &principal,
                Some(intent.clone()),
            )
            .await
        }
        .await;
        let record = self
            .shared
            .audited_intent(&principal, "ReleaseCaseHold", intent, outcome)
            .await?;
        Ok(Response::new(super::retention::hold_to_proto(&record)))
    }

    async fn purge(
        &self,
        request: Request<pb::PurgeRequest>,
    ) -> Result<Response<pb::PurgeResponse>, Status> {
        let principal = self.shared.authorize(&request, "Purge", PURGE).await?;
        let request = request.into_inner();
        let cap = self.shared.retention.purge_max_per_mailbox as usize;
        let dry_run = request.dry_run;
        let parameters_of = {
            let (query_text, mailbox_list) = (request.query.clone(), request.mailboxes.clone());
            move |ids: Vec<String>| {
                json!({ "query": query_text, "mailboxes": mailbox_list,
                        "dry_run": dry_run, "max_per_mailbox": cap, "ids": ids })
            }
        };
        let admitted = async {
            let case = self.load_case(&principal, &request.case_id).await?;
            case.require_open()?;
            if request.query.trim().is_empty() {
                return Err(Error::invalid(
                    "query",
                    "a purge needs a query (it never selects every item)",
                ));
            }
            let query = parse_query(&request.query)?;
            let mailboxes = case.search_scope(&request.mailboxes)?;
            complete_index(&self.shared.index)?;
            let slot = self
                .shared
                .admission
                .admit(Work::LongOperation, &principal.name)?;
            Ok((query, mailboxes, slot))
        }
        .await;
        let (query, mailboxes, slot) = match admitted {
            Ok(admitted) => admitted,
            Err(error) => {
                self.shared
                    .audit_done(
                        &principal,
                        "Purge",
                        request.case_id.clone(),
                        parameters_of(Vec::new()),
                        format!("refused: {error}"),
                    )
                    .await?;
                return Err(error.into());
            }
        };
        let searcher = self.shared.index.reader.searcher();
        let fields = self.shared.index.fields;
        let store = Arc::clone(&self.shared.store);
        let audit = Arc::clone(&self.shared.audit);
        let actor = principal.name.clone();
        let target = request.case_id.clone();
        let intent = AuditIntent::new(&actor, "Purge", &target, &parameters_of(Vec::new()));
        // The purge and its audit entry run in one closure on a blocking thread: a caller
        // that goes away (deadline, reset stream) cannot leave a purge unaudited. The entry
        // owed is saved first, so a crash during the purge is audited at the next start.
        let outcome = self
            .shared
            .admission
            .long_operation(slot, move || {
                let intent = intent.save_before(store.as_ref())?;
                let outcome = crate::workers::catch_panic("Purge", || {
                    let pages =
                        IdPages::new(searcher, &fields, &query, &mailboxes).map_err(query_error)?;
                    // Only ACTIVE items move; oldest first (ids sort by time), up to the cap. The
                    // matches are walked page by page in id order: memory is bounded by the cap
                    // per mailbox, not by the number of matches.
                    let mut by_mailbox: std::collections::BTreeMap<
                        MailboxId,
                        (u64, Vec<InteractionId>),
                    > = Default::default();
                    let mut after = None;
                    loop {
                        let ids = pages.page(after, ID_PAGE).map_err(query_error)?;
                        let Some(&last) = ids.last() else { break };
                        after = Some(last);
                        for chunk in ids.chunks(10_000) {
                            for item in store.planned_items(chunk)?.into_iter().flatten() {
                                if item.location.is_visible_to_user() {
                                    let (matched, selected) =
                                        by_mailbox.entry(item.facts.mailbox).or_default();
                                    *matched += 1;
                                    if selected.len() < cap {
                                        selected.push(item.id);
                                    }
                                }
                            }
                        }
                        if ids.len() < ID_PAGE {
                            break;
                        }
                    }
                    let mut response = pb::PurgeResponse {
                        dry_run,
                        max_per_mailbox: cap as u32,
                        ..Default::default()
                    };
                    for (mailbox, (matched, selected)) in by_mailbox {
                        let moved = if dry_run {
                            0
                        } else {
                            store
                                .move_ids_to_holds_area(
                                    &selected,
                                    holdfast_retention::MoveReason::PurgeRequested,
                                    now(),
                                )?
                                .len() as u64
                        };
                        response
                            .ids
                            .extend(selected.iter().map(ToString::to_string));
                        response.mailboxes.push(pb::PurgeMailboxResult {
                            mailbox_id: mailbox.to_string(),
                            matched,
                            selected: selected.len() as u64,
                            moved,
                            capped: matched > cap as u64,
                        });
                    }
                    Ok(response)
                });
                let (result, ids) = match &outcome {
                    Ok(response) => (
                        format!(
                            "ok: {} item(s) {}",
                            response.ids.len(),
                            if response.dry_run {
                                "selected (dry run)"
                            } else {
                                "moved to the holds area"
                            }
                        ),
                        response.ids.clone(),
                    ),
                    Err(error) => (format!("refused: {error}"), Vec::new()),
                };
                super::audit_settling(
                    store.as_ref(),
                    &audit,
                    &intent,
                    AuditEvent {
                        actor,
                        action: "Purge",
                        target,
                        parameters: parameters_of(ids),
                        result,
                    },
                )?;
                outcome
            })
            .await;
        Ok(Response::new(outcome?))
    }
}
