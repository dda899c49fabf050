//! The audit log: append-only, hash-chained entries of every compliance action and every
//! refused call. Nobody can edit it through the API; `verify` proves the chain is intact.
//!
//! Each entry's `hash` is the SHA-256 of the canonical JSON of its other fields (including
//! `previous_hash`), so changing, inserting or removing an entry breaks the chain from there
//! on. Truncating the tail is detectable only against a head hash recorded elsewhere, which
//! is why `verify` reports it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::store::{AuditTrail, StoreError};

pub use crate::records::AuditRecord;

/// The fields covered by an entry's hash, in a fixed order.
#[derive(Serialize)]
struct HashedFields<'a> {
    sequence: u64,
    time: &'a DateTime<Utc>,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    parameters: &'a serde_json::Value,
    result: &'a str,
    previous_hash: &'a str,
}

impl AuditRecord {
    pub fn compute_hash(&self) -> String {
        let fields = HashedFields {
            sequence: self.sequence,
            time: &self.time,
            actor: &self.actor,
            action: &self.action,
            target: &self.target,
            parameters: &self.parameters,
            result: &self.result,
            previous_hash: &self.previous_hash,
        };
        let canonical = serde_json::to_vec(&fields).expect("audit fields serialise");
        hex::encode(Sha256::digest(canonical))
    }
}

/// One action to record.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub actor: String,
    pub action: &'static str,
    pub target: String,
    pub parameters: serde_json::Value,
    pub result: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub num_entries: u64,
    pub head_hash: String,
    /// The first entry that fails and why; `None` when the chain is intact.
    pub problem: Option<(u64, String)>,
}

/// Filters of `QueryAuditLog`.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub time_from: Option<DateTime<Utc>>,
    pub time_to: Option<DateTime<Utc>>,
    pub actor: Option<String>,
    pub action: Option<String>,
}

/// One entry waiting for the audit writer.
struct AppendJob {
    event: AuditEvent,
    time: DateTime<Utc>,
    reply: oneshot::Sender<Result<AuditRecord, StoreError>>,
}

/// Appends waiting for the writer; a full queue makes appenders wait.
const QUEUE_CAPACITY: usize = 4096;
/// Most entries written by one sync.
const MAX_GROUP: usize = 1024;

pub struct AuditLog {
    store: Arc<dyn AuditTrail>,
    /// To the writer thread, which alone assigns sequences and hashes.
    appends: mpsc::Sender<AppendJob>,
}

/// Entries scanned per read while querying or verifying.
const SCAN_CHUNK: usize = 1024;

impl AuditLog {
    /// Opens the log and starts its writer thread (it stops when the log is dropped).
    pub fn open(store: Arc<dyn AuditTrail>) -> Result<AuditLog, StoreError> {
        // An unreadable head stops the start here rather than failing every audited call.
        store.last_audit_record()?;
        let (appends, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let writer_store = Arc::clone(&store);
        std::thread::Builder::new()
            .name("holdfast-audit".into())
            .spawn(move || run_writer(writer_store.as_ref(), receiver))
            .map_err(|error| {
                StoreError::Engine(format!("cannot start the audit writer: {error}"))
            })?;
        Ok(AuditLog { store, appends })
    }

    /// Appends an entry durably (blocking: call from a thread, never from async code).
    pub fn append_blocking(
        &self,
        event: AuditEvent,
        now: DateTime<Utc>,
    ) -> Result<AuditRecord, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.appends
            .blocking_send(AppendJob {
                event,
                time: now,
                reply,
            })
            .map_err(|_| writer_gone())?;
        answer.blocking_recv().map_err(|_| writer_gone())?
    }

    /// Appends from async code; waits for the sync (shared with every concurrent append) but
    /// holds no thread meanwhile. A failure to audit is logged and returned: a compliance
    /// action that cannot be audited must not be reported as done.
    pub async fn append(self: &Arc<Self>, event: AuditEvent) -> Result<AuditRecord, StoreError> {
        let action = event.action;
        let (reply, answer) = oneshot::channel();
        let job = AppendJob {
            event,
            time: Utc::now(),
            reply,
        };
        let result = match self.appends.send(job).await {
            Ok(()) => answer.await.unwrap_or_else(|_| Err(writer_gone())),
            Err(_) => Err(writer_gone()),
        };
        if let Err(error) = &result {
            tracing::error!(action, %error, "cannot append to the audit log");
        }
        result
    }

    /// Entries matching `query`, from sequence `from_sequence` on, at most `limit`. Returns the
    /// page and the sequence to continue from, if there may be more.
    pub fn query_blocking(
        &self,
        query: &AuditQuery,
        from_sequence: u64,
        limit: usize,
    ) -> Result<(Vec<AuditRecord>, Option<u64>), StoreError> {
        let mut found = Vec::new();
        let mut next = from_sequence.max(1);
        loop {
            let chunk = self.store.scan_audit_records(next, SCAN_CHUNK)?;
            let Some(last) = chunk.last() else {
                return Ok((found, None));
            };
            next = last.sequence + 1;
            let chunk_len = chunk.len();
            for record in chunk {
                if query.matches(&record) {
                    if found.len() == limit {
                        return Ok((found, Some(record.sequence)));
                    }
                    found.push(record);
                }
            }
            if chunk_len < SCAN_CHUNK {
                return Ok((found, None));
            }
        }
    }

    /// Recomputes every hash and link of the chain.
    pub fn verify_blocking(&self) -> Result<Verification, StoreError> {
        let mut expected_sequence = 1u64;
        let mut previous_hash = String::new();
        loop {
            let chunk = match self.store.scan_audit_records(expected_sequence, SCAN_CHUNK) {
                Ok(chunk) => chunk,
                Err(error @ StoreError::Corrupt { .. }) => {
                    return Ok(Verification {
                        num_entries: expected_sequence - 1,
                        head_hash: previous_hash,
                        problem: Some((
                            expected_sequence,
                            format!("an entry at or after this one is unreadable: {error}"),
                        )),
                    })
                }
                Err(error) => return Err(error),
            };
            let chunk_len = chunk.len();
            for record in chunk {
                let problem = if record.sequence != expected_sequence {
                    Some(format!(
                        "expected entry {expected_sequence}, found {}",
                        record.sequence
                    ))
                } else if record.previous_hash != previous_hash {
                    Some("previous_hash does not match the entry before it".to_string())
                } else if record.compute_hash() != record.hash {
                    Some("hash does not match the entry's contents".to_string())
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Ok(Verification {
                        num_entries: expected_sequence - 1,
                        head_hash: previous_hash,
                        problem: Some((expected_sequence, problem)),
                    });
                }
                previous_hash = record.hash;
                expected_sequence += 1;
            }
            if chunk_len < SCAN_CHUNK {
                return Ok(Verification {
                    num_entries: expected_sequence - 1,
                    head_hash: previous_hash,
                    problem: None,
                });
            }
        }
    }
}

/// The entries of a group, chained after `head` (the last stored entry, if any).
fn chain(head: Option<&AuditRecord>, jobs: &[AppendJob]) -> Vec<AuditRecord> {
    let mut records: Vec<AuditRecord> = Vec::with_capacity(jobs.len());
    let first = head.map_or(1, |head| head.sequence + 1);
    for (sequence, job) in (first..).zip(jobs) {
        let previous_hash = match records.last() {
            Some(record) => record.hash.clone(),
            None => head.map(|head| head.hash.clone()).unwrap_or_default(),
        };
        let mut record = AuditRecord {
            sequence,
            time: job.time,
            actor: job.event.actor.clone(),
            action: job.event.action.to_string(),
            target: job.event.target.clone(),
            parameters: job.event.parameters.clone(),
            result: job.event.result.clone(),
            previous_hash,
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        records.push(record);
    }
    records
}

fn writer_gone() -> StoreError {
    StoreError::Engine("the audit writer has stopped".into())
}

/// The audit writer: takes every append waiting (up to `MAX_GROUP`), has the store chain them
/// after its stored head (while no other writer, on any node sharing the store, can append)
/// and write them with one synced write, and answers each. A failed or panicking write
/// answers its group with an error and stores none of it, so the chain stays intact.
fn run_writer(store: &dyn AuditTrail, mut receiver: mpsc::Receiver<AppendJob>) {
    while let Some(first) = receiver.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let written = crate::workers::catch_panic("audit writer", || {
            Ok(store.append_audit_chained(&mut |head| chain(head, &jobs)))
        });
        metrics::counter!("holdfast_audit_syncs_total").increment(1);
        metrics::histogram!("holdfast_audit_group_entries").record(jobs.len() as f64);
        let written = match written {
            Ok(result) => result,
            Err(error) => Err(StoreError::Engine(error.to_string())),
        };
        let replies = jobs.into_iter().map(|job| job.reply);
        match written {
            Ok(records) => {
                for (record, reply) in records.into_iter().zip(replies) {
                    let _ = reply.send(Ok(record));
                }
            }
            Err(error) => {
                tracing::error!(%error, entries = replies.len(), "audit append failed");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Engine(error.to_string())));
                }
            }
        }
    }
}

impl AuditQuery {
    fn matches(&self, record: &AuditRecord) -> bool {
        self.time_from.is_none_or(|from| record.time >= from)
            && self.time_to.is_none_or(|to| record.time < to)
            && self
                .actor
                .as_ref()
                .is_none_or(|actor| &record.actor == actor)
            && self
                .action
                .as_ref()
                .is_none_or(|action| &record.action == action)
    }
}
