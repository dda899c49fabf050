//! The `/api/v1` endpoints: JSON in and out, each decoding its request into the application
//! layer's types, calling it with the authenticated `Principal`, and encoding the answer.
//! Every type here derives its OpenAPI schema; `ApiDoc` lists the endpoints.

mod admin;
mod discovery;
mod ingest;
mod otlp;
mod retention;

use axum::extract::rejection::JsonRejection;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::error::ApiError;
use super::HttpState;
use crate::auth::Principal;

/// Largest request body of the endpoints apart from ingest: every other request is small.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The `/api/v1` routes (authentication is layered on by `super::router`). An ingest body may
/// be up to `max_ingest_bytes` (the gRPC message limit), every other body up to 1 MiB.
pub fn routes(max_ingest_bytes: usize) -> Router<HttpState> {
    use admin::*;
    use discovery::*;
    use ingest::*;
    use retention::*;
    Router::new()
        .route("/api/v1/whoami", get(whoami))
        .route(
            "/v1/traces",
            post(otlp::export_traces).layer(DefaultBodyLimit::max(max_ingest_bytes)),
        )
        .route(
            "/api/v1/interactions",
            post(ingest).layer(DefaultBodyLimit::max(max_ingest_bytes)),
        )
        .route("/api/v1/cases", get(list_cases).post(create_case))
        .route("/api/v1/cases/{case_id}", get(get_case).patch(update_case))
        .route("/api/v1/cases/{case_id}/close", post(close_case))
        .route("/api/v1/cases/{case_id}/search", post(search))
        .route("/api/v1/cases/{case_id}/export", post(export))
        .route(
            "/api/v1/cases/{case_id}/holds",
            get(list_case_holds).post(place_case_hold),
        )
        .route(
            "/api/v1/cases/{case_id}/holds/{hold_id}/release",
            post(release_case_hold),
        )
        .route("/api/v1/cases/{case_id}/purge", post(purge))
        .route("/api/v1/policies", get(list_policies).post(create_policy))
        .route(
            "/api/v1/policies/{policy_id}",
            get(get_policy).put(update_policy).delete(delete_policy),
        )
        .route("/api/v1/policies/{policy_id}/lock", post(lock_policy))
        .route("/api/v1/policies/preview", post(preview_policy))
        .route("/api/v1/holds", get(list_holds).post(place_litigation_hold))
        .route("/api/v1/holds/{hold_id}/release", post(release_hold))
        .route("/api/v1/holds/{hold_id}/clear", post(clear_delay_hold))
        .route("/api/v1/interactions/{id}", get(get_interaction))
        .route("/api/v1/interactions/{id}/explain", get(explain_retention))
        .route("/api/v1/mailboxes/{mailbox_id}/status", get(mailbox_status))
        .route(
            "/api/v1/mailboxes/{mailbox_id}/interactions",
            get(list_interactions),
        )
        .route(
            "/api/v1/mailboxes/{mailbox_id}/delete-history",
            post(delete_history),
        )
        .route("/api/v1/sweeper", get(sweeper_status))
        .route("/api/v1/sweeper/run", post(run_sweep))
        .route("/api/v1/dispositions", get(list_dispositions))
        .route("/api/v1/audit", get(query_audit_log))
        .route("/api/v1/audit/verify", post(verify_audit_log))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{name}/revoke", post(revoke_token))
}

/// The OpenAPI 3 document of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "holdfast HTTP/JSON API",
        description = "The operations of holdfast's gRPC API over HTTP/JSON: cases, search, \
            export, holds, purge, retention policies, the sweeper, the audit log and tokens. \
            Every endpoint under /api/v1 needs `Authorization: Bearer <token>`; errors are \
            `ApiError` objects whose `code` is the gRPC status code's name."
    ),
    paths(
        whoami,
        ingest::ingest,
        discovery::list_cases,
        discovery::create_case,
        discovery::get_case,
        discovery::update_case,
        discovery::close_case,
        discovery::search,
        discovery::export,
        discovery::list_case_holds,
        discovery::place_case_hold,
        discovery::release_case_hold,
        discovery::purge,
        retention::list_policies,
        retention::create_policy,
        retention::get_policy,
        retention::update_policy,
        retention::delete_policy,
        retention::lock_policy,
        retention::preview_policy,
        retention::list_holds,
        retention::place_litigation_hold,
        retention::release_hold,
        retention::clear_delay_hold,
        retention::explain_retention,
        retention::mailbox_status,
        retention::sweeper_status,
        retention::run_sweep,
        retention::list_dispositions,
        admin::get_interaction,
        admin::list_interactions,
        admin::delete_history,
        admin::query_audit_log,
        admin::verify_audit_log,
        admin::list_tokens,
        admin::create_token,
        admin::revoke_token
    ),
    components(schemas(
        ApiError,
        discovery::ExportLine,
        discovery::InteractionJson,
        discovery::ExportTrailerJson
    )),
    modifiers(&BearerScheme)
)]
pub struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn openapi_document() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

type Answer<T> = Result<Json<T>, ApiError>;
/// A JSON body, or why it is not one (see `json_error`).
type JsonBody<T> = Result<Json<T>, JsonRejection>;

/// Who the token belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmIJson {
    pub name: String,
    /// admin, ingest, auditor, ediscovery, ediscovery_admin, retention_admin, purge.
    pub roles: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/whoami", tag = "tokens",
    responses((status = 200, body = WhoAmIJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
async fn whoami(
    axum::extract::State(state): axum::extract::State<HttpState>,
    Extension(principal): Extension<Principal>,
) -> Answer<WhoAmIJson> {
    let principal = state.app.who_am_i(&principal).await?;
    Ok(Json(WhoAmIJson {
        name: principal.name,
        roles: principal
            .roles
            .iter()
            .map(|role| role.as_str().to_string())
            .collect(),
    }))
}

pub use discovery::export_response;

/// The body of a call, or why it is not what the endpoint takes. A caller without the role
/// is refused (and audited) as such first, whatever it sent.
async fn body_of<T>(
    state: &HttpState,
    principal: &Principal,
    action: &'static str,
    allowed: &[crate::auth::Role],
    body: JsonBody<T>,
) -> Result<T, ApiError> {
    body_within(state, principal, action, allowed, body, MAX_BODY_BYTES).await
}

/// `body_of` for an endpoint whose body may be up to `limit` bytes.
async fn body_within<T>(
    state: &HttpState,
    principal: &Principal,
    action: &'static str,
    allowed: &[crate::auth::Role],
    body: JsonBody<T>,
    limit: usize,
) -> Result<T, ApiError> {
    match body {
        Ok(Json(body)) => Ok(body),
        Err(rejection) => {
            state.app.authorize(principal, action, allowed).await?;
            Err(json_error(rejection, limit))
        }
    }
}

/// The query string of a call, or why it is not what the endpoint takes (after the role
/// check, as for bodies).
async fn query_of<T>(
    state: &HttpState,
    principal: &Principal,
    action: &'static str,
    allowed: &[crate::auth::Role],
    query: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    match query {
        Ok(axum::extract::Query(query)) => Ok(query),
        Err(rejection) => {
            state.app.authorize(principal, action, allowed).await?;
            Err(query_error(rejection))
        }
    }
}

/// A query string that is not what an endpoint takes.
fn query_error(rejection: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::invalid("query string", rejection.body_text())
}

/// A body that is not the JSON an endpoint takes: INVALID_ARGUMENT naming the body (serde's
/// message says which field and where, without the caller's values), or OUT_OF_RANGE (413)
/// past the endpoint's size limit of `limit` bytes.
fn json_error(rejection: JsonRejection, limit: usize) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::invalid("body", "expected Content-Type: application/json")
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError {
            code: "OUT_OF_RANGE",
            message: format!(
                "the request body is larger than this endpoint's limit of {limit} bytes"
            ),
            field: None,
            status: StatusCode::PAYLOAD_TOO_LARGE,
        },
        other => ApiError::invalid("body", without_values(&other.body_text())),
    }
}

/// serde's message without the text of a value it quotes (`invalid type: string "…",
/// expected …`): a body can carry prompt text, which never goes into an error message. Names
/// it quotes in backticks (unknown fields, variants, map keys) are cut to 64 bytes.
fn without_values(message: &str) -> String {
    const LONGEST_MESSAGE: usize = 512;
    let mut message = short_names(&without_strings(message));
    if message.len() > LONGEST_MESSAGE {
        let mut end = LONGEST_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// Each backticked name cut to 64 bytes (a caller's field name could be any text).
fn short_names(message: &str) -> String {
    const LONGEST: usize = 64;
    let mut out = String::with_capacity(message.len().min(1024));
    for (index, part) in message.split('`').enumerate() {
        if index > 0 {
            out.push('`');
        }
        if index % 2 == 1 && part.len() > LONGEST {
            let mut end = LONGEST;
            while !part.is_char_boundary(end) {
                end -= 1;
            }
            out.push_str(&part[..end]);
            out.push('…');
        } else {
            out.push_str(part);
        }
    }
    out
}

fn without_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find("string \"") {
        out.push_str(&rest[..start]);
        out.push_str("a string");
        let after = &rest[start + "string \"".len()..];
        // serde escapes quotes inside the value with a backslash.
        let mut end = None;
        let mut escaped = false;
        for (at, ch) in after.char_indices() {
            match ch {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(at);
                    break;
                }
                _ => escaped = false,
            }
        }
        match end {
            Some(end) => rest = &after[end + 1..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::without_values;

    #[test]
    fn serde_messages_lose_the_values_they_quote() {
        assert_eq!(
            without_values(
                r#"invalid type: string "my secret \"prompt\"", expected u64 at line 1"#
            ),
            "invalid type: a string, expected u64 at line 1"
        );
        assert_eq!(
            without_values("unknown field `modle`, expected one of `model`"),
            "unknown field `modle`, expected one of `model`"
        );
        assert_eq!(without_values(r#"string "unterminated"#), "a string");
        let long = "x".repeat(200);
        let cut = without_values(&format!("unknown field `{long}`, expected `a`"));
        assert_eq!(
            cut,
            format!("unknown field `{}…`, expected `a`", "x".repeat(64))
        );
    }
}
