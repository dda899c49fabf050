//! `InteractionService`: ingest, read, list and delete interactions.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use holdfast_proto::v1 as pb;
use holdfast_proto::v1::interaction_service_server::InteractionService;
use tonic::{Request, Response, Status, Streaming};

use super::{authenticate, authorize, decoded};
use crate::app::interactions::OWNERS;
use crate::app::interactions::{DeleteHistoryRequest, ListRequest};
use crate::app::{now, App};
use crate::auth::Role;
use crate::convert;
use crate::error::Error;
use crate::ingest::{self, Rejection};
use crate::store::WriteOutcome;

/// Batches of one stream processed at once; more wait in HTTP/2 flow control.
const STREAM_PIPELINE_DEPTH: usize = 4;

#[derive(Clone)]
pub struct InteractionApi {
    app: Arc<App>,
}

impl InteractionApi {
    pub fn new(app: Arc<App>) -> Self {
        InteractionApi { app }
    }

    async fn ingest_batch(&self, request: pb::IngestRequest) -> Result<pb::IngestResponse, Error> {
        let started = Instant::now();
        let limits = &self.app.limits;
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
            .app
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
        self.app
            .index
            .wait_for_capacity(&*self.app.store, &self.app.shutdown)
            .await;
        if !valid.is_empty() {
            self.app.check_disk_space()?;
        }
        let outcomes = self.app.committer.write(valid).await?;
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

type IngestResponseStream = Pin<Box<dyn Stream<Item = Result<pb::IngestResponse, Status>> + Send>>;

#[tonic::async_trait]
impl InteractionService for InteractionApi {
    async fn ingest(
        &self,
        request: Request<pb::IngestRequest>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        authorize(&self.app, &request, "Ingest", &[Role::Ingest]).await?;
        Ok(Response::new(
            self.ingest_batch(request.into_inner()).await?,
        ))
    }

    type IngestStreamStream = IngestResponseStream;

    async fn ingest_stream(
        &self,
        request: Request<Streaming<pb::IngestRequest>>,
    ) -> Result<Response<Self::IngestStreamStream>, Status> {
        let principal = authorize(&self.app, &request, "IngestStream", &[Role::Ingest]).await?;
        let api = self.clone();
        let shutdown = self.app.shutdown.clone();
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
                    if !api.app.tokens.is_current(&token, &[Role::Ingest]) {
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
        let principal = authenticate(&self.app, &request, "GetInteraction")?;
        let item = self
            .app
            .get_interaction(&principal, &request.get_ref().id)
            .await?;
        Ok(Response::new(convert::interaction_to_proto(item)))
    }

    async fn list_interactions(
        &self,
        request: Request<pb::ListInteractionsRequest>,
    ) -> Result<Response<pb::ListInteractionsResponse>, Status> {
        let principal = authenticate(&self.app, &request, "ListInteractions")?;
        let request = request.into_inner();
        let list = ListRequest {
            mailbox_id: request.mailbox_id,
            thread_id: request.thread_id,
            created_from: decoded(
                &self.app,
                &principal,
                "ListInteractions",
                OWNERS,
                convert::optional_time("created_from", request.created_from.as_ref()),
            )
            .await?,
            created_to: decoded(
                &self.app,
                &principal,
                "ListInteractions",
                OWNERS,
                convert::optional_time("created_to", request.created_to.as_ref()),
            )
            .await?,
            page_size: request.page_size,
            page_token: request.page_token,
        };
        let page = self.app.list_interactions(&principal, list).await?;
        Ok(Response::new(pb::ListInteractionsResponse {
            interactions: page
                .interactions
                .into_iter()
                .map(convert::interaction_to_proto)
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn delete_history(
        &self,
        request: Request<pb::DeleteHistoryRequest>,
    ) -> Result<Response<pb::DeleteHistoryResponse>, Status> {
        let principal = authenticate(&self.app, &request, "DeleteHistory")?;
        let request = request.into_inner();
        let delete = DeleteHistoryRequest {
            mailbox_id: request.mailbox_id,
            thread_id: request.thread_id,
            before: decoded(
                &self.app,
                &principal,
                "DeleteHistory",
                OWNERS,
                convert::optional_time("before", request.before.as_ref()),
            )
            .await?,
        };
        let num_moved = self.app.delete_history(&principal, delete).await?;
        Ok(Response::new(pb::DeleteHistoryResponse { num_moved }))
    }
}
