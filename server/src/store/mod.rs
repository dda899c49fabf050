//! The system of record. `Store` is what the services see; `RocksStore` is the RocksDB
//! implementation. Nothing above this module depends on RocksDB.

mod checkpoint;
pub mod cluster;
#[cfg(test)]
pub(crate) mod conformance;
pub mod keys;
pub mod pg;
mod rocks;
pub mod s3;

use chrono::{DateTime, Utc};
use holdfast_retention::{ItemLocation, MoveReason};
use serde::{Deserialize, Serialize};

pub use cluster::ClusterStore;
pub use pg::PgStore;
pub use rocks::RocksStore;

use crate::domain::{
    Annex, HistorySelector, InteractionContent, InteractionId, ListCursor, ListQuery, MailboxId,
    StoredInteraction,
};
use crate::records::{AuditIntent, AuditRecord, CaseRecord, HoldRecord, PolicyRecord, TokenRecord};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine error: {0}")]
    Engine(String),
    /// The data volume is full (ENOSPC). Nothing of the failed write is stored; RocksDB
    /// resumes writing on its own once space is freed (see ARCHITECTURE.md, disk full).
    #[error("no space left on the data volume; nothing was written: {0}")]
    NoSpace(String),
    #[error("corrupt record in {column_family}: {reason}")]
    Corrupt {
        column_family: &'static str,
        reason: String,
    },
    #[error("data directory {path} was written by an unsupported format version {found}")]
    UnsupportedFormat { path: String, found: String },
    /// The storage engine refused to delete or shorten what its lock protects (S3 Object
    /// Lock retention or legal hold).
    #[error("refused by the storage engine's lock: {0}")]
    Locked(String),
    /// An audit append that does not follow the stored head (another writer appended first);
    /// nothing of it was stored.
    #[error(
        "the audit log's head is now entry {head_sequence}; the append must be chained after it"
    )]
    AuditHeadMoved { head_sequence: u64 },
    /// A sweeper step decided under rules or a lease that changed before it was written
    /// (another node changed a policy or a hold, or took the lease); nothing was written.
    #[error("nothing was written: {0}")]
    Fenced(String),
}

/// First byte of every `interactions` value: the record format version.
pub const RECORD_VERSION: u8 = 1;

/// A validated interaction ready to be written: the server has assigned its id, computed its
/// digest from the canonical encoding, and encoded the stored record.
#[derive(Debug, Clone)]
pub struct NewInteraction {
    pub id: InteractionId,
    pub received_at: DateTime<Utc>,
    pub content_sha256: [u8; 32],
    pub content: InteractionContent,
    /// The `interactions` value: `RECORD_VERSION`, then the JSON object
    /// `{"received_at":…,"content_sha256":…,"content":<canonical encoding>}`.
    pub record: Vec<u8>,
    /// When the sweeper should first look at the item (its `delete_at`), set by the writer
    /// from the policies in force when it is written; `None`: nothing will happen by time.
    pub first_check: Option<DateTime<Utc>>,
    /// How long the policies in force retain it, set with `first_check`: a storage engine
    /// that enforces retention itself (S3 Object Lock) locks the content until then.
    pub retention: Option<ItemRetention>,
    /// Whether a hold covers it when it is written (set only for a store that enforces
    /// locks): such a store writes the content under legal hold.
    pub legal_hold: bool,
}

/// An item's retention when it is written: until when, and whether by a policy under a
/// preservation lock (which nobody may shorten).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemRetention {
    pub until: DateTime<Utc>,
    pub locked: bool,
}

/// The lock the rules in force want on an item's content, in a store whose engine enforces
/// locks (`ItemStates::sync_locks`): its retention (`Lifecycle::plan_new`) and whether a hold
/// covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockWant {
    pub retention: Option<ItemRetention>,
    pub legal_hold: bool,
}

impl NewInteraction {
    /// What retention needs to know about the item.
    pub fn facts(&self) -> ItemFacts {
        ItemFacts {
            mailbox: self.content.mailbox_id.clone(),
            thread: self.content.thread_id.clone(),
            app: self.content.app.clone(),
            client_key: self.content.client_key.clone(),
            created_at: self.content.created_at,
            content_sha256: hex::encode(self.content_sha256),
        }
    }
}

/// The few fields of an item that retention, the sweeper and destruction need, kept apart
/// from the record so that planning never decodes prompt or response text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemFacts {
    pub mailbox: MailboxId,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub thread: String,
    pub app: String,
    pub client_key: String,
    pub created_at: DateTime<Utc>,
    /// Hex.
    pub content_sha256: String,
}

impl ItemFacts {
    /// The stored form, compact because every pass reads it: created_at µs (8 bytes, big
    /// endian), the digest (32 bytes), then mailbox, thread, app and client key, each as a
    /// 4-byte big-endian length and UTF-8.
    pub fn encode(&self) -> Vec<u8> {
        let strings = [
            self.mailbox.as_str(),
            &self.thread,
            &self.app,
            &self.client_key,
        ];
        let mut bytes = Vec::with_capacity(40 + strings.iter().map(|s| 4 + s.len()).sum::<usize>());
        bytes.extend_from_slice(&self.created_at.timestamp_micros().to_be_bytes());
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&self.content_sha256, &mut digest).expect("digests are hex");
        bytes.extend_from_slice(&digest);
        for text in strings {
            bytes.extend_from_slice(&(text.len() as u32).to_be_bytes());
            bytes.extend_from_slice(text.as_bytes());
        }
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<ItemFacts, String> {
        let (created, rest) = bytes.split_at_checked(8).ok_or("too short")?;
        let (digest, mut rest) = rest.split_at_checked(32).ok_or("too short")?;
        let micros = i64::from_be_bytes(created.try_into().expect("8 bytes"));
        let created_at =
            DateTime::from_timestamp_micros(micros).ok_or("created_at out of range")?;
        let mut next = || -> Result<String, String> {
            let (length, tail) = rest.split_at_checked(4).ok_or("truncated length")?;
            let length = u32::from_be_bytes(length.try_into().expect("4 bytes")) as usize;
            let (text, tail) = tail.split_at_checked(length).ok_or("truncated text")?;
            rest = tail;
            String::from_utf8(text.to_vec()).map_err(|_| "text is not UTF-8".to_string())
        };
        let facts = ItemFacts {
            mailbox: MailboxId::from_stored(next()?),
            thread: next()?,
            app: next()?,
            client_key: next()?,
            created_at,
            content_sha256: hex::encode(digest),
        };
        if !rest.is_empty() {
            return Err("trailing bytes".into());
        }
        Ok(facts)
    }
}

/// An item as planning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedItem {
    pub id: InteractionId,
    pub facts: ItemFacts,
    pub location: ItemLocation,
}

/// One entry of `Store::scan_planned_items`: the item, or its id and why it cannot be read.
pub type ScannedItem = Result<PlannedItem, (InteractionId, StoreError)>;

/// What is kept of a destroyed item (SPEC §2): no content, only what auditors need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disposition {
    pub id: InteractionId,
    pub mailbox: MailboxId,
    pub content_sha256: String,
    pub created_at: DateTime<Utc>,
    pub moved_at: DateTime<Utc>,
    pub purged_at: DateTime<Utc>,
    pub reason: MoveReason,
    /// Ids of the policies that applied (empty: none; "default" for default retention).
    pub policies: Vec<String>,
}

/// One atomic step of the sweeper: due entries it consumed, items it moves to the holds
/// area (`EXPIRED`), items it destroys (with their disposition records), and when to look at
/// items again. Index work for every moved or destroyed item is queued in the same write.
#[derive(Debug, Clone, Default)]
pub struct SweepWrite {
    pub consumed: Vec<(i64, InteractionId)>,
    pub moves: Vec<PlannedItem>,
    pub destroys: Vec<(PlannedItem, Disposition)>,
    pub schedule: Vec<(DateTime<Utc>, InteractionId)>,
    /// The `Metadata::rules_generation` the step was decided by: a store shared by several
    /// processes writes nothing (`Fenced`) once it has moved.
    pub rules_generation: Option<u64>,
    /// The sweeper lease (holder, epoch) the step runs under: a shared store writes nothing
    /// (`Fenced`) unless it is still held.
    pub lease: Option<(String, u64)>,
}

/// A policy stored or removed.
#[derive(Debug, Clone)]
pub enum PolicyWrite {
    Put(PolicyRecord),
    Delete(ulid::Ulid),
}

/// One atomic, durable change of the retention rules: hold and policy records, the re-plan
/// job the change needs, and the audit entry it owes. A crash leaves all of it or none, so a
/// released hold never lacks its re-plan and a saved change never lacks its audit intent.
#[derive(Debug, Clone, Default)]
pub struct RulesWrite {
    pub holds: Vec<HoldRecord>,
    pub policy: Option<PolicyWrite>,
    /// The pending re-plan job (`retention::ReplanJob` as JSON) that replaces the stored one.
    pub replan_job: Option<Vec<u8>>,
    /// The stored job `replan_job` was made from (`None`: there was none). A store shared by
    /// several processes writes nothing (`Fenced`) when the job stored now is another: the
    /// writer reads it again and merges once more, so no node's request is lost.
    pub replan_job_read: Option<Vec<u8>>,
    /// Stored with `after_sequence` set to the audit log's last sequence.
    pub audit_intent: Option<AuditIntent>,
}

/// What a `SweepWrite` did: moves of items that were no longer ACTIVE when it was written,
/// and destructions of items no longer where the sweeper saw them, are skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepApplied {
    pub moved: u64,
    pub destroyed: u64,
}

impl NewInteraction {
    /// Encodes the content once, for both its digest and its stored record. CPU-bound; callers
    /// run it on request threads so that the single writer thread only writes.
    pub fn new(
        id: InteractionId,
        received_at: DateTime<Utc>,
        content: InteractionContent,
    ) -> NewInteraction {
        let canonical = content.canonical_encoding();
        let content_sha256 = InteractionContent::digest(&canonical);
        let mut record = Vec::with_capacity(canonical.len() + 128);
        record.push(RECORD_VERSION);
        record.extend_from_slice(b"{\"received_at\":");
        serde_json::to_writer(&mut record, &received_at).expect("times serialise");
        record.extend_from_slice(b",\"content_sha256\":\"");
        record.extend_from_slice(hex::encode(content_sha256).as_bytes());
        record.extend_from_slice(b"\",\"content\":");
        record.extend_from_slice(&canonical);
        record.push(b'}');
        NewInteraction {
            id,
            received_at,
            content_sha256,
            content,
            record,
            first_check: None,
            retention: None,
            legal_hold: false,
        }
    }
}

/// The stored form of an interaction (after the version byte): JSON of this struct. It is
/// written by `NewInteraction::new`, which splices in the canonical encoding of the content.
#[derive(Deserialize)]
struct InteractionRecord {
    received_at: DateTime<Utc>,
    content_sha256: String,
    content: InteractionContent,
}

/// Decodes a stored record (`NewInteraction::record`) of item `id`.
pub(crate) fn decode_record(
    id: InteractionId,
    bytes: &[u8],
    location: ItemLocation,
    annex: Option<Annex>,
) -> Result<StoredInteraction, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        column_family: "interactions",
        reason,
    };
    let (version, json) = bytes
        .split_first()
        .ok_or_else(|| corrupt(format!("empty record for {id}")))?;
    if *version != RECORD_VERSION {
        return Err(corrupt(format!(
            "record {id} has unknown version {version}"
        )));
    }
    let record: InteractionRecord =
        serde_json::from_slice(json).map_err(|error| corrupt(format!("record {id}: {error}")))?;
    let mut content_sha256 = [0u8; 32];
    hex::decode_to_slice(&record.content_sha256, &mut content_sha256)
        .map_err(|_| corrupt(format!("record {id}: bad digest")))?;
    Ok(StoredInteraction {
        id,
        received_at: record.received_at,
        content_sha256,
        content: record.content,
        location,
        annex,
    })
}

/// What happened to one item of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored now.
    Created(InteractionId),
    /// Same (mailbox, client_key), same content: the original id; nothing stored.
    Duplicate(InteractionId),
    /// Same (mailbox, client_key), different content: refused; the stored item's id.
    Conflict(InteractionId),
}

/// Content and idempotency: the immutable interactions and their (mailbox, client_key) rule.
/// One seam, because the duplicate check must be atomic with the write that stores content.
pub trait Interactions: Send + Sync {
    /// Writes a group of interactions atomically and durably (the write-ahead log is synced
    /// before this returns), with the idempotency rule of SPEC §2 applied per item, including
    /// between items of the same group. Callers serialise calls (see `ingest::GroupCommitter`).
    fn write_interactions(&self, items: &[NewInteraction])
        -> Result<Vec<WriteOutcome>, StoreError>;
    fn get_interaction(&self, id: InteractionId) -> Result<Option<StoredInteraction>, StoreError>;
    /// ACTIVE items of one mailbox, newest first, strictly after `cursor`. Returns the page
    /// and the cursor of the next page if there may be more.
    fn list_active(
        &self,
        query: &ListQuery,
        cursor: Option<ListCursor>,
        limit: usize,
    ) -> Result<(Vec<StoredInteraction>, Option<ListCursor>), StoreError>;
    /// Up to `limit` interactions in id order, after `after` (exclusive), with locations:
    /// a full scan, for rebuilding the index.
    fn scan_interactions(
        &self,
        after: Option<InteractionId>,
        limit: usize,
    ) -> Result<Vec<StoredInteraction>, StoreError>;
    /// Several interactions at once, in the order asked; `None` for unknown ids.
    fn get_interactions(
        &self,
        ids: &[InteractionId],
    ) -> Result<Vec<Option<StoredInteraction>>, StoreError>;
    /// Items of a mailbox by location: (active, holds area).
    fn count_mailbox(&self, mailbox: &MailboxId) -> Result<(u64, u64), StoreError>;
}

/// Item state and the due-time queue: where each item is (active, holds area), the facts the
/// retention rules need, and when the sweeper must look at it next.
pub trait ItemStates: Send + Sync {
    /// Moves the selected ACTIVE items to the holds area, durably. Returns how many moved.
    fn move_to_holds_area(
        &self,
        selector: &HistorySelector,
        reason: MoveReason,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// Moves the given items to the holds area if they are still ACTIVE; returns the ids
    /// that moved. Each gets a due entry at `now` so that the sweeper plans it.
    fn move_ids_to_holds_area(
        &self,
        ids: &[InteractionId],
        reason: MoveReason,
        now: DateTime<Utc>,
    ) -> Result<Vec<InteractionId>, StoreError>;
    /// Up to `limit` due entries with time <= `until`, oldest first, after the entry `after`
    /// (exclusive) when given.
    fn due_until(
        &self,
        after: Option<(i64, InteractionId)>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(i64, InteractionId)>, StoreError>;
    /// Facts and locations of items; `None` for unknown (destroyed) ids. One unreadable
    /// record fails the whole call (see `planned_items_each`).
    fn planned_items(&self, ids: &[InteractionId]) -> Result<Vec<Option<PlannedItem>>, StoreError> {
        self.planned_items_each(ids)?.into_iter().collect()
    }
    /// Like `planned_items`, with a result per item: an unreadable facts or location record
    /// is that item's error and does not hide the others (the sweeper skips and counts it).
    fn planned_items_each(
        &self,
        ids: &[InteractionId],
    ) -> Result<Vec<Result<Option<PlannedItem>, StoreError>>, StoreError>;
    /// Up to `limit` items in id order after `after`: for re-planning and previews. Each
    /// entry is the item or, when its facts or location cannot be read, its id and the error
    /// (so a scan steps over a damaged record instead of stopping at it).
    fn scan_planned_items(
        &self,
        after: Option<InteractionId>,
        limit: usize,
    ) -> Result<Vec<ScannedItem>, StoreError>;
    /// Adds due entries.
    fn schedule(&self, entries: &[(DateTime<Utc>, InteractionId)]) -> Result<(), StoreError>;
    /// Applies one sweeper step atomically and durably.
    fn apply_sweep(
        &self,
        write: &SweepWrite,
        now: DateTime<Utc>,
    ) -> Result<SweepApplied, StoreError>;
    /// Drops the deletion markers of consumed due entries, so that a pass with nothing due
    /// does not step over them.
    fn compact_due(&self) -> Result<(), StoreError>;
    /// Whether the storage engine itself locks content (retention dates and legal holds, as
    /// S3 Object Lock does). Then the sweeper keeps the locks in step with the rules
    /// (`sync_locks`) and ingest writes content under the locks the rules want at once.
    fn enforces_locks(&self) -> bool {
        false
    }
    /// Brings each item's lock in the engine in step with what the rules want: retention
    /// lengthened (never shortened: what holdfast decides to destroy it destroys past a
    /// GOVERNANCE retention anyway), a COMPLIANCE retention where a preservation-locked
    /// policy now retains the item, and the legal hold set or cleared. Unknown (destroyed)
    /// ids are skipped. An item whose change the engine does not accept is kept for
    /// `lock_retries` (and one given here that is now in step leaves that list). Answers
    /// (items changed, items left to retry). A store that does not enforce locks has nothing
    /// to do.
    fn sync_locks(&self, _wants: &[(InteractionId, LockWant)]) -> Result<(u64, u64), StoreError> {
        Ok((0, 0))
    }
    /// Up to `limit` items whose lock changes the engine did not accept, those waiting
    /// longest first (each attempt puts an item last).
    fn lock_retries(&self, _limit: usize) -> Result<Vec<InteractionId>, StoreError> {
        Ok(Vec::new())
    }
}

/// The index feed: the ordered queue of items whose searchable form changed.
pub trait IndexFeed: Send + Sync {
    /// Index work, oldest first: every write that changes what the search index must show
    /// (a new item, a move) appends `(sequence, id)` in the same atomic write, with sequences
    /// in commit order. Returns up to `limit` entries with sequence > `after`.
    fn index_queue_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InteractionId)>, StoreError>;
    /// Forgets index work up to and including `sequence` (the index committed it), once
    /// every reader of the feed has (a shared feed has one reader per node).
    fn trim_index_queue(&self, sequence: u64) -> Result<(), StoreError>;
    /// Index work up to here is forgotten although some reader may not have read it (a
    /// reader gone too long): an index whose position is behind it must be rebuilt.
    fn feed_trimmed_through(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    /// Says this process's index reads the feed from `position` on (a rebuild starting), so
    /// that a shared feed keeps what comes after it. The one reader of an embedded store
    /// needs no saying.
    fn register_feed_reader(&self, _position: u64) -> Result<(), StoreError> {
        Ok(())
    }
    /// The last sequence handed out (0 when none).
    fn last_index_sequence(&self) -> u64;
}

/// Dispositions (the record of each destruction) and the erasure of destroyed text from disk.
pub trait Dispositions: Send + Sync {
    /// Disposition records in (purged_at, id) order after `after`, optionally of one mailbox.
    fn list_dispositions(
        &self,
        mailbox: Option<&MailboxId>,
        after: Option<(i64, InteractionId)>,
        limit: usize,
    ) -> Result<Vec<Disposition>, StoreError>;
    /// Destroyed items whose text may still be in files on disk, oldest first: up to `limit`
    /// `(destroyed_at µs, id)` entries destroyed at or before `until`. Each destruction adds
    /// its entry in the same write.
    fn erasure_pending(
        &self,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(i64, InteractionId)>, StoreError>;
    /// How many destroyed items await erasure, and when the oldest was destroyed.
    fn erasure_status(&self) -> Result<(u64, Option<DateTime<Utc>>), StoreError>;
    /// Makes the store's files forget the records of destroyed `ids`: flushes every memtable
    /// (so write-ahead log files holding the original writes become obsolete and are deleted)
    /// and compacts, down to the last level, the key ranges of the files that held them (so
    /// the old values and their deletion markers are dropped).
    fn erase_from_disk(&self, ids: &[InteractionId]) -> Result<(), StoreError>;
    /// Removes erased items' entries from the pending list.
    fn finish_erasure(&self, entries: &[(i64, InteractionId)]) -> Result<(), StoreError>;
}

/// Metadata: tokens, cases, policies, holds, audit intents and small named values.
pub trait Metadata: Send + Sync {
    fn get_meta(&self, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets (or with `None` removes) a `meta` value durably.
    fn put_meta(&self, name: &[u8], value: Option<&[u8]>) -> Result<(), StoreError>;
    /// Sets (or removes) a `meta` value only while it is still `expected` (`None`: absent);
    /// answers whether it did. Atomic in a store several processes share; a store of one
    /// process relies on its callers' own lock (the default reads, then writes).
    fn swap_meta(
        &self,
        name: &[u8],
        expected: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        if self.get_meta(name)?.as_deref() != expected {
            return Ok(false);
        }
        self.put_meta(name, value)?;
        Ok(true)
    }
    /// Applies a change of the retention rules atomically and durably.
    fn write_rules(&self, write: &RulesWrite) -> Result<(), StoreError>;
    /// Audit entries owed by saved changes (normally none: see `audit_intent.rs`).
    fn audit_intents(&self) -> Result<Vec<AuditIntent>, StoreError>;
    fn clear_audit_intent(&self, id: ulid::Ulid) -> Result<(), StoreError>;
    fn put_policy(&self, policy: &PolicyRecord) -> Result<(), StoreError>;
    fn delete_policy(&self, id: ulid::Ulid) -> Result<(), StoreError>;
    fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError>;
    fn put_hold(&self, hold: &HoldRecord) -> Result<(), StoreError>;
    fn list_holds(&self) -> Result<Vec<HoldRecord>, StoreError>;
    fn put_case(&self, case: &CaseRecord) -> Result<(), StoreError>;
    fn get_case(&self, id: ulid::Ulid) -> Result<Option<CaseRecord>, StoreError>;
    fn list_cases(&self) -> Result<Vec<CaseRecord>, StoreError>;
    fn put_token(&self, token_sha256: [u8; 32], record: &TokenRecord) -> Result<(), StoreError>;
    fn delete_token(&self, token_sha256: [u8; 32]) -> Result<(), StoreError>;
    fn list_tokens(&self) -> Result<Vec<([u8; 32], TokenRecord)>, StoreError>;
    /// Grows with every change of policies or holds, by any process sharing the store (0,
    /// unchanging: only this process writes them, and it knows its own changes).
    fn rules_generation(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// The audit log's entries (the hash chain is built by `crate::audit`; a store keeps them in
/// sequence order and appends atomically).
pub trait AuditTrail: Send + Sync {
    /// The last audit entry, if any.
    fn last_audit_record(&self) -> Result<Option<AuditRecord>, StoreError>;
    /// Appends one audit entry durably (see `append_audit_records`).
    fn append_audit_record(&self, record: &AuditRecord) -> Result<(), StoreError> {
        self.append_audit_records(std::slice::from_ref(record))
    }
    /// Appends entries in one atomic, synced write (group commit of the audit log). The caller
    /// assigns sequences and hashes; the store keeps the chain linear whoever writes: unless
    /// the first entry follows the stored last one (the next sequence, and its hash as
    /// `previous_hash`; sequence 1 and an empty `previous_hash` in an empty log) and each entry
    /// follows the one before, nothing is stored and the answer is `AuditHeadMoved`.
    fn append_audit_records(&self, records: &[AuditRecord]) -> Result<(), StoreError>;
    /// Appends the entries `chain` makes after the stored last entry (`None`: the log is
    /// empty), in one atomic, synced write, and answers them. `chain` runs while no other
    /// append can, whichever process holds the store, so the chain stays linear across
    /// nodes. Entries that do not follow the head are refused as by `append_audit_records`.
    fn append_audit_chained(
        &self,
        chain: &mut dyn FnMut(Option<&AuditRecord>) -> Vec<AuditRecord>,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// Up to `limit` audit entries with sequence >= `from_sequence`, in order.
    fn scan_audit_records(
        &self,
        from_sequence: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError>;
}

/// OTLP trace states and the annexes they attach (see `app::otlp`).
pub trait TraceStates: Send + Sync {
    /// Trace states (opaque values kept for `app::otlp`) by key, in order; `None` for a key
    /// never written, or whose time to be forgotten is not after `now`.
    fn get_trace_states(
        &self,
        keys: &[Vec<u8>],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError>;
    /// One atomic, durable step of attaching OTLP tools: `write.states` stored (each to be
    /// forgotten at `write.forget_at`); each annex added to its interaction's annex when that
    /// interaction still exists (a destroyed one gets nothing, atomically with destruction),
    /// with index work queued for each interaction whose annex grew; and up to
    /// `FORGET_PER_WRITE` (or twice as many as are written) states whose time has passed
    /// forgotten. Answers the interactions whose annex grew. Calls are serialised; a caller
    /// serialises its own read-modify-write of a state.
    fn write_trace_states(&self, write: &TraceStateWrite)
        -> Result<Vec<InteractionId>, StoreError>;
}

/// Consistent copies of the whole store, for backups.
pub trait Snapshots: Send + Sync {
    /// Writes a consistent point-in-time copy of the whole store into `dir` (which must not
    /// exist; its parent must) while writes go on, and returns the newest audit entry that
    /// the copy contains (read back from the copy itself).
    fn checkpoint(&self, dir: &std::path::Path) -> Result<Option<AuditRecord>, StoreError>;
}

/// Leases: which process runs a singleton job (the sweeper, an indexer of a partition) now.
/// A lease has one holder until it expires or is released; its epoch grows each time it
/// passes to a holder that did not hold it continuously, so work can be fenced by epoch.
pub trait Leases: Send + Sync {
    /// Takes lease `name` for `holder` for `ttl` (or renews it, when `holder` holds it) and
    /// answers it; `None` while another holder has it.
    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Lease>, StoreError>;
    /// Gives the lease up if `holder` holds it, so that another can take it at once.
    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
}

/// A lease held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub epoch: u64,
    pub expires_at: DateTime<Utc>,
}

/// Everything the services need of a store; `RocksStore` (embedded) implements every seam.
pub trait Store:
    Interactions
    + ItemStates
    + IndexFeed
    + Dispositions
    + Metadata
    + AuditTrail
    + TraceStates
    + Snapshots
    + Leases
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: Interactions
        + ItemStates
        + IndexFeed
        + Dispositions
        + Metadata
        + AuditTrail
        + TraceStates
        + Snapshots
        + Leases
        + Send
        + Sync
        + 'static
{
}

/// Drops `value` where blocking is allowed: on a thread of its own when called on an async
/// worker (a client that owns a runtime panics when dropped there), in place otherwise.
pub(crate) fn drop_off_async<T: Send + 'static>(value: T) {
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::spawn(move || drop(value));
    } else {
        drop(value);
    }
}

/// Whether `records` may be appended after `head` (see `AuditTrail::append_audit_records`).
pub fn check_audit_chain(
    head: Option<&AuditRecord>,
    records: &[AuditRecord],
) -> Result<(), StoreError> {
    let (mut sequence, mut hash) = head.map_or((0, ""), |r| (r.sequence, r.hash.as_str()));
    let head_sequence = sequence;
    for record in records {
        if record.sequence != sequence + 1 || record.previous_hash != hash {
            return Err(StoreError::AuditHeadMoved { head_sequence });
        }
        (sequence, hash) = (record.sequence, record.hash.as_str());
    }
    Ok(())
}

/// Trace states forgotten per `write_trace_states` at most (so that forgetting keeps pace
/// with writing without a worker of its own).
pub const FORGET_PER_WRITE: usize = 256;

/// See `Store::write_trace_states`.
#[derive(Debug, Clone)]
pub struct TraceStateWrite {
    pub states: Vec<(Vec<u8>, Vec<u8>)>,
    pub forget_at: DateTime<Utc>,
    /// What to add to each interaction's annex (`plugins`, `accessed_resources`,
    /// `principals`; `updated_at` is set to `now` where anything was added).
    pub annexes: Vec<(InteractionId, Annex)>,
    /// The most plugins, and the most resources, one annex keeps.
    pub max_entries: usize,
    pub now: DateTime<Utc>,
}

#[cfg(test)]
mod facts_tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn facts_round_trip(
            mailbox in "[a-z0-9@.]{1,40}",
            thread in "\\PC{0,20}",
            app in "\\PC{0,12}",
            client_key in "\\PC{0,40}",
            micros in -62_000_000_000_000_000i64..250_000_000_000_000_000i64,
            digest in any::<[u8; 32]>(),
        ) {
            let facts = ItemFacts {
                mailbox: MailboxId::parse(&mailbox).unwrap(),
                thread,
                app,
                client_key,
                created_at: DateTime::from_timestamp_micros(micros).unwrap(),
                content_sha256: hex::encode(digest),
            };
            prop_assert_eq!(ItemFacts::decode(&facts.encode()), Ok(facts));
        }

        #[test]
        fn damaged_facts_are_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = ItemFacts::decode(&bytes);
        }
    }

    #[test]
    fn truncated_facts_are_refused() {
        let facts = ItemFacts {
            mailbox: MailboxId::parse("a@b.c").unwrap(),
            thread: "t".into(),
            app: "Word".into(),
            client_key: "k".into(),
            created_at: Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap(),
            content_sha256: "00".repeat(32),
        };
        let bytes = facts.encode();
        assert!(ItemFacts::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(ItemFacts::decode(&[bytes.as_slice(), &[0]].concat()).is_err());
    }
}
