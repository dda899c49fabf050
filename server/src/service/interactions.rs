//! `InteractionService`: ingest, read, list and delete interactions.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use holdfast_proto::v1 as pb;
use holdfast_proto::v1::interaction_service_server::InteractionService;
use holdfast_retention::MoveReason;
use serde_json::json;
use tonic::{Request, Response, Status, Streaming};

use super::{blocking, now, page_size, Shared};
use crate::admission::Work;
use crate::audit::AuditEvent;
use crate::audit_intent::AuditIntent;
use crate::auth::Role;
use crate::convert;
use crate::domain::{HistorySelector, InteractionId, ListCursor, ListQuery};
use crate::error::Error;
use crate::ingest::{self, Rejection};
use crate::page_token::{self, PayloadReader, TokenKind};
use crate::store::WriteOutcome;

/// Batches of one stream processed at once; more wait in HTTP/2 flow control.
const STREAM_PIPELINE_DEPTH: usize = 4;

#[derive(Clone)]
pub struct InteractionApi {
    shared: Arc<Shared>,
}

impl InteractionApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        InteractionApi { shared }
    }

    async fn ingest_batch(&self, request: pb::IngestRequest) -> Result<pb::IngestResponse, Error> {
        let started = Instant::now();
        let limits = &self.shared.limits;
        let num_items = request.interactions.len();
        if num_items > limits.max_batch_items {
            return Err(Error::invalid(
                "interactions",
                format!(
                    "{num_items} items in one request, more than the limit of {}",
                    limits.max_batch_items
                ),
            ));
        }
        let batch_limits = limits.clone();
        let inputs = request.interactions;
        // On the threads reserved for ingest: nothing else can take them.
        let prepared = self
            .shared
            .ingest_workers
            .run(move || Ok(ingest::prepare(inputs, &batch_limits, now())))
            .await?;

        let mut results: Vec<pb::IngestResult> = Vec::with_capacity(num_items);
        let mut valid = Vec::with_capacity(num_items);
        let mut valid_positions = Vec::with_capacity(num_items);
        for (index, item) in prepared.into_iter().enumerate() {
            let mut result = pb::IngestResult {
                index: index as u32,
                ..Default::default()
            };
            match item {
                Ok(item) => {
                    valid_positions.push(index);
                    valid.push(item);
                }
                Err(Rejection { field, reason }) => {
                    result.status = pb::IngestStatus::Rejected as i32;
                    result.code = pb::RejectCode::InvalidArgument as i32;
                    result.field = field;
                    result.reason = reason;
                }
            }
            results.push(result);
        }
        // Backpressure: wait while the search index is too far behind.
        self.shared
            .index
            .wait_for_capacity(&*self.shared.store, &self.shared.shutdown)
            .await;
        if !valid.is_empty() {
            self.shared.check_disk_space()?;
        }
        let outcomes = self.shared.committer.write(valid).await?;
        for (position, outcome) in valid_positions.into_iter().zip(outcomes) {
            let result = &mut results[position];
            match outcome {
                WriteOutcome::Created(id) => {
                    result.status = pb::IngestStatus::Created as i32;
                    result.id = id.to_string();
                }
                WriteOutcome::Duplicate(id) => {
                    result.status = pb::IngestStatus::Duplicate as i32;
                    result.id = id.to_string();
                }
                WriteOutcome::Conflict(id) => {
                    result.status = pb::IngestStatus::Rejected as i32;
                    result.code = pb::RejectCode::AlreadyExists as i32;
                    result.id = id.to_string();
                    result.field = "client_key".into();
                    result.reason = "this client_key was stored before with different content; \
                                     stored interactions are immutable"
                        .into();
                }
            }
        }
        record_ingest_metrics(&results, started);
        Ok(pb::IngestResponse {
            results,
            sequence: request.sequence,
        })
    }
}

fn record_ingest_metrics(results: &[pb::IngestResult], started: Instant) {
    let mut counts = [0u64; 3];
    for result in results {
        match pb::IngestStatus::try_from(result.status) {
            Ok(pb::IngestStatus::Created) => counts[0] += 1,
            Ok(pb::IngestStatus::Duplicate) => counts[1] += 1,
            _ => counts[2] += 1,
        }
    }
    for (status, count) in ["created", "duplicate", "rejected"].into_iter().zip(counts) {
        metrics::counter!("holdfast_ingest_items_total", "status" => status).increment(count);
    }
    metrics::histogram!("holdfast_ingest_batch_items").record(results.len() as f64);
    metrics::histogram!("holdfast_ingest_seconds").record(started.elapsed().as_secs_f64());
}

/// What a ListInteractions page token is bound to: the mailbox, thread and created range.
fn list_token_context(query: &ListQuery) -> [u8; 16] {
    let micros = |time: Option<chrono::DateTime<chrono::Utc>>| {
        time.map(|t| t.timestamp_micros().to_be_bytes().to_vec())
            .unwrap_or_default()
    };
    page_token::context(&[
        query.mailbox_id.as_str().as_bytes(),
        query.thread_id.as_bytes(),
        &micros(query.created_from),
        &micros(query.created_to),
    ])
}

type IngestResponseStream = Pin<Box<dyn Stream<Item = Result<pb::IngestResponse, Status>> + Send>>;

#[tonic::async_trait]
impl InteractionService for InteractionApi {
    async fn ingest(
        &self,
        request: Request<pb::IngestRequest>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        self.shared
            .authorize(&request, "Ingest", &[Role::Ingest])
            .await?;
        Ok(Response::new(
            self.ingest_batch(request.into_inner()).await?,
        ))
    }

    type IngestStreamStream = IngestResponseStream;

    async fn ingest_stream(
        &self,
        request: Request<Streaming<pb::IngestRequest>>,
    ) -> Result<Response<Self::IngestStreamStream>, Status> {
        let principal = self
            .shared
            .authorize(&request, "IngestStream", &[Role::Ingest])
            .await?;
        let api = self.clone();
        let shutdown = self.shared.shutdown.clone();
        let token = principal.token_sha256;
        let responses = request
            .into_inner()
            .take_until(shutdown.cancelled_owned())
            .map(move |message| {
                let api = api.clone();
                async move {
                    let batch = message?;
                    // Each batch re-checks the token: a revoked token (or one that lost the
                    // ingest role) stops writing at once, not when the stream ends.
                    if !api.shared.tokens.is_current(&token, &[Role::Ingest]) {
                        return Err(Status::unauthenticated(
                            "the token of this stream was revoked or lost the ingest role",
                        ));
                    }
                    api.ingest_batch(batch).await.map_err(Status::from)
                }
            })
            .buffered(STREAM_PIPELINE_DEPTH);
        Ok(Response::new(Box::pin(responses)))
    }

    async fn get_interaction(
        &self,
        request: Request<pb::GetInteractionRequest>,
    ) -> Result<Response<pb::Interaction>, Status> {
        let principal = self
            .shared
            .authorize(
                &request,
                "GetInteraction",
                &[Role::Ingest, Role::EdiscoveryAdmin, Role::Admin],
            )
            .await?;
        let raw_id = request.into_inner().id;
        let id: InteractionId = raw_id
            .parse()
            .map_err(|reason: String| Error::invalid("id", reason))?;
        let store = Arc::clone(&self.shared.store);
        let found = blocking(move || Ok(store.get_interaction(id)?)).await?;
        let privileged = principal.has_any(&[Role::EdiscoveryAdmin, Role::Admin]);
        let item = match found {
            Some(item) if privileged || item.location.is_visible_to_user() => item,
            _ => return Err(Error::NotFound(format!("no interaction with id {id}")).into()),
        };
        if privileged {
            // Reading content outside the user's own view is a compliance action.
            self.shared
                .audit_done(
                    &principal,
                    "GetInteraction",
                    id.to_string(),
                    json!({ "mailbox_id": item.content.mailbox_id.as_str() }),
                    "ok".into(),
                )
                .await?;
        }
        Ok(Response::new(convert::interaction_to_proto(item)))
    }

    async fn list_interactions(
        &self,
        request: Request<pb::ListInteractionsRequest>,
    ) -> Result<Response<pb::ListInteractionsResponse>, Status> {
        let principal = self
            .shared
            .authorize(&request, "ListInteractions", &[Role::Ingest, Role::Admin])
            .await?;
        let request = request.into_inner();
        let limit = page_size(request.page_size)?;
        let query = ListQuery {
            mailbox_id: convert::parse_mailbox("mailbox_id", &request.mailbox_id)?,
            thread_id: request.thread_id,
            created_from: convert::optional_time("created_from", request.created_from.as_ref())?,
            created_to: convert::optional_time("created_to", request.created_to.as_ref())?,
        };
        convert::check_thread_id("thread_id", &query.thread_id, &self.shared.limits)?;
        if let (Some(from), Some(to)) = (query.created_from, query.created_to) {
            if from > to {
                return Err(Error::invalid("created_from", "is after created_to").into());
            }
        }
        let token_context = list_token_context(&query);
        let cursor = match request.page_token.as_str() {
            "" => None,
            token => {
                let payload = self.shared.page_tokens.open(
                    TokenKind::ListInteractions,
                    token_context,
                    token,
                    now(),
                )?;
                let mut reader = PayloadReader::new(&payload);
                let cursor = ListCursor {
                    created_micros: reader.i64()?,
                    id: InteractionId::from_bytes(reader.bytes16()?),
                };
                reader.finish()?;
                Some(cursor)
            }
        };
        if !principal.has_any(&[Role::Ingest]) {
            // An administrator reading a user's history is a compliance action.
            self.shared
                .audit_done(
                    &principal,
                    "ListInteractions",
                    query.mailbox_id.to_string(),
                    json!({ "thread_id": query.thread_id, "page_token": request.page_token }),
                    "ok".into(),
                )
                .await?;
        }
        let store = Arc::clone(&self.shared.store);
        let (page, next) = blocking(move || Ok(store.list_active(&query, cursor, limit)?)).await?;
        Ok(Response::new(pb::ListInteractionsResponse {
            interactions: page
                .into_iter()
                .map(convert::interaction_to_proto)
                .collect(),
            next_page_token: next
                .map(|cursor| {
                    let mut payload = cursor.created_micros.to_be_bytes().to_vec();
                    payload.extend_from_slice(&cursor.id.to_bytes());
                    self.shared.page_tokens.seal(
                        TokenKind::ListInteractions,
                        token_context,
                        &payload,
                        now(),
                    )
                })
                .unwrap_or_default(),
        }))
    }

    async fn delete_history(
        &self,
        request: Request<pb::DeleteHistoryRequest>,
    ) -> Result<Response<pb::DeleteHistoryResponse>, Status> {
        let principal = self
            .shared
            .authorize(&request, "DeleteHistory", &[Role::Ingest, Role::Admin])
            .await?;
        let request = request.into_inner();
        let selector = HistorySelector {
            mailbox_id: convert::parse_mailbox("mailbox_id", &request.mailbox_id)?,
            thread_id: request.thread_id,
            before: convert::optional_time("before", request.before.as_ref())?,
        };
        convert::check_thread_id("thread_id", &selector.thread_id, &self.shared.limits)?;
        let parameters = json!({
            "thread_id": selector.thread_id,
            "before": selector.before,
        });
        let target = selector.mailbox_id.to_string();
        let store = Arc::clone(&self.shared.store);
        let audit = Arc::clone(&self.shared.audit);
        let admission = &self.shared.admission;
        let slot = match admission.admit(Work::LongOperation, &principal.name) {
            Ok(slot) => slot,
            Err(refused) => {
                self.shared
                    .audit_done(
                        &principal,
                        "DeleteHistory",
                        target,
                        parameters,
                        format!("error: {refused}"),
                    )
                    .await?;
                return Err(refused.into());
            }
        };
        let actor = principal.name.clone();
        let intent = AuditIntent::new(&actor, "DeleteHistory", &target, &parameters);
        // The move and its audit entry run in one closure on a blocking thread: a caller that
        // goes away (deadline, reset stream) cannot leave a move unaudited. The entry owed is
        // saved first, so a crash during the move is audited at the next start.
        let moved = admission
            .long_operation(slot, move || {
                let intent = intent.save_before(store.as_ref())?;
                let moved = crate::workers::catch_panic("DeleteHistory", || {
                    Ok(store.move_to_holds_area(&selector, MoveReason::UserDeleted, now())?)
                });
                let result = match &moved {
                    Ok(num_moved) => format!("ok: moved {num_moved} to the holds area"),
                    Err(error) => format!("error: {error}"),
                };
                super::audit_settling(
                    store.as_ref(),
                    &audit,
                    &intent,
                    AuditEvent {
                        actor,
                        action: "DeleteHistory",
                        target,
                        parameters,
                        result,
                    },
                )?;
                moved
            })
            .await;
        let num_moved = moved?;
        metrics::counter!("holdfast_moved_to_holds_area_total", "reason" => "user_deleted")
            .increment(num_moved);
        Ok(Response::new(pb::DeleteHistoryResponse { num_moved }))
    }
}
