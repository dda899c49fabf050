//! `InteractionService`: ingest, read, list and delete interactions.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use holdfast_proto::v1 as pb;
use holdfast_proto::v1::interaction_service_server::InteractionService;
use tonic::{Request, Response, Status, Streaming};

use super::{authenticate, authorize, decoded};
use crate::app::ingest::INGESTERS;
use crate::app::interactions::OWNERS;
use crate::app::interactions::{DeleteHistoryRequest, ListRequest};
use crate::app::App;
use crate::auth::Principal;
use crate::convert;
use crate::error::Error;
use crate::ingest::Rejection;

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

    async fn ingest_batch(
        &self,
        principal: &Principal,
        request: pb::IngestRequest,
    ) -> Result<pb::IngestResponse, Error> {
        let items = request
            .interactions
            .into_iter()
            .map(|input| convert::unvalidated_content(input).map_err(Rejection::from))
            .collect();
        let outcomes = self.app.ingest(principal, items).await?;
        Ok(pb::IngestResponse {
            results: outcomes
                .into_iter()
                .enumerate()
                .map(|(index, outcome)| convert::ingest_result_to_proto(index, outcome))
                .collect(),
            sequence: request.sequence,
        })
    }
}

type IngestResponseStream = Pin<Box<dyn Stream<Item = Result<pb::IngestResponse, Status>> + Send>>;

#[tonic::async_trait]
impl InteractionService for InteractionApi {
    async fn ingest(
        &self,
        request: Request<pb::IngestRequest>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        let principal = authorize(&self.app, &request, "Ingest", INGESTERS).await?;
        Ok(Response::new(
            self.ingest_batch(&principal, request.into_inner()).await?,
        ))
    }

    type IngestStreamStream = IngestResponseStream;

    async fn ingest_stream(
        &self,
        request: Request<Streaming<pb::IngestRequest>>,
    ) -> Result<Response<Self::IngestStreamStream>, Status> {
        let principal = authorize(&self.app, &request, "IngestStream", INGESTERS).await?;
        let api = self.clone();
        let shutdown = self.app.shutdown.clone();
        let token = principal.token_sha256;
        let responses = request
            .into_inner()
            .take_until(shutdown.cancelled_owned())
            .map(move |message| {
                let api = api.clone();
                let principal = principal.clone();
                async move {
                    let batch = message?;
                    // Each batch re-checks the token: a revoked token (or one that lost the
                    // ingest role) stops writing at once, not when the stream ends.
                    if !api.app.tokens.is_current(&token, INGESTERS) {
                        return Err(Status::unauthenticated(
                            "the token of this stream was revoked or lost the ingest role",
                        ));
                    }
                    api.ingest_batch(&principal, batch)
                        .await
                        .map_err(Status::from)
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
