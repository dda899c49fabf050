//! Cases, search, export, case holds and purge over HTTP/JSON.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{body_of, query_of, Answer, JsonBody};
use crate::app::cases::{CaseChange, NewCase};
use crate::app::export::{Export, ExportMessage, ExportRequest};
use crate::app::holds::{HoldView, NewCaseHold};
use crate::app::purge::PURGE;
use crate::app::purge::{PurgeReport, PurgeRequest};
use crate::app::search::{HitLocation, SearchPage, SearchRequest};
use crate::app::EDISCOVERY;
use crate::auth::Principal;
use crate::cases::{CaseRecord, CaseStatus};
use crate::domain::StoredInteraction;
use crate::http::error::ApiError;
use crate::http::HttpState;
use crate::lifecycle::{HoldKind, HoldRecord};
use crate::search::searcher::Sort;

/// An eDiscovery case.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaseJson {
    pub id: String,
    pub name: String,
    pub description: String,
    /// "open" or "closed".
    pub status: String,
    pub members: Vec<String>,
    pub custodians: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
}

impl From<CaseRecord> for CaseJson {
    fn from(case: CaseRecord) -> CaseJson {
        CaseJson {
            id: case.id.to_string(),
            name: case.name,
            description: case.description,
            status: match case.status {
                CaseStatus::Open => "open",
                CaseStatus::Closed => "closed",
            }
            .into(),
            members: case.members.into_iter().collect(),
            custodians: case.custodians.iter().map(ToString::to_string).collect(),
            created_at: case.created_at,
            created_by: case.created_by,
            closed_at: case.closed_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CaseListJson {
    pub cases: Vec<CaseJson>,
}

#[utoipa::path(get, path = "/api/v1/cases", tag = "cases",
    responses((status = 200, body = CaseListJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn list_cases(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
) -> Answer<CaseListJson> {
    let cases = state.app.list_cases(&principal).await?;
    Ok(Json(CaseListJson {
        cases: cases.into_iter().map(CaseJson::from).collect(),
    }))
}

/// A case to create; the caller becomes a member.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCaseJson {
    /// 1-200 characters, unique (case-insensitively).
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub custodians: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/cases", tag = "cases", request_body = NewCaseJson,
    responses((status = 201, body = CaseJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn create_case(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    body: JsonBody<NewCaseJson>,
) -> Result<(StatusCode, Json<CaseJson>), ApiError> {
    let body = body_of(&state, &principal, "CreateCase", EDISCOVERY, body).await?;
    let case = state
        .app
        .create_case(
            &principal,
            NewCase {
                name: body.name,
                description: body.description,
                members: body.members,
                custodians: body.custodians,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(case.into())))
}

#[utoipa::path(get, path = "/api/v1/cases/{case_id}", tag = "cases",
    params(("case_id" = String, Path, description = "The case's id (ULID)")),
    responses((status = 200, body = CaseJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn get_case(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(case_id): Path<String>,
) -> Answer<CaseJson> {
    Ok(Json(state.app.get_case(&principal, &case_id).await?.into()))
}

/// A change to a case; absent or empty fields change nothing.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CaseChangeJson {
    pub name: String,
    pub description: String,
    pub add_members: Vec<String>,
    pub remove_members: Vec<String>,
    pub add_custodians: Vec<String>,
    pub remove_custodians: Vec<String>,
}

#[utoipa::path(patch, path = "/api/v1/cases/{case_id}", tag = "cases",
    params(("case_id" = String, Path, description = "The case's id (ULID)")),
    request_body = CaseChangeJson,
    responses((status = 200, body = CaseJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn update_case(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(case_id): Path<String>,
    body: JsonBody<CaseChangeJson>,
) -> Answer<CaseJson> {
    let body = body_of(&state, &principal, "UpdateCase", EDISCOVERY, body).await?;
    let change = CaseChange {
        name: body.name,
        description: body.description,
        add_members: body.add_members,
        remove_members: body.remove_members,
        add_custodians: body.add_custodians,
        remove_custodians: body.remove_custodians,
    };
    Ok(Json(
        state
            .app
            .update_case(&principal, &case_id, change)
            .await?
            .into(),
    ))
}

#[utoipa::path(post, path = "/api/v1/cases/{case_id}/close", tag = "cases",
    params(("case_id" = String, Path, description = "The case's id (ULID)")),
    responses((status = 200, body = CaseJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn close_case(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(case_id): Path<String>,
) -> Answer<CaseJson> {
    Ok(Json(
        state.app.close_case(&principal, &case_id).await?.into(),
    ))
}

/// A KQL search in a case.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchJson {
    /// KQL (see docs/kql.md); empty matches everything.
    #[serde(default)]
    pub query: String,
    /// A subset of the case's custodians; absent or empty: all of them.
    #[serde(default)]
    pub mailboxes: Vec<String>,
    /// "relevance" (the default), "newest" or "oldest".
    #[serde(default)]
    pub sort: Option<String>,
    /// Hits per page: 1-1000, default 50.
    #[serde(default)]
    pub page_size: u32,
    /// The `next_page_token` of the page before; absent for the first page.
    #[serde(default)]
    pub page_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HighlightJson {
    /// Byte offsets into the snippet's text: [start, end).
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SnippetJson {
    /// "prompt" or "response".
    pub field: String,
    pub text: String,
    pub highlights: Vec<HighlightJson>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHitJson {
    pub id: String,
    pub mailbox_id: String,
    pub thread_id: String,
    pub app: String,
    pub created_at: DateTime<Utc>,
    /// "active" or "holds_area".
    pub location: String,
    pub score: f32,
    pub snippets: Vec<SnippetJson>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchPageJson {
    pub hits: Vec<SearchHitJson>,
    /// Hits of the whole search (all pages).
    pub total: u64,
    pub counts_by_mailbox: BTreeMap<String, u64>,
    pub counts_by_app: BTreeMap<String, u64>,
    pub counts_by_location: BTreeMap<String, u64>,
    /// Empty on the last page.
    pub next_page_token: String,
}

impl From<SearchPage> for SearchPageJson {
    fn from(page: SearchPage) -> SearchPageJson {
        SearchPageJson {
            hits: page
                .hits
                .into_iter()
                .map(|hit| SearchHitJson {
                    id: hit.id.to_string(),
                    mailbox_id: hit.mailbox_id.to_string(),
                    thread_id: hit.thread_id,
                    app: hit.app,
                    created_at: hit.created_at,
                    location: match hit.location {
                        HitLocation::Active => "active",
                        HitLocation::HoldsArea => "holds_area",
                    }
                    .into(),
                    score: hit.score,
                    snippets: hit
                        .snippets
                        .into_iter()
                        .map(|snippet| SnippetJson {
                            field: snippet.field.into(),
                            text: snippet.text,
                            highlights: snippet
                                .highlights
                                .into_iter()
                                .map(|(start, end)| HighlightJson { start, end })
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
            total: page.total,
            counts_by_mailbox: page.counts_by_mailbox,
            counts_by_app: page.counts_by_app,
            counts_by_location: page.counts_by_location,
            next_page_token: page.next_page_token,
        }
    }
}

#[utoipa::path(post, path = "/api/v1/cases/{case_id}/search", tag = "search",
    params(("case_id" = String, Path, description = "The case's id (ULID)")),
    request_body = SearchJson,
    responses((status = 200, body = SearchPageJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn search(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(case_id): Path<String>,
    body: JsonBody<SearchJson>,
) -> Answer<SearchPageJson> {
    let body = body_of(&state, &principal, "Search", EDISCOVERY, body).await?;
    let sort = match body.sort.as_deref() {
        None | Some("" | "relevance") => Sort::Relevance,
        Some("newest") => Sort::Newest,
        Some("oldest") => Sort::Oldest,
        Some(_) => {
            return Err(ApiError::invalid(
                "sort",
                "must be relevance, newest or oldest",
            ))
        }
    };
    let request = SearchRequest {
        case_id,
        query: body.query,
        mailboxes: body.mailboxes,
        sort,
        page_size: body.page_size,
        page_token: body.page_token,
    };
    Ok(Json(state.app.search(&principal, request).await?.into()))
}

/// What to export from a case.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ExportJson {
    /// KQL; empty exports everything of the custodians.
    pub query: String,
    /// A subset of the case's custodians; absent or empty: all of them.
    pub mailboxes: Vec<String>,
    /// Resume after this id (the last one received).
    pub after_id: String,
}

/// One stored interaction as exported: `content` is the canonical content whose SHA-256 is
/// `content_sha256` (client_key, mailbox_id, thread_id, app, created_at, prompt, response,
/// model, plugins, accessed_resources, contexts, safety, sensitivity_label, attributes).
#[derive(Debug, Serialize, ToSchema)]
pub struct InteractionJson {
    pub id: String,
    pub received_at: DateTime<Utc>,
    pub content_sha256: String,
    /// "active" or "holds_area".
    pub location: String,
    /// In the holds area: "expired", "user_deleted" or "purge_requested".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub move_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub content: serde_json::Value,
    /// Tools and resources attached after the item was stored (the tool spans of its
    /// OpenTelemetry trace): `plugins`, `accessed_resources`, `updated_at`, `principal`. Not
    /// part of `content` or its digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub annex: Option<serde_json::Value>,
}

/// An item's location in JSON: "active" or "holds_area", and in the holds area why and
/// since when.
pub(super) fn location_json(
    location: holdfast_retention::ItemLocation,
) -> (String, Option<String>, Option<DateTime<Utc>>) {
    use holdfast_retention::ItemLocation;
    match location {
        ItemLocation::Active => ("active".into(), None, None),
        ItemLocation::HoldsArea { reason, moved_at } => (
            "holds_area".into(),
            Some(move_reason_name(reason).into()),
            Some(moved_at),
        ),
    }
}

/// A move reason's name in JSON.
pub(super) fn move_reason_name(reason: holdfast_retention::MoveReason) -> &'static str {
    use holdfast_retention::MoveReason;
    match reason {
        MoveReason::Expired => "expired",
        MoveReason::UserDeleted => "user_deleted",
        MoveReason::PurgeRequested => "purge_requested",
    }
}

impl From<StoredInteraction> for InteractionJson {
    fn from(item: StoredInteraction) -> InteractionJson {
        let (location, move_reason, moved_at) = location_json(item.location);
        InteractionJson {
            id: item.id.to_string(),
            received_at: item.received_at,
            content_sha256: hex::encode(item.content_sha256),
            location,
            move_reason,
            moved_at,
            content: serde_json::to_value(&item.content).unwrap_or_default(),
            annex: item
                .annex
                .map(|annex| serde_json::to_value(annex).unwrap_or_default()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportTrailerJson {
    /// Items sent by this call.
    pub count: u64,
    /// Hex SHA-256 over the content_sha256 of every item sent, in order, each followed by
    /// a newline.
    pub digest: String,
}

/// One line of an export (`application/x-ndjson`): an interaction, the trailer (last), or an
/// error that ended the export early (resume with `after_id`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportLine {
    Interaction(Box<InteractionJson>),
    Trailer(ExportTrailerJson),
    Error(ApiError),
}

#[utoipa::path(post, path = "/api/v1/cases/{case_id}/export", tag = "export",
    params(("case_id" = String, Path, description = "The case's id (ULID)")),
    request_body = ExportJson,
    responses(
        (status = 200, description = "One JSON object per line (`ExportLine`): every item, \
            then the trailer. The `x-holdfast-export-total` header gives the number of items.",
            content_type = "application/x-ndjson", body = ExportLine),
        (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn export(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(case_id): Path<String>,
    body: JsonBody<ExportJson>,
) -> Result<Response, ApiError> {
    let body = body_of(&state, &principal, "Export", EDISCOVERY, body).await?;
    let request = ExportRequest {
        case_id,
        query: body.query,
        mailboxes: body.mailboxes,
        after_id: body.after_id,
    };
    let export = state.app.export(&principal, request).await?;
    Ok(export_response(export))
}

/// An export as an HTTP answer: `application/x-ndjson`, one `ExportLine` per line, with the
/// item count in `x-holdfast-export-total` (the API and the console's download share it).
pub fn export_response(export: Export) -> Response {
    let lines = export.messages.map(|message| {
        let line = match message {
            Ok(ExportMessage::Item(item)) => ExportLine::Interaction(Box::new((*item).into())),
            Ok(ExportMessage::Trailer { count, digest }) => {
                ExportLine::Trailer(ExportTrailerJson { count, digest })
            }
            Err(error) => ExportLine::Error(error.into()),
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Ok::<_, std::convert::Infallible>(bytes)
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            ),
            (
                header::HeaderName::from_static("x-holdfast-export-total"),
                HeaderValue::from(export.total),
            ),
        ],
        axum::body::Body::from_stream(lines),
    )
        .into_response()
}

/// A hold. Case holds have a case, a name and optionally a query and created range.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldJson {
    pub id: String,
    /// "litigation", "delay" or "case".
    pub kind: String,
    pub mailboxes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_from: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_to: Option<DateTime<Utc>>,
    /// A litigation hold's length in days (absent: until released).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// A delay hold's end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
    /// For an active case hold: the stored items it covers now.
    pub items_held: u64,
}

pub(super) fn hold_json(record: HoldRecord, items_held: u64) -> HoldJson {
    let mut json = HoldJson {
        id: record.id.to_string(),
        kind: String::new(),
        mailboxes: record.mailboxes.iter().map(ToString::to_string).collect(),
        case_id: None,
        name: None,
        query: None,
        created_from: None,
        created_to: None,
        days: None,
        until: None,
        created_at: record.created_at,
        created_by: record.created_by,
        released_at: record.released_at,
        released_by: record.released_by,
        items_held,
    };
    match record.kind {
        HoldKind::Litigation { days } => {
            json.kind = "litigation".into();
            json.days = days;
        }
        HoldKind::Delay { until } => {
            json.kind = "delay".into();
            json.until = Some(until);
        }
        HoldKind::Case {
            case_id,
            name,
            query,
            created_from,
            created_to,
        } => {
            json.kind = "case".into();
            json.case_id = Some(case_id.to_string());
            json.name = Some(name);
            json.query = Some(query);
            json.created_from = created_from;
            json.created_to = created_to;
        }
    }
    json
}

impl From<HoldView> for HoldJson {
    fn from(view: HoldView) -> HoldJson {
        hold_json(view.record, view.items_held)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HoldListJson {
    pub holds: Vec<HoldJson>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, default)]
pub struct HoldListQuery {
    /// Include released holds.
    pub include_released: bool,
}

#[utoipa::path(get, path = "/api/v1/cases/{case_id}/holds", tag = "holds",
    params(("case_id" = String, Path, description = "The case's id (ULID)"), HoldListQuery),
    responses((status = 200, body = HoldListJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn list_case_holds(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(case_id): Path<String>,
    query: Result<Query<HoldListQuery>, QueryRejection>,
) -> Answer<HoldListJson> {
    let query = query_of(&state, &principal, "ListCaseHolds", EDISCOVERY, query).await?;
    let holds = state
        .app
        .list_case_holds(&principal, &case_id, query.include_released)
        .await?;
    Ok(Json(HoldListJson {
        holds: holds.into_iter().map(HoldJson::from).collect(),
    }))
}

/// A case hold to place.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCaseHoldJson {
    /// 1-200 characters.
    pub name: String,
    /// A subset of the case's custodians; absent or empty: all of them.
    #[serde(default)]
    pub custodians: Vec<String>,
    /// KQL; empty holds every item of the custodians. `location:` is refused.
    #[serde(default)]
    pub query: String,
    /// Only items created at or after this time (RFC 3339).
    #[serde(default)]
    pub created_from: Option<DateTime<Utc>>,
    /// Only items created before this time (RFC 3339).
    #[serde(default)]
    pub created_to: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/api/v1/cases/{case_id}/holds", tag = "holds",
    params(("case_id" = String, Path, description = "The case's id (ULID)")),
    request_body = NewCaseHoldJson,
    responses((status = 201, body = HoldJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn place_case_hold(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(case_id): Path<String>,
    body: JsonBody<NewCaseHoldJson>,
) -> Result<(StatusCode, Json<HoldJson>), ApiError> {
    let body = body_of(&state, &principal, "PlaceCaseHold", EDISCOVERY, body).await?;
    let new = NewCaseHold {
        case_id,
        name: body.name,
        custodians: body.custodians,
        query: body.query,
        created_from: body.created_from,
        created_to: body.created_to,
    };
    let view = state.app.place_case_hold(&principal, new).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

#[utoipa::path(post, path = "/api/v1/cases/{case_id}/holds/{hold_id}/release", tag = "holds",
    params(("case_id" = String, Path, description = "The case's id (ULID)"),
           ("hold_id" = String, Path, description = "The hold's id (ULID)")),
    responses((status = 200, body = HoldJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn release_case_hold(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path((case_id, hold_id)): Path<(String, String)>,
) -> Answer<HoldJson> {
    let record = state
        .app
        .release_case_hold(&principal, &case_id, &hold_id)
        .await?;
    Ok(Json(hold_json(record, 0)))
}

/// A search-and-purge.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeJson {
    /// KQL; required (a purge never selects every item).
    pub query: String,
    /// A subset of the case's custodians; absent or empty: all of them.
    #[serde(default)]
    pub mailboxes: Vec<String>,
    /// Select without moving anything.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurgeMailboxJson {
    pub mailbox_id: String,
    pub matched: u64,
    pub selected: u64,
    pub moved: u64,
    /// More matched than one purge may move: run it again for the rest.
    pub capped: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurgeReportJson {
    pub dry_run: bool,
    pub max_per_mailbox: u32,
    pub ids: Vec<String>,
    pub mailboxes: Vec<PurgeMailboxJson>,
}

impl From<PurgeReport> for PurgeReportJson {
    fn from(report: PurgeReport) -> PurgeReportJson {
        PurgeReportJson {
            dry_run: report.dry_run,
            max_per_mailbox: report.max_per_mailbox,
            ids: report.ids.iter().map(ToString::to_string).collect(),
            mailboxes: report
                .mailboxes
                .into_iter()
                .map(|mailbox| PurgeMailboxJson {
                    mailbox_id: mailbox.mailbox_id.to_string(),
                    matched: mailbox.matched,
                    selected: mailbox.selected,
                    moved: mailbox.moved,
                    capped: mailbox.capped,
                })
                .collect(),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/cases/{case_id}/purge", tag = "purge",
    params(("case_id" = String, Path, description = "The case's id (ULID)")),
    request_body = PurgeJson,
    responses((status = 200, body = PurgeReportJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn purge(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(case_id): Path<String>,
    body: JsonBody<PurgeJson>,
) -> Answer<PurgeReportJson> {
    let body = body_of(&state, &principal, "Purge", PURGE, body).await?;
    let request = PurgeRequest {
        case_id,
        query: body.query,
        mailboxes: body.mailboxes,
        dry_run: body.dry_run,
    };
    Ok(Json(state.app.purge(&principal, request).await?.into()))
}
