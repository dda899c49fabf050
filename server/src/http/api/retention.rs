//! Retention policies, litigation and delay holds, explanations, mailbox status, the sweeper
//! and dispositions over HTTP/JSON.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use holdfast_retention::decide::RetainUntil;
use holdfast_retention::policy::{Action, Period, Scope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::discovery::{hold_json, HoldJson, HoldListJson};
use super::{body_of, query_of, Answer, JsonBody};
use crate::app::policies::{action_name, PolicyPreview, PolicySpec};
use crate::app::policies::{RETENTION_ADMIN, RETENTION_READERS};
use crate::app::sweeps::DISPOSITIONS;
use crate::auth::Principal;
use crate::http::error::ApiError;
use crate::http::HttpState;
use crate::lifecycle::PolicyRecord;
use crate::sweeper::SweepStats;

/// A retention policy as written by a caller.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySpecJson {
    /// 1-200 characters, unique (case-insensitively).
    pub name: String,
    /// Every mailbox (except `exclude`), or only `include`.
    #[serde(default)]
    pub org_wide: bool,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Only items of these apps; empty: every app.
    #[serde(default)]
    pub apps: Vec<String>,
    /// "retain_only", "delete_only" or "retain_then_delete".
    pub action: String,
    /// The period in days from each item's creation; 0: forever (retain_only only).
    #[serde(default)]
    pub days: u32,
    /// Default true.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

impl PolicySpecJson {
    /// The application's spec. An unknown action becomes none, which the application refuses
    /// (and audits) as it does over gRPC.
    fn into_spec(self) -> PolicySpec {
        let action = match self.action.as_str() {
            "retain_only" => Some(Action::RetainOnly),
            "delete_only" => Some(Action::DeleteOnly),
            "retain_then_delete" => Some(Action::RetainThenDelete),
            _ => None,
        };
        PolicySpec {
            name: self.name,
            org_wide: self.org_wide,
            include: self.include,
            exclude: self.exclude,
            apps: self.apps,
            action,
            days: self.days,
            enabled: self.enabled,
        }
    }
}

/// A stored policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyJson {
    pub id: String,
    pub name: String,
    pub org_wide: bool,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub apps: Vec<String>,
    pub action: String,
    /// 0: forever.
    pub days: u32,
    pub enabled: bool,
    /// Preservation lock: the policy can only become stricter.
    pub locked: bool,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
}

impl From<&PolicyRecord> for PolicyJson {
    fn from(record: &PolicyRecord) -> PolicyJson {
        let policy = &record.policy;
        let (org_wide, include, exclude) = match &policy.scope {
            Scope::OrgWide { exclude } => (true, Vec::new(), exclude.iter().cloned().collect()),
            Scope::Include(include) => (false, include.iter().cloned().collect(), Vec::new()),
        };
        PolicyJson {
            id: record.id.to_string(),
            name: policy.name.clone(),
            org_wide,
            include,
            exclude,
            apps: policy.apps.iter().flatten().cloned().collect(),
            action: action_name(policy.action).into(),
            days: match policy.period {
                Period::Days(days) => days,
                Period::Forever => 0,
            },
            enabled: policy.enabled,
            locked: policy.locked,
            created_at: record.created_at,
            created_by: record.created_by.clone(),
            updated_at: record.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyListJson {
    pub policies: Vec<PolicyJson>,
}

#[utoipa::path(get, path = "/api/v1/policies", tag = "retention",
    responses((status = 200, body = PolicyListJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn list_policies(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
) -> Answer<PolicyListJson> {
    let policies = state.app.list_policies(&principal).await?;
    Ok(Json(PolicyListJson {
        policies: policies.iter().map(PolicyJson::from).collect(),
    }))
}

#[utoipa::path(post, path = "/api/v1/policies", tag = "retention", request_body = PolicySpecJson,
    responses((status = 201, body = PolicyJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn create_policy(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    body: JsonBody<PolicySpecJson>,
) -> Result<(StatusCode, Json<PolicyJson>), ApiError> {
    let body = body_of(&state, &principal, "CreatePolicy", RETENTION_ADMIN, body).await?;
    let record = state
        .app
        .create_policy(&principal, body.into_spec())
        .await?;
    Ok((StatusCode::CREATED, Json(PolicyJson::from(&record))))
}

#[utoipa::path(get, path = "/api/v1/policies/{policy_id}", tag = "retention",
    params(("policy_id" = String, Path, description = "The policy's id (ULID)")),
    responses((status = 200, body = PolicyJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn get_policy(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(policy_id): Path<String>,
) -> Answer<PolicyJson> {
    let record = state.app.get_policy(&principal, &policy_id).await?;
    Ok(Json(PolicyJson::from(&record)))
}

#[utoipa::path(put, path = "/api/v1/policies/{policy_id}", tag = "retention",
    params(("policy_id" = String, Path, description = "The policy's id (ULID)")),
    request_body = PolicySpecJson,
    responses((status = 200, body = PolicyJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn update_policy(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(policy_id): Path<String>,
    body: JsonBody<PolicySpecJson>,
) -> Answer<PolicyJson> {
    let body = body_of(&state, &principal, "UpdatePolicy", RETENTION_ADMIN, body).await?;
    let record = state
        .app
        .update_policy(&principal, &policy_id, body.into_spec())
        .await?;
    Ok(Json(PolicyJson::from(&record)))
}

/// An empty answer to a deletion.
#[derive(Debug, Serialize, ToSchema)]
pub struct DoneJson {
    pub done: bool,
}

#[utoipa::path(delete, path = "/api/v1/policies/{policy_id}", tag = "retention",
    params(("policy_id" = String, Path, description = "The policy's id (ULID)")),
    responses((status = 200, body = DoneJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn delete_policy(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(policy_id): Path<String>,
) -> Answer<DoneJson> {
    state.app.delete_policy(&principal, &policy_id).await?;
    Ok(Json(DoneJson { done: true }))
}

#[utoipa::path(post, path = "/api/v1/policies/{policy_id}/lock", tag = "retention",
    params(("policy_id" = String, Path, description = "The policy's id (ULID)")),
    responses((status = 200, body = PolicyJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn lock_policy(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(policy_id): Path<String>,
) -> Answer<PolicyJson> {
    let record = state.app.lock_policy(&principal, &policy_id).await?;
    Ok(Json(PolicyJson::from(&record)))
}

/// A policy to preview: new, or replacing `policy_id`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewJson {
    #[serde(default)]
    pub policy_id: String,
    pub spec: PolicySpecJson,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxPreviewJson {
    pub mailbox_id: String,
    pub items: u64,
    pub move_now: u64,
    pub destroyable: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewResultJson {
    pub items_examined: u64,
    pub total_move_now: u64,
    pub total_destroyable: u64,
    pub mailboxes: Vec<MailboxPreviewJson>,
}

impl From<PolicyPreview> for PreviewResultJson {
    fn from(preview: PolicyPreview) -> PreviewResultJson {
        PreviewResultJson {
            items_examined: preview.items_examined,
            total_move_now: preview.total_move_now,
            total_destroyable: preview.total_destroyable,
            mailboxes: preview
                .mailboxes
                .into_iter()
                .map(|m| MailboxPreviewJson {
                    mailbox_id: m.mailbox_id,
                    items: m.items,
                    move_now: m.move_now,
                    destroyable: m.destroyable,
                })
                .collect(),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/policies/preview", tag = "retention",
    request_body = PreviewJson,
    responses((status = 200, body = PreviewResultJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn preview_policy(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    body: JsonBody<PreviewJson>,
) -> Answer<PreviewResultJson> {
    let body = body_of(&state, &principal, "PreviewPolicy", RETENTION_ADMIN, body).await?;
    let preview = state
        .app
        .preview_policy(&principal, &body.policy_id, body.spec.into_spec())
        .await?;
    Ok(Json(preview.into()))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, default)]
pub struct HoldsQuery {
    /// Only the holds on this mailbox.
    pub mailbox_id: String,
    /// Include released holds.
    pub include_released: bool,
}

#[utoipa::path(get, path = "/api/v1/holds", tag = "retention", params(HoldsQuery),
    responses((status = 200, body = HoldListJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn list_holds(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<HoldsQuery>, QueryRejection>,
) -> Answer<HoldListJson> {
    let query = query_of(&state, &principal, "ListHolds", RETENTION_READERS, query).await?;
    let holds = state
        .app
        .list_holds(&principal, &query.mailbox_id, query.include_released)
        .await?;
    Ok(Json(HoldListJson {
        holds: holds.into_iter().map(|h| hold_json(h, 0)).collect(),
    }))
}

/// A litigation hold to place.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LitigationHoldJson {
    pub mailbox_id: String,
    /// Keep each item this many days from its creation; 0 or absent: until released.
    #[serde(default)]
    pub days: u32,
}

#[utoipa::path(post, path = "/api/v1/holds", tag = "retention", request_body = LitigationHoldJson,
    responses((status = 201, body = HoldJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn place_litigation_hold(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    body: JsonBody<LitigationHoldJson>,
) -> Result<(StatusCode, Json<HoldJson>), ApiError> {
    let body = body_of(
        &state,
        &principal,
        "PlaceLitigationHold",
        RETENTION_ADMIN,
        body,
    )
    .await?;
    let record = state
        .app
        .place_litigation_hold(&principal, &body.mailbox_id, body.days)
        .await?;
    Ok((StatusCode::CREATED, Json(hold_json(record, 0))))
}

#[utoipa::path(post, path = "/api/v1/holds/{hold_id}/release", tag = "retention",
    params(("hold_id" = String, Path, description = "The hold's id (ULID)")),
    responses((status = 200, body = HoldJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn release_hold(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(hold_id): Path<String>,
) -> Answer<HoldJson> {
    let record = state.app.release_hold(&principal, &hold_id).await?;
    Ok(Json(hold_json(record, 0)))
}

#[utoipa::path(post, path = "/api/v1/holds/{hold_id}/clear", tag = "retention",
    params(("hold_id" = String, Path, description = "The delay hold's id (ULID)")),
    responses((status = 200, body = HoldJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn clear_delay_hold(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(hold_id): Path<String>,
) -> Answer<HoldJson> {
    let record = state.app.clear_delay_hold(&principal, &hold_id).await?;
    Ok(Json(hold_json(record, 0)))
}

/// Why an item is still here, and until when (the item's metadata, never its content).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplanationJson {
    pub id: String,
    pub mailbox_id: String,
    /// "active" or "holds_area".
    pub location: String,
    /// In the holds area: "expired", "user_deleted" or "purge_requested".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub move_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Kept at least until then; absent with `retained_forever` or when nothing retains it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retain_until: Option<DateTime<Utc>>,
    pub retained_forever: bool,
    /// When it leaves (or left) the user's view; absent: never, by retention.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_at: Option<DateTime<Utc>>,
    /// The sweeper may destroy it now.
    pub destroyable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_check: Option<DateTime<Utc>>,
    /// Every rule that applies, in words.
    pub reasons: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/interactions/{id}/explain", tag = "retention",
    params(("id" = String, Path, description = "The interaction's id (ULID)")),
    responses((status = 200, body = ExplanationJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn explain_retention(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Answer<ExplanationJson> {
    let explanation = state.app.explain_retention(&principal, &id).await?;
    let decision = explanation.decision;
    let item = explanation.item;
    let (location, move_reason, moved_at) = super::discovery::location_json(item.location);
    Ok(Json(ExplanationJson {
        id: item.id.to_string(),
        mailbox_id: item.content.mailbox_id.to_string(),
        location,
        move_reason,
        moved_at,
        created_at: item.content.created_at,
        retain_until: match decision.retain_until {
            RetainUntil::Date(until) => Some(until),
            _ => None,
        },
        retained_forever: decision.retain_until == RetainUntil::Forever,
        delete_at: decision.delete_at,
        destroyable: decision.destroyable,
        next_check: decision.next_check,
        reasons: explanation.reasons,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxStatusJson {
    pub mailbox_id: String,
    pub active_items: u64,
    pub holds_area_items: u64,
    pub policies: Vec<PolicyJson>,
    pub holds: Vec<HoldJson>,
    /// Applies where no policy does; 0: keep forever.
    pub default_retention_days: u32,
}

#[utoipa::path(get, path = "/api/v1/mailboxes/{mailbox_id}/status", tag = "retention",
    params(("mailbox_id" = String, Path, description = "The mailbox")),
    responses((status = 200, body = MailboxStatusJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn mailbox_status(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    Path(mailbox_id): Path<String>,
) -> Answer<MailboxStatusJson> {
    let status = state.app.mailbox_status(&principal, &mailbox_id).await?;
    Ok(Json(MailboxStatusJson {
        mailbox_id: status.mailbox.to_string(),
        active_items: status.active_items,
        holds_area_items: status.holds_area_items,
        policies: status.policies.iter().map(PolicyJson::from).collect(),
        holds: status.holds.into_iter().map(|h| hold_json(h, 0)).collect(),
        default_retention_days: status.default_retention_days,
    }))
}

/// What a sweeper pass did (or all passes since start, for totals).
#[derive(Debug, Serialize, ToSchema)]
pub struct SweepStatsJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    pub duration_ms: u64,
    pub examined: u64,
    pub moved: u64,
    pub destroyed: u64,
    pub skipped_held: u64,
    pub errors: u64,
    pub item_errors: u64,
    /// Case holds whose query could not be evaluated (id → why); each kept everything of
    /// its custodians.
    pub unevaluable_holds: BTreeMap<String, String>,
}

impl From<&SweepStats> for SweepStatsJson {
    fn from(stats: &SweepStats) -> SweepStatsJson {
        SweepStatsJson {
            started_at: stats.started_at,
            duration_ms: stats.duration_ms,
            examined: stats.examined,
            moved: stats.moved,
            destroyed: stats.destroyed,
            skipped_held: stats.skipped_held,
            errors: stats.errors,
            item_errors: stats.item_errors,
            unevaluable_holds: stats.unevaluable_holds.clone(),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/sweeper/run", tag = "retention",
    responses((status = 200, body = SweepStatsJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn run_sweep(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
) -> Answer<SweepStatsJson> {
    let stats = state.app.run_sweep(&principal).await?;
    Ok(Json(SweepStatsJson::from(&stats)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SweeperStatusJson {
    pub running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<SweepStatsJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub totals: SweepStatsJson,
    pub interval_seconds: u64,
    pub replan_pending: bool,
    pub erasure_pending: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erasure_oldest: Option<DateTime<Utc>>,
    pub erasure_bound_seconds: u64,
    pub erased_total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_erasure_error: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/sweeper", tag = "retention",
    responses((status = 200, body = SweeperStatusJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn sweeper_status(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
) -> Answer<SweeperStatusJson> {
    let report = state.app.sweeper_status(&principal).await?;
    let status = report.status;
    Ok(Json(SweeperStatusJson {
        running: status.running,
        last_run: status.last_run.as_ref().map(SweepStatsJson::from),
        last_error: status.last_error,
        totals: SweepStatsJson::from(&status.totals),
        interval_seconds: status.interval_seconds,
        replan_pending: report.replan_pending,
        erasure_pending: report.erasure_pending,
        erasure_oldest: report.erasure_oldest,
        erasure_bound_seconds: report.erasure_bound_seconds,
        erased_total: status.erased_total,
        last_erasure_error: status.last_erasure_error,
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, default)]
pub struct DispositionsQuery {
    /// Only this mailbox's records.
    pub mailbox_id: String,
    /// 1-1000, default 100.
    pub page_size: u32,
    pub page_token: String,
}

/// The record of one destroyed item (no content).
#[derive(Debug, Serialize, ToSchema)]
pub struct DispositionJson {
    pub id: String,
    pub mailbox_id: String,
    pub content_sha256: String,
    pub created_at: DateTime<Utc>,
    pub moved_at: DateTime<Utc>,
    pub purged_at: DateTime<Utc>,
    /// Why it went to the holds area: "expired", "user_deleted" or "purge_requested".
    pub reason: String,
    /// The policies that applied ("default" for the default retention).
    pub policies: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DispositionPageJson {
    pub dispositions: Vec<DispositionJson>,
    pub next_page_token: String,
}

#[utoipa::path(get, path = "/api/v1/dispositions", tag = "retention", params(DispositionsQuery),
    responses((status = 200, body = DispositionPageJson), (status = "4XX", body = ApiError)),
    security(("bearer" = [])))]
pub(super) async fn list_dispositions(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<DispositionsQuery>, QueryRejection>,
) -> Answer<DispositionPageJson> {
    let query = query_of(&state, &principal, "ListDispositions", DISPOSITIONS, query).await?;
    let page = state
        .app
        .list_dispositions(
            &principal,
            &query.mailbox_id,
            query.page_size,
            &query.page_token,
        )
        .await?;
    Ok(Json(DispositionPageJson {
        dispositions: page
            .dispositions
            .into_iter()
            .map(|d| DispositionJson {
                id: d.id.to_string(),
                mailbox_id: d.mailbox.to_string(),
                content_sha256: d.content_sha256,
                created_at: d.created_at,
                moved_at: d.moved_at,
                purged_at: d.purged_at,
                reason: super::discovery::move_reason_name(d.reason).into(),
                policies: d.policies,
            })
            .collect(),
        next_page_token: page.next_page_token,
    }))
}
