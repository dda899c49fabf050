//! gRPC services. Each handler authorises first (auditing refusals), converts the request
//! into domain types, does its work off the async workers when it blocks, and maps errors to
//! `Status` through `Error`'s one mapping.

mod admin;
mod audit;
mod discovery;
mod discovery_support;
mod interactions;
mod retention;

use std::sync::Arc;

use chrono::Utc;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};

pub use admin::AdminApi;
pub use audit::AuditApi;
pub use discovery::DiscoveryApi;
pub use interactions::InteractionApi;
pub use retention::RetentionApi;

use crate::admission::Admission;
use crate::audit::{AuditEvent, AuditLog};
use crate::audit_intent::AuditIntent;
use crate::auth::{Principal, Role, TokenRegistry};
use crate::config::{ConcurrencyConfig, Limits, RetentionConfig};
use crate::error::Error;
use crate::ingest::GroupCommitter;
use crate::page_token::PageTokens;
use crate::refusals::Refusals;
use crate::retention::Rules;
use crate::search::index::SearchIndex;
use crate::search::searcher::Snapshots;
use crate::store::Store;
use crate::sweeper::{SweepRequest, Sweeper};
use crate::workers::WorkerPool;

/// What every service shares.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub tokens: Arc<TokenRegistry>,
    pub audit: Arc<AuditLog>,
    pub committer: GroupCommitter,
    pub index: Arc<SearchIndex>,
    /// Index snapshots pinned for paging through search results.
    pub snapshots: Snapshots,
    /// Issues and checks every page token (HMAC with the key kept in the store).
    pub page_tokens: PageTokens,
    pub limits: Limits,
    pub retention: RetentionConfig,
    pub rules: Arc<Rules>,
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
    pub backup_running: std::sync::Mutex<()>,
    /// Ingest pauses below this much free space on the data volume (0: never).
    pub min_free_disk_bytes: u64,
}

/// Actor name recorded for calls without a valid token.
pub const ANONYMOUS: &str = "anonymous";

impl Shared {
    /// Authenticates the caller and checks that it holds one of `allowed`. Refusals are
    /// audited and answered with UNAUTHENTICATED (RESOURCE_EXHAUSTED past the source's rate)
    /// or PERMISSION_DENIED.
    pub async fn authorize<T>(
        &self,
        request: &Request<T>,
        action: &'static str,
        allowed: &[Role],
    ) -> Result<Principal, Status> {
        let token = match bearer_token(request) {
            Ok(token) => self
                .tokens
                .authenticate(token)
                .ok_or_else(|| "unknown bearer token".to_string()),
            Err(reason) => Err(reason),
        };
        let principal = match token {
            Ok(principal) => principal,
            // The gate (`gate.rs`) refuses these before the body is read; a token revoked
            // between the gate and here ends the same way.
            Err(reason) => {
                let source = request.remote_addr().map(|address| address.ip());
                return Err(crate::gate::refuse_anonymous(
                    &self.refusals,
                    source,
                    action,
                    &reason,
                ));
            }
        };
        if principal.has_any(allowed) {
            return Ok(principal);
        }
        let needed: Vec<&str> = allowed.iter().map(|role| role.as_str()).collect();
        let error = Error::PermissionDenied(format!(
            "{action} needs one of the roles {}",
            needed.join(", ")
        ));
        tracing::info!(actor = principal.name.as_str(), action, %error, "refused call");
        metrics::counter!("holdfast_refused_calls_total", "action" => action).increment(1);
        let _ = self
            .audit
            .append(AuditEvent {
                actor: principal.name,
                action,
                target: String::new(),
                parameters: json!({}),
                result: format!("denied: {error}"),
            })
            .await;
        Err(error.into())
    }

    /// Audits the outcome of a change, "ok" or "refused: <why>", then returns it.
    pub async fn audited<T>(
        &self,
        principal: &Principal,
        action: &'static str,
        target: String,
        parameters: serde_json::Value,
        outcome: Result<T, Error>,
    ) -> Result<T, Status> {
        let result = match &outcome {
            Ok(_) => "ok".to_string(),
            Err(error) => format!("refused: {error}"),
        };
        self.audit_done(principal, action, target, parameters, result)
            .await?;
        outcome.map_err(Status::from)
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
    ) -> Result<T, Status> {
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
        outcome.map_err(Status::from)
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
    ) -> Result<(), Status> {
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
                Status::unavailable(format!(
                    "{action} was carried out but could not be audited: {error}"
                ))
            })
    }
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

fn bearer_token<T>(request: &Request<T>) -> Result<&str, String> {
    let value = request
        .metadata()
        .get("authorization")
        .ok_or("missing authorization metadata (expected `Bearer <token>`)")?;
    parse_bearer(value.as_encoded_bytes())
}

/// The token of an `authorization` value `Bearer <token>`.
pub fn parse_bearer(value: &[u8]) -> Result<&str, String> {
    let value = std::str::from_utf8(value)
        .ok()
        .filter(|value| value.is_ascii())
        .ok_or("authorization metadata is not ASCII")?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| "authorization metadata must be `Bearer <token>`".to_string())
}

impl Shared {
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

/// Runs blocking work (RocksDB scans, syncs) off the async workers.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    crate::admission::run_blocking(work).await
}

pub fn now() -> chrono::DateTime<Utc> {
    Utc::now()
}

/// Page sizes: 0 means the default of 100; more than 1,000 is refused.
pub fn page_size(requested: u32) -> Result<usize, Error> {
    match requested {
        0 => Ok(100),
        1..=1000 => Ok(requested as usize),
        _ => Err(Error::invalid("page_size", "must be at most 1000")),
    }
}
