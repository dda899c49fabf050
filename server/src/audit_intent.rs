//! Audit intents: an action that changes retention rules stores, in the same atomic write as
//! the change, the audit entry it owes. The entry is appended to the audit log once the
//! change is saved and the intent is then removed; if the process stops in between, the
//! next start appends every entry still owed (`recover`). So a saved change is never left
//! unaudited, and a change that was not saved leaves no intent behind.
//!
//! The audit log itself (`audit.rs`) is not involved: an intent is an ordinary record of the
//! store, and recovery appends through the log's usual path.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::audit::{AuditEvent, AuditLog, AuditRecord};
use crate::store::{Store, StoreError};

/// An audit entry owed by a saved change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditIntent {
    pub id: Ulid,
    /// The last audit sequence when the change was saved (set by the store write): the
    /// entry owed, if it was appended, comes after it.
    pub after_sequence: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub parameters: serde_json::Value,
}

impl AuditIntent {
    pub fn new(
        actor: &str,
        action: &str,
        target: &str,
        parameters: &serde_json::Value,
    ) -> AuditIntent {
        AuditIntent {
            id: Ulid::new(),
            after_sequence: 0,
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            parameters: parameters.clone(),
        }
    }

    /// Whether `record` is the entry this intent owes.
    fn is_audited_by(&self, record: &AuditRecord) -> bool {
        record.actor == self.actor
            && record.action == self.action
            && record.target == self.target
            && record.parameters == self.parameters
            && record.result.starts_with("ok")
    }
}

/// Result of an entry appended at start for a change saved before a crash.
pub const RECOVERED_RESULT: &str =
    "ok (audited at start: the server stopped after saving the change, before auditing it)";

/// Appends every audit entry still owed (an entry already appended is not repeated) and
/// removes the intents. Returns how many entries were appended. Runs at start, before any
/// request is served.
pub fn recover(store: &dyn Store, audit: &AuditLog, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let mut appended = 0;
    for intent in store.audit_intents()? {
        if !already_audited(store, &intent)? {
            // `AuditEvent::action` is a static name: the intents' actions are the services'.
            let action: &'static str = Box::leak(intent.action.clone().into_boxed_str());
            audit.append_blocking(
                AuditEvent {
                    actor: intent.actor.clone(),
                    action,
                    target: intent.target.clone(),
                    parameters: intent.parameters.clone(),
                    result: RECOVERED_RESULT.to_string(),
                },
                now,
            )?;
            tracing::warn!(
                action = intent.action,
                target = intent.target,
                "audited a change saved just before the server stopped"
            );
            appended += 1;
        }
        store.clear_audit_intent(intent.id)?;
    }
    Ok(appended)
}

fn already_audited(store: &dyn Store, intent: &AuditIntent) -> Result<bool, StoreError> {
    let mut next = intent.after_sequence + 1;
    loop {
        let chunk = store.scan_audit_records(next, 1024)?;
        let Some(last) = chunk.last() else {
            return Ok(false);
        };
        if chunk.iter().any(|record| intent.is_audited_by(record)) {
            return Ok(true);
        }
        next = last.sequence + 1;
    }
}
