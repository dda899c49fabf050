//! The system of record. `Store` is what the services see; `RocksStore` is the RocksDB
//! implementation. Nothing above this module depends on RocksDB.

pub mod keys;
mod rocks;

use chrono::{DateTime, Utc};
use holdfast_retention::MoveReason;

pub use rocks::RocksStore;

use crate::audit::AuditRecord;
use crate::auth::TokenRecord;
use crate::domain::{
    HistorySelector, InteractionContent, InteractionId, ListCursor, ListQuery, StoredInteraction,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine error: {0}")]
    Engine(String),
    #[error("corrupt record in {column_family}: {reason}")]
    Corrupt {
        column_family: &'static str,
        reason: String,
    },
    #[error("data directory {path} was written by an unsupported format version {found}")]
    UnsupportedFormat { path: String, found: String },
}

/// A validated interaction ready to be written: the server has assigned its id and computed
/// its digest from the canonical encoding.
#[derive(Debug, Clone)]
pub struct NewInteraction {
    pub id: InteractionId,
    pub received_at: DateTime<Utc>,
    pub content_sha256: [u8; 32],
    pub content: InteractionContent,
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

pub trait Store: Send + Sync + 'static {
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

    /// Moves the selected ACTIVE items to the holds area, durably. Returns how many moved.
    fn move_to_holds_area(
        &self,
        selector: &HistorySelector,
        reason: MoveReason,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// The last audit entry, if any.
    fn last_audit_record(&self) -> Result<Option<AuditRecord>, StoreError>;
    /// Appends one audit entry durably. The caller assigns sequence and hashes.
    fn append_audit_record(&self, record: &AuditRecord) -> Result<(), StoreError>;
    /// Up to `limit` audit entries with sequence >= `from_sequence`, in order.
    fn scan_audit_records(
        &self,
        from_sequence: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    fn put_token(&self, token_sha256: [u8; 32], record: &TokenRecord) -> Result<(), StoreError>;
    fn delete_token(&self, token_sha256: [u8; 32]) -> Result<(), StoreError>;
    fn list_tokens(&self) -> Result<Vec<([u8; 32], TokenRecord)>, StoreError>;
}
