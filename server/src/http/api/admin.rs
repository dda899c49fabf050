//! One user's interactions (read, list, delete history), the audit log and tokens over
//! HTTP/JSON.

use std::collections::BTreeSet;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::discovery::InteractionJson;
use super::{body_of, query_of, Answer, JsonBody};
use crate::app::audit_log::AuditLogRequest;
use crate::app::audit_log::AUDITORS;
use crate::app::interactions::OWNERS;
use crate::app::interactions::{DeleteHistoryRequest, ListRequest};
use crate::audit::AuditQuery;
use crate::auth::{Principal, Role, TokenSource};
use crate::http::error::ApiError;
use crate::http::HttpState;

#[utoipa::path(get, path = "/api/v1/interactions/{id}", tag = "interactions",
    params(("id" = String, Path, description = "The interaction's id (ULID)")),
    responses((status = 200, body = InteractionJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn get_interaction(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Answer<InteractionJson> {
    let item = state.app.get_interaction(&principal, &id).await?;
    Ok(Json(item.into()))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, default)]
pub struct ListQueryJson {
    /// Only this thread.
    pub thread_id: String,
    /// created_at >= this (RFC 3339).
    pub created_from: Option<DateTime<Utc>>,
    /// created_at < this (RFC 3339).
    pub created_to: Option<DateTime<Utc>>,
    /// 1-1000, default 100.
    pub page_size: u32,
    pub page_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InteractionPageJson {
    pub interactions: Vec<InteractionJson>,
    pub next_page_token: String,
}

#[utoipa::path(get, path = "/api/v1/mailboxes/{mailbox_id}/interactions", tag = "interactions",
    params(("mailbox_id" = String, Path, description = "The mailbox"), ListQueryJson),
    responses((status = 200, body = InteractionPageJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn list_interactions(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(mailbox_id): Path<String>,
    query: Result<Query<ListQueryJson>, QueryRejection>,
) -> Answer<InteractionPageJson> {
    let query = query_of(&state, &principal, "ListInteractions", OWNERS, query).await?;
    let request = ListRequest {
        mailbox_id,
        thread_id: query.thread_id,
        created_from: query.created_from,
        created_to: query.created_to,
        page_size: query.page_size,
        page_token: query.page_token,
    };
    let page = state.app.list_interactions(&principal, request).await?;
    Ok(Json(InteractionPageJson {
        interactions: page.interactions.into_iter().map(Into::into).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// Which of a mailbox's items the user deletes.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DeleteHistoryJson {
    /// Only this thread; empty: every thread.
    pub thread_id: String,
    /// Only items created before this time (RFC 3339).
    pub before: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedJson {
    /// Items moved to the holds area.
    pub num_moved: u64,
}

#[utoipa::path(post, path = "/api/v1/mailboxes/{mailbox_id}/delete-history", tag = "interactions",
    params(("mailbox_id" = String, Path, description = "The mailbox")),
    request_body = DeleteHistoryJson,
    responses((status = 200, body = DeletedJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn delete_history(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(mailbox_id): Path<String>,
    body: JsonBody<DeleteHistoryJson>,
) -> Answer<DeletedJson> {
    let body = body_of(&state, &principal, "DeleteHistory", OWNERS, body).await?;
    let request = DeleteHistoryRequest {
        mailbox_id,
        thread_id: body.thread_id,
        before: body.before,
    };
    let num_moved = state.app.delete_history(&principal, request).await?;
    Ok(Json(DeletedJson { num_moved }))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, default)]
pub struct AuditQueryJson {
    /// Entries at or after this time (RFC 3339).
    pub time_from: Option<DateTime<Utc>>,
    /// Entries before this time (RFC 3339).
    pub time_to: Option<DateTime<Utc>>,
    pub actor: String,
    pub action: String,
    /// 1-1000, default 100.
    pub page_size: u32,
    pub page_token: String,
}

/// One audit log entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryJson {
    pub sequence: u64,
    pub time: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// The action's parameters (never interaction content).
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
    pub result: String,
    pub previous_hash: String,
    pub hash: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPageJson {
    pub entries: Vec<AuditEntryJson>,
    pub next_page_token: String,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQueryJson),
    responses((status = 200, body = AuditPageJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn query_audit_log(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<AuditQueryJson>, QueryRejection>,
) -> Answer<AuditPageJson> {
    let query = query_of(&state, &principal, "QueryAuditLog", AUDITORS, query).await?;
    let non_empty = |s: String| if s.is_empty() { None } else { Some(s) };
    let request = AuditLogRequest {
        query: AuditQuery {
            time_from: query.time_from,
            time_to: query.time_to,
            actor: non_empty(query.actor),
            action: non_empty(query.action),
        },
        page_size: query.page_size,
        page_token: query.page_token,
    };
    let page = state.app.query_audit_log(&principal, request).await?;
    Ok(Json(AuditPageJson {
        entries: page
            .entries
            .into_iter()
            .map(|e| AuditEntryJson {
                sequence: e.sequence,
                time: e.time,
                actor: e.actor,
                action: e.action,
                target: e.target,
                parameters: e.parameters,
                result: e.result,
                previous_hash: e.previous_hash,
                hash: e.hash,
            })
            .collect(),
        next_page_token: page.next_page_token,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationJson {
    pub intact: bool,
    pub num_entries: u64,
    /// Keep it elsewhere: a later head that does not descend from it means truncation.
    pub head_hash: String,
    /// The first entry that fails, when the chain is broken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, body = VerificationJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn verify_audit_log(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
) -> Answer<VerificationJson> {
    let verification = state.app.verify_audit_log(&principal).await?;
    Ok(Json(VerificationJson {
        intact: verification.problem.is_none(),
        num_entries: verification.num_entries,
        head_hash: verification.head_hash,
        first_bad_sequence: verification.problem.as_ref().map(|(sequence, _)| *sequence),
        problem: verification.problem.map(|(_, problem)| problem),
    }))
}

/// A token (never its text, which is shown once, when created).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenJson {
    pub name: String,
    pub roles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    pub created_by: String,
    /// The first 12 hex digits of the token's SHA-256.
    pub hash_prefix: String,
    /// "config" or "api".
    pub source: String,
}

fn token_json(principal: &Principal) -> TokenJson {
    TokenJson {
        name: principal.name.clone(),
        roles: principal
            .roles
            .iter()
            .map(|role| role.as_str().to_string())
            .collect(),
        created_at: principal.created_at,
        created_by: principal.created_by.clone(),
        hash_prefix: hex::encode(&principal.token_sha256[..6]),
        source: match principal.source {
            TokenSource::Config => "config".into(),
            TokenSource::Api => "api".into(),
        },
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenListJson {
    pub tokens: Vec<TokenJson>,
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = TokenListJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn list_tokens(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
) -> Answer<TokenListJson> {
    let tokens = state.app.list_tokens(&principal).await?;
    Ok(Json(TokenListJson {
        tokens: tokens.iter().map(token_json).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenJson {
    pub name: String,
    /// admin, ingest, auditor, ediscovery, ediscovery_admin, retention_admin, purge.
    pub roles: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTokenJson {
    /// The bearer token: shown this once, never stored.
    pub token: String,
    pub info: TokenJson,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewTokenJson,
    responses((status = 201, body = CreatedTokenJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn create_token(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    body: JsonBody<NewTokenJson>,
) -> Result<(StatusCode, Json<CreatedTokenJson>), ApiError> {
    let body = body_of(&state, &principal, "CreateToken", &[Role::Admin], body).await?;
    let roles = body
        .roles
        .iter()
        .map(|name| {
            Role::from_name(name)
                .ok_or_else(|| ApiError::invalid("roles", format!("{name:?} is not a role")))
        })
        .collect::<Result<BTreeSet<Role>, ApiError>>();
    let roles = match roles {
        Ok(roles) => roles,
        Err(error) => {
            state
                .app
                .authorize(&principal, "CreateToken", &[Role::Admin])
                .await?;
            return Err(error);
        }
    };
    let (token, created) = state.app.create_token(&principal, body.name, roles).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTokenJson {
            token,
            info: token_json(&created),
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/tokens/{name}/revoke", tag = "tokens",
    params(("name" = String, Path, description = "The token's name")),
    responses((status = 200, body = super::retention::DoneJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn revoke_token(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Answer<super::retention::DoneJson> {
    state.app.revoke_token(&principal, name).await?;
    Ok(Json(super::retention::DoneJson { done: true }))
}
