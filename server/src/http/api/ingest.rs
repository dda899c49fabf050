//! Ingest over HTTP/JSON: the same batches, limits and per-item outcomes as gRPC's `Ingest`.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use holdfast_content::{AccessedResource, Context, Model, Plugin, Safety};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{body_within, Answer, JsonBody};
use axum::extract::rejection::JsonRejection;

/// How long an ingest body may take to arrive.
pub(super) const INGEST_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
use crate::app::ingest::{IngestOutcome, CONFLICT_REASON, INGESTERS};
use crate::auth::Principal;
use crate::http::error::ApiError;
use crate::http::HttpState;
use crate::ingest::Rejection;
use crate::validate::UnvalidatedContent;

/// A batch of interactions (at most the server's `max_batch_items`, 1,000 by default).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestRequestJson {
    pub interactions: Vec<InteractionInputJson>,
    /// Echoed in the answer, for callers that pipeline requests.
    #[serde(default)]
    pub sequence: u64,
}

/// One interaction as the assistant backend sends it: the fields of an exported item's
/// `content`. Missing fields are empty; unknown fields are refused.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct InteractionInputJson {
    /// The backend's id for this interaction, unique per mailbox: a retry with the same key
    /// and content is answered `duplicate`, never stored twice. Required.
    pub client_key: String,
    /// The user's mailbox (e.g. an email address). Required.
    pub mailbox_id: String,
    pub thread_id: String,
    /// The assistant's surface (Teams, Word, ...). Required.
    pub app: String,
    /// When the interaction happened, RFC 3339 (e.g. `2026-12-01T09:30:00Z`). Required.
    pub created_at: Option<String>,
    pub prompt: String,
    pub response: String,
    pub model: Model,
    pub plugins: Vec<Plugin>,
    pub accessed_resources: Vec<AccessedResource>,
    pub contexts: Vec<Context>,
    pub safety: Safety,
    pub sensitivity_label: String,
    pub attributes: BTreeMap<String, String>,
}

impl InteractionInputJson {
    fn into_content(self) -> Result<UnvalidatedContent, Rejection> {
        let created_at = match self.created_at.as_deref() {
            None => return Err(rejection("created_at", "is required")),
            Some(text) => DateTime::parse_from_rfc3339(text)
                .map_err(|_| {
                    rejection(
                        "created_at",
                        "is not an RFC 3339 time (e.g. 2026-12-01T09:30:00Z)",
                    )
                })?
                .with_timezone(&Utc),
        };
        Ok(UnvalidatedContent {
            client_key: self.client_key,
            mailbox_id: self.mailbox_id,
            thread_id: self.thread_id,
            app: self.app,
            created_at,
            prompt: self.prompt,
            response: self.response,
            model: self.model,
            plugins: self.plugins,
            accessed_resources: self.accessed_resources,
            contexts: self.contexts,
            safety: self.safety,
            sensitivity_label: self.sensitivity_label,
            attributes: self.attributes,
        })
    }
}

fn rejection(field: &str, reason: &str) -> Rejection {
    Rejection {
        field: field.into(),
        reason: reason.into(),
    }
}

/// One outcome per item, in the request's order.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResponseJson {
    pub results: Vec<IngestResultJson>,
    pub sequence: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResultJson {
    /// The item's position in the request.
    pub index: usize,
    /// `created`, `duplicate` (stored before: its id), or `rejected` (nothing stored).
    pub status: &'static str,
    /// The stored item's id (also for a `client_key` conflict: the stored one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Why rejected: `INVALID_ARGUMENT`, or `ALREADY_EXISTS` for a `client_key` stored before
    /// with other content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl IngestResultJson {
    fn new(index: usize, outcome: IngestOutcome) -> IngestResultJson {
        let stored = |status, id: crate::domain::InteractionId| IngestResultJson {
            index,
            status,
            id: Some(id.to_string()),
            code: None,
            field: None,
            reason: None,
        };
        match outcome {
            IngestOutcome::Created(id) => stored("created", id),
            IngestOutcome::Duplicate(id) => stored("duplicate", id),
            IngestOutcome::Conflict(id) => IngestResultJson {
                status: "rejected",
                code: Some("ALREADY_EXISTS"),
                field: Some("client_key".into()),
                reason: Some(CONFLICT_REASON.into()),
                ..stored("rejected", id)
            },
            IngestOutcome::Rejected(Rejection { field, reason }) => IngestResultJson {
                index,
                status: "rejected",
                id: None,
                code: Some("INVALID_ARGUMENT"),
                field: Some(field),
                reason: Some(reason),
            },
        }
    }
}

/// Stores a batch of interactions. The answer is 200 with one outcome per item even when
/// some are rejected; the whole call fails only when the body is not a batch, the batch is
/// too large, or storage cannot take it (503: retry, nothing of the batch was acknowledged).
#[utoipa::path(post, path = "/api/v1/interactions", tag = "interactions",
    request_body = IngestRequestJson,
    responses((status = 200, body = IngestResponseJson), (status = "4XX", body = ApiError),
        (status = "5XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn ingest(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    request: axum::extract::Request,
) -> Answer<IngestResponseJson> {
    // The role first: a caller without it is refused (and audited) before its body is read.
    state.app.authorize(&principal, "Ingest", INGESTERS).await?;
    // The body is read within a time limit (a client that stalls or dies mid-upload holds
    // nothing for long), then decoded: a decoded batch takes several times its size in
    // memory, so only a few are decoded at once (the rest wait).
    let (parts, body) = request.into_parts();
    let bytes = tokio::time::timeout(
        INGEST_BODY_TIMEOUT,
        axum::body::Bytes::from_request(
            axum::extract::Request::from_parts(parts.clone(), body),
            &state,
        ),
    )
    .await
    .map_err(|_| {
        ApiError::from(crate::error::Error::DeadlineExceeded(format!(
            "the request body did not arrive within {} seconds",
            INGEST_BODY_TIMEOUT.as_secs()
        )))
    })?;
    let decoding =
        state.ingest_bodies.acquire().await.map_err(|_| {
            ApiError::from(crate::error::Error::Unavailable("shutting down".into()))
        })?;
    let body: JsonBody<IngestRequestJson> = match bytes {
        Ok(bytes) => {
            let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            Json::from_request(request, &state).await
        }
        Err(rejection) => Err(JsonRejection::from(rejection)),
    };
    let limit = state.app.limits.max_request_bytes;
    let request = body_within(&state, &principal, "Ingest", INGESTERS, body, limit).await?;
    let items = request
        .interactions
        .into_iter()
        .map(InteractionInputJson::into_content)
        .collect();
    drop(decoding);
    let outcomes = state.app.ingest(&principal, items).await?;
    Ok(Json(IngestResponseJson {
        results: outcomes
            .into_iter()
            .enumerate()
            .map(|(index, outcome)| IngestResultJson::new(index, outcome))
            .collect(),
        sequence: request.sequence,
    }))
}
