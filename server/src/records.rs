//! The records the store keeps, as plain data: roles and tokens, audit entries and the
//! intents owed by saved changes, cases, retention policies and holds. They sit below the
//! store (which reads and writes them) and depend on nothing of the server but the domain
//! types; what each one does lives with its domain (`auth.rs`, `audit.rs`,
//! `audit_intent.rs`, `cases.rs`, `lifecycle.rs`), which re-export them.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use holdfast_retention::policy::Policy;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::domain::MailboxId;

/// A principal's permission (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Ingest,
    Ediscovery,
    EdiscoveryAdmin,
    RetentionAdmin,
    Purge,
    Auditor,
    Admin,
}

/// A token's SHA-256 from its hex form (as the config file and `holdfast token hash` write
/// it).
pub fn parse_token_hash(hex_digest: &str) -> Option<[u8; 32]> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_digest.trim(), &mut hash).ok()?;
    Some(hash)
}

/// What the `tokens` column family stores under a token's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    pub roles: BTreeSet<Role>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub sequence: u64,
    pub time: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// Parameters of the action; never interaction content.
    pub parameters: serde_json::Value,
    pub result: String,
    pub previous_hash: String,
    pub hash: String,
}

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
    /// Saved before a long action began (DeleteHistory, Purge), not with a finished change:
    /// if it is still owed at start, the action was interrupted and may be partly done.
    #[serde(default)]
    pub interrupted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    Open,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRecord {
    pub id: Ulid,
    pub name: String,
    pub description: String,
    pub status: CaseStatus,
    pub members: BTreeSet<String>,
    pub custodians: BTreeSet<MailboxId>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub closed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub id: Ulid,
    pub policy: Policy,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// Forever (`None`) or N days from each item's `created_at`.
    Litigation { days: Option<u32> },
    /// Nothing in the mailbox is destroyed before `until`.
    Delay { until: DateTime<Utc> },
    /// An eDiscovery case's hold: the custodians' items that match `query` (KQL, empty: all)
    /// and were created in `[created_from, created_to)`.
    Case {
        case_id: Ulid,
        name: String,
        query: String,
        created_from: Option<DateTime<Utc>>,
        created_to: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    pub id: Ulid,
    /// The mailbox of a litigation or delay hold; a case hold's custodians.
    pub mailboxes: BTreeSet<MailboxId>,
    pub kind: HoldKind,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub released_at: Option<DateTime<Utc>>,
    pub released_by: Option<String>,
}
