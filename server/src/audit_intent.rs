//! Audit intents: an action that changes retention rules stores, in the same atomic write as
//! the change, the audit entry it owes. The entry is appended to the audit log once the
//! change is saved and the intent is then removed; if the process stops in between, the
//! next start appends every entry still owed (`recover`). So a saved change is never left
//! unaudited, and a change that was not saved leaves no intent behind.
//!
//! The audit log itself (`audit.rs`) is not involved: an intent is an ordinary record of the
//! store, and recovery appends through the log's usual path.

use chrono::{DateTime, Utc};
use ulid::Ulid;

use crate::audit::{AuditEvent, AuditLog, AuditRecord};
use crate::store::{Store, StoreError};

pub use crate::records::AuditIntent;

/// The parameter of an audit entry that names the intent it settles.
pub const INTENT_PARAMETER: &str = "audit_intent";

impl AuditIntent {
    pub fn new(
        actor: &str,
        action: &str,
        target: &str,
        parameters: &serde_json::Value,
    ) -> AuditIntent {
        let mut intent = AuditIntent {
            id: Ulid::new(),
            after_sequence: 0,
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            parameters: serde_json::Value::Null,
            interrupted: false,
        };
        // The entry carries the intent's id, so that recovery tells two identical changes
        // apart (one audited, the other not) by id rather than by their equal contents.
        intent.parameters = intent.name_in(parameters.clone());
        intent
    }

    /// Saves this intent before a long action begins (marked `interrupted` until the
    /// action's own entry is appended): a crash during the action still leaves it audited.
    pub fn save_before(mut self, store: &dyn Store) -> Result<AuditIntent, StoreError> {
        self.interrupted = true;
        store.write_rules(&crate::store::RulesWrite {
            audit_intent: Some(self.clone()),
            ..crate::store::RulesWrite::default()
        })?;
        Ok(self)
    }

    /// `parameters` (an object) with this intent's id added, for the entry that settles it.
    pub fn name_in(&self, parameters: serde_json::Value) -> serde_json::Value {
        let mut parameters = match parameters {
            serde_json::Value::Object(map) => map,
            other => {
                let mut map = serde_json::Map::new();
                map.insert("value".into(), other);
                map
            }
        };
        parameters.insert(
            INTENT_PARAMETER.into(),
            serde_json::Value::String(self.id.to_string()),
        );
        serde_json::Value::Object(parameters)
    }

    /// Whether `record` is the entry this intent owes: the entry names the intent's id.
    fn is_audited_by(&self, record: &AuditRecord) -> bool {
        let id = self.id.to_string();
        record.action == self.action
            && record
                .parameters
                .get(INTENT_PARAMETER)
                .and_then(|v| v.as_str())
                == Some(&id)
    }
}

/// Result of an entry appended at start for a change saved before a crash.
pub const RECOVERED_RESULT: &str =
    "ok (audited at start: the server stopped after saving the change, before auditing it)";

/// Result of an entry appended at start for a long action the server stopped during.
pub const INTERRUPTED_RESULT: &str = "interrupted (audited at start: the server stopped while \
     this action ran; part of it may be done, and running it again completes it)";

/// Appends every audit entry still owed (an entry already appended is not repeated) and
/// removes the intents. Returns how many entries were appended. Runs at start, before any
/// request is served.
pub fn recover(store: &dyn Store, audit: &AuditLog, now: DateTime<Utc>) -> Result<u64, StoreError> {
    recover_older_than(store, audit, now, chrono::TimeDelta::zero())
}

/// `recover`, for the intents saved at least `age` before `now` only. In a cluster another
/// live node may be between saving a change and appending its entry: only intents older than
/// any such step are a stopped process's.
pub fn recover_older_than(
    store: &dyn Store,
    audit: &AuditLog,
    now: DateTime<Utc>,
    age: chrono::TimeDelta,
) -> Result<u64, StoreError> {
    let mut appended = 0;
    let saved_before = (now - age).timestamp_millis();
    for intent in store.audit_intents()? {
        // An intent's id is a ULID made when it was saved.
        if age > chrono::TimeDelta::zero()
            && i64::try_from(intent.id.timestamp_ms()).unwrap_or(i64::MAX) > saved_before
        {
            continue;
        }
        if !already_audited(store, &intent)? {
            // `AuditEvent::action` is a static name: the intents' actions are the services'.
            let action: &'static str = Box::leak(intent.action.clone().into_boxed_str());
            audit.append_blocking(
                AuditEvent {
                    actor: intent.actor.clone(),
                    action,
                    target: intent.target.clone(),
                    parameters: intent.parameters.clone(),
                    result: if intent.interrupted {
                        INTERRUPTED_RESULT
                    } else {
                        RECOVERED_RESULT
                    }
                    .to_string(),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::store::{RocksStore, RulesWrite};

    fn save(store: &dyn Store, intent: &AuditIntent) {
        store
            .write_rules(&RulesWrite {
                audit_intent: Some(intent.clone()),
                ..RulesWrite::default()
            })
            .unwrap();
    }

    #[test]
    fn two_identical_changes_are_told_apart_by_their_intent() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
        let audit = AuditLog::open(store.clone()).unwrap();
        let parameters = json!({"retain_days": 30});
        // Two racing, identical changes are saved; only the first is audited before a crash.
        let first = AuditIntent::new("admin", "UpdatePolicy", "p1", &parameters);
        let second = AuditIntent::new("admin", "UpdatePolicy", "p1", &parameters);
        save(store.as_ref(), &first);
        save(store.as_ref(), &second);
        audit
            .append_blocking(
                AuditEvent {
                    actor: "admin".into(),
                    action: "UpdatePolicy",
                    target: "p1".into(),
                    parameters: first.parameters.clone(),
                    result: "ok".into(),
                },
                Utc::now(),
            )
            .unwrap();
        assert_eq!(recover(store.as_ref(), &audit, Utc::now()).unwrap(), 1);
        assert!(store.audit_intents().unwrap().is_empty());
        let records = store.scan_audit_records(1, 10).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].result, RECOVERED_RESULT);
        assert_eq!(
            records[1].parameters[INTENT_PARAMETER],
            second.id.to_string()
        );
        assert_eq!(records[1].parameters["retain_days"], 30);
        // Nothing is owed any more: a second recovery appends nothing.
        assert_eq!(recover(store.as_ref(), &audit, Utc::now()).unwrap(), 0);
    }

    #[test]
    fn a_long_action_interrupted_by_a_crash_is_audited_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
        let audit = AuditLog::open(store.clone()).unwrap();
        let intent = AuditIntent::new("backend", "DeleteHistory", "alice@contoso.com", &json!({}))
            .save_before(store.as_ref())
            .unwrap();
        // The process stops during the action.
        assert_eq!(recover(store.as_ref(), &audit, Utc::now()).unwrap(), 1);
        let records = store.scan_audit_records(1, 10).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].action, "DeleteHistory");
        assert_eq!(records[0].result, INTERRUPTED_RESULT);
        assert_eq!(
            records[0].parameters[INTENT_PARAMETER],
            intent.id.to_string()
        );

        // Finished and settled: nothing is owed.
        let intent = AuditIntent::new("backend", "DeleteHistory", "bob@contoso.com", &json!({}))
            .save_before(store.as_ref())
            .unwrap();
        audit
            .append_blocking(
                AuditEvent {
                    actor: "backend".into(),
                    action: "DeleteHistory",
                    target: "bob@contoso.com".into(),
                    parameters: intent.name_in(json!({"thread_id": ""})),
                    result: "ok: moved 3 to the holds area".into(),
                },
                Utc::now(),
            )
            .unwrap();
        assert_eq!(recover(store.as_ref(), &audit, Utc::now()).unwrap(), 0);
        assert!(store.audit_intents().unwrap().is_empty());
    }
}
