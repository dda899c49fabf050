//! The application layer: every operation holdfast offers, taking plain Rust types and the
//! caller's `Principal`, returning domain results and `Error`. Authorisation (with the audit
//! entry of a refusal) and the audit entry of every action happen here, once, whatever front
//! door the call came through (gRPC in `service/`, HTTP/JSON in `http/`). A front door
//! authenticates the caller (`App::authenticate`), decodes, calls, and encodes.

pub mod admin;
pub mod audit_log;
pub mod cases;
pub mod explain;
pub mod export;
pub mod holds;
pub mod ingest;
pub mod interactions;
pub(crate) mod matches;
pub mod otlp;
pub mod policies;
pub mod purge;
pub mod search;
pub mod sweeps;

use std::net::IpAddr;
use std::sync::Arc;

use chrono::Utc;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::audit::{AuditEvent, AuditLog};
use crate::audit_intent::AuditIntent;
use crate::auth::{Principal, Role, TokenRegistry};
use crate::config::{ConcurrencyConfig, Limits, RetentionConfig};
use crate::error::Error;
use crate::ingest::GroupCommitter;
use crate::lifecycle::Lifecycle;
use crate::page_token::PageTokens;
use crate::refusals::Refusals;
use crate::search::index::SearchIndex;
use crate::search::searcher::Snapshots;
use crate::store::Store;
use crate::sweeper::{SweepRequest, Sweeper};
use crate::workers::WorkerPool;

/// The application: what every front door shares, and the operations (in this module's
/// files, one per domain).
pub struct App {
    pub store: Arc<dyn Store>,
    pub tokens: Arc<TokenRegistry>,
    pub audit: Arc<AuditLog>,
    pub committer: GroupCommitter,
    pub index: Arc<SearchIndex>,
    /// Index snapshots pinned for paging through search results.
    pub snapshots: Snapshots,
    /// In a cluster searching splits: fanned-out searches, and the plans (split sets) pinned
    /// for paging through them.
    pub fanout: Option<Arc<crate::search::fanout::FanOut>>,
    pub pinned_plans: Snapshots<Arc<crate::search::splits::Plan>>,
    /// Issues and checks every page token (HMAC with the key kept in the store).
    pub page_tokens: PageTokens,
    pub limits: Limits,
    pub retention: RetentionConfig,
    pub lifecycle: Arc<Lifecycle>,
    pub sweeper: Arc<Sweeper>,
    /// Asks the sweeper thread for a pass now.
    pub sweep_requests: std::sync::mpsc::SyncSender<SweepRequest>,
    /// Cancelled when the server begins to shut down: streams stop taking new batches.
    pub shutdown: CancellationToken,
    pub concurrency: ConcurrencyConfig,
    /// Per-principal limits and the bounds on long operations and export reads.
    pub admission: Arc<Admission>,
    /// Threads reserved for validating ingest batches.
    pub ingest_workers: WorkerPool,
    /// Calls without a valid token: rate limits and their audit per source and window.
    pub refusals: Arc<Refusals>,
    /// The data directory (backups copy its key files).
    pub data_dir: std::path::PathBuf,
    /// Held while a backup runs: one at a time.
    pub backup_running: Arc<tokio::sync::Mutex<()>>,
    /// Ingest pauses below this much free space on the data volume (0: never).
    pub min_free_disk_bytes: u64,
    /// Held across every read-modify-write of a case and across placing a case hold, so that
    /// a racing UpdateCase cannot reopen a closed case and CloseCase cannot miss a hold being
    /// placed (cases change rarely: one lock for all of them costs nothing).
    pub cases_lock: tokio::sync::Mutex<()>,
    /// OTLP trace ingest: its settings and the tools remembered per trace.
    pub otlp: otlp::OtlpSettings,
}

/// Who may work with cases, search, export and case holds.
pub const EDISCOVERY: &[Role] = &[Role::Ediscovery, Role::EdiscoveryAdmin];

/// Actor name recorded for calls without a valid token.
pub const ANONYMOUS: &str = "anonymous";

impl App {
    /// Authenticates a caller from the value of its `authorization` header (or gRPC
    /// metadata), `Bearer <token>`. A missing or unknown token is counted against `source`
    /// (see `refusals.rs`) and answered with UNAUTHENTICATED, or RESOURCE_EXHAUSTED once the
    /// source is past its rate.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        source: Option<IpAddr>,
        action: &str,
    ) -> Result<Principal, Error> {
        let token = match authorization {
            Some(value) => parse_bearer(value),
            None => Err("missing authorization (expected `Bearer <token>`)".to_string()),
        };
        let principal = token.and_then(|token| {
            self.tokens
                .authenticate(token)
                .ok_or_else(|| "unknown bearer token".to_string())
        });
        principal.map_err(|reason| refuse_anonymous(&self.refusals, source, action, &reason))
    }

    /// Checks that `principal` holds one of `allowed`. A refusal is audited and answered
    /// with PERMISSION_DENIED.
    pub async fn authorize(
        &self,
        principal: &Principal,
        action: &'static str,
        allowed: &[Role],
    ) -> Result<(), Error> {
        if principal.has_any(allowed) {
            return Ok(());
        }
        let needed: Vec<&str> = allowed.iter().map(|role| role.as_str()).collect();
        let error = Error::PermissionDenied(format!(
            "{action} needs one of the roles {}",
            needed.join(", ")
        ));
        self.audit_refusal(principal, action, String::new(), &error)
            .await;
        Err(error)
    }

    /// Logs, counts and audits a refused call ("denied: <why>"). A refusal that cannot be
    /// audited is logged; the caller is refused either way.
    pub async fn audit_refusal(
        &self,
        principal: &Principal,
        action: &'static str,
        target: String,
        error: &Error,
    ) {
        tracing::info!(actor = principal.name.as_str(), action, %error, "refused call");
        metrics::counter!("holdfast_refused_calls_total", "action" => action).increment(1);
        if let Err(audit_error) = self
            .audit_done(
                principal,
                action,
                target,
                json!({}),
                format!("denied: {error}"),
            )
            .await
        {
            tracing::warn!(action, error = %audit_error, "a refusal could not be audited");
        }
    }

    /// Audits the outcome of a change, "ok" or "refused: <why>", then returns it.
    pub async fn audited<T>(
        &self,
        principal: &Principal,
        action: &'static str,
        target: String,
        parameters: serde_json::Value,
        outcome: Result<T, Error>,
    ) -> Result<T, Error> {
        let result = match &outcome {
            Ok(_) => "ok".to_string(),
            Err(error) => format!("refused: {error}"),
        };
        self.audit_done(principal, action, target, parameters, result)
            .await?;
        outcome
    }

    /// `audited` for a change saved together with `intent` (its audit intent, see
    /// `audit_intent.rs`): once the entry is appended the intent is removed. If the process
    /// stops first, the next start appends the entry from the intent.
    pub async fn audited_intent<T>(
        &self,
        principal: &Principal,
        action: &'static str,
        intent: AuditIntent,
        outcome: Result<T, Error>,
    ) -> Result<T, Error> {
        let result = match &outcome {
            Ok(_) => "ok".to_string(),
            Err(error) => format!("refused: {error}"),
        };
        self.audit_done(
            principal,
            action,
            intent.target.clone(),
            intent.parameters.clone(),
            result,
        )
        .await?;
        // A refused change saved nothing, so removing its intent is a no-op. A failure here
        // only means recovery finds the entry already appended at the next start.
        let store = Arc::clone(&self.store);
        if let Err(error) = blocking(move || Ok(store.clear_audit_intent(intent.id)?)).await {
            tracing::warn!(action, %error, "cannot remove an audit intent");
        }
        outcome
    }

    /// Records a completed compliance action. If the entry cannot be written the caller gets
    /// an error saying so, so that an unaudited action is never reported as a plain success.
    pub async fn audit_done(
        &self,
        principal: &Principal,
        action: &'static str,
        target: String,
        parameters: serde_json::Value,
        result: String,
    ) -> Result<(), Error> {
        self.audit
            .append(AuditEvent {
                actor: principal.name.clone(),
                action,
                target,
                parameters,
                result,
            })
            .await
            .map(|_| ())
            .map_err(|error| {
                Error::Unavailable(format!(
                    "{action} was carried out but could not be audited: {error}"
                ))
            })
    }

    /// Refuses new items while the data volume is nearly full (`min_free_disk_mb`).
    pub fn check_disk_space(&self) -> Result<(), Error> {
        if self.min_free_disk_bytes == 0 {
            return Ok(());
        }
        match crate::disk::free_bytes(&self.data_dir) {
            Ok(free) if free < self.min_free_disk_bytes => {
                metrics::counter!("holdfast_ingest_refused_disk_full_total").increment(1);
                Err(Error::ResourceExhausted(format!(
                    "no space for new items: the data volume has {} MiB free, below \
                     min_free_disk_mb ({} MiB); nothing was written, ingest resumes once \
                     space is freed",
                    free >> 20,
                    self.min_free_disk_bytes >> 20
                )))
            }
            // Unknown free space: let the write decide (ENOSPC is RESOURCE_EXHAUSTED too).
            _ => Ok(()),
        }
    }
}

/// Counts a call without a valid token and says what to answer: UNAUTHENTICATED, or
/// RESOURCE_EXHAUSTED once the source is past its rate.
pub fn refuse_anonymous(
    refusals: &Refusals,
    source: Option<IpAddr>,
    action: &str,
    reason: &str,
) -> Error {
    metrics::counter!("holdfast_refused_calls_total", "action" => "unauthenticated").increment(1);
    if refusals.record(source, action) {
        metrics::counter!("holdfast_rate_limited_calls_total").increment(1);
        return Error::ResourceExhausted(
            "too many calls without a valid token from this address; slow down".into(),
        );
    }
    tracing::debug!(%reason, "refused call without a valid token");
    Error::Unauthenticated(reason.to_string())
}

/// The token of an `authorization` value `Bearer <token>`.
pub fn parse_bearer(value: &[u8]) -> Result<&str, String> {
    let value = std::str::from_utf8(value)
        .ok()
        .filter(|value| value.is_ascii())
        .ok_or("authorization is not ASCII")?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| "authorization must be `Bearer <token>`".to_string())
}

/// Records a compliance action from the thread that carried it out (blocking), so that the
/// action and its entry cannot be split by a cancelled call: both run in the same closure,
/// which finishes even if the caller has gone. If the entry cannot be written the caller gets
/// an error saying so.
pub fn audit_blocking(audit: &AuditLog, event: AuditEvent) -> Result<(), Error> {
    let action = event.action;
    audit
        .append_blocking(event, now())
        .map(|_| ())
        .map_err(|error| {
            tracing::error!(action, %error, "cannot append to the audit log");
            Error::Unavailable(format!(
                "{action} was carried out but could not be audited: {error}"
            ))
        })
}

/// Appends the entry of a long action saved beforehand as `intent` (see
/// `AuditIntent::save_before`) and removes the intent. Runs in the action's blocking closure.
pub fn audit_settling(
    store: &dyn Store,
    audit: &AuditLog,
    intent: &AuditIntent,
    mut event: AuditEvent,
) -> Result<(), Error> {
    event.parameters = intent.name_in(event.parameters);
    audit_blocking(audit, event)?;
    // A failure here only means the next start finds the entry already appended.
    if let Err(error) = store.clear_audit_intent(intent.id) {
        tracing::warn!(action = intent.action, %error, "cannot remove an audit intent");
    }
    Ok(())
}

/// Runs blocking work (RocksDB scans, syncs) off the async workers.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    crate::admission::run_blocking(work).await
}

pub fn now() -> chrono::DateTime<Utc> {
    Utc::now()
}

/// Page sizes of lists: 0 means the default of 100; more than 1,000 is refused.
pub fn page_size(requested: u32) -> Result<usize, Error> {
    match requested {
        0 => Ok(100),
        1..=1000 => Ok(requested as usize),
        _ => Err(Error::invalid("page_size", "must be at most 1000")),
    }
}

/// Parses a ULID named by `field` ("case_id", "hold_id", ...): the one parser of ids a caller
/// sends, with one message.
pub fn parse_ulid(field: &str, text: &str) -> Result<ulid::Ulid, Error> {
    ulid::Ulid::from_string(text)
        .map_err(|_| Error::invalid(field, "not an id (26-character ULID)"))
}
