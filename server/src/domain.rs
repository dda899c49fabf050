//! Validated domain types. Generated prost types are converted into these in `convert`; the
//! store and the services' logic never see prost types.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use holdfast_retention::ItemLocation;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// Longest mailbox id, in bytes (SPEC §2).
pub const MAX_MAILBOX_ID_BYTES: usize = 320;

/// A mailbox id: 1–320 bytes, no control characters, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MailboxId(String);

impl MailboxId {
    /// A mailbox id read back from the store, where only validated ids are written.
    pub fn from_stored(lower_cased: String) -> MailboxId {
        MailboxId(lower_cased)
    }

    pub fn parse(raw: &str) -> Result<MailboxId, String> {
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        let lowered = raw.to_lowercase();
        if lowered.len() > MAX_MAILBOX_ID_BYTES {
            return Err(format!("longer than {MAX_MAILBOX_ID_BYTES} bytes"));
        }
        if lowered.chars().any(char::is_control) {
            return Err("contains a control character".into());
        }
        Ok(MailboxId(lowered))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Server-assigned id: a ULID, sortable by receive time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InteractionId(pub Ulid);

impl InteractionId {
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    pub fn from_bytes(bytes: [u8; 16]) -> InteractionId {
        InteractionId(Ulid::from_bytes(bytes))
    }
}

impl fmt::Display for InteractionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for InteractionId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s)
            .map(InteractionId)
            .map_err(|_| "not a valid interaction id (26-character ULID)".to_string())
    }
}

pub use holdfast_content::{AccessedResource, Context, Model, Plugin, Safety};

/// What the caller sent, validated, with a validated mailbox id. Its canonical encoding (the
/// input of `content_sha256`) is defined once in `holdfast-content`, which the client shares
/// to recheck exported items.
pub type InteractionContent = holdfast_content::InteractionContent<MailboxId>;

/// An interaction as stored: content plus what the server recorded when it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInteraction {
    pub id: InteractionId,
    pub received_at: DateTime<Utc>,
    pub content_sha256: [u8; 32],
    pub content: InteractionContent,
    pub location: ItemLocation,
    /// What was attached after it was stored; `None`: nothing.
    pub annex: Option<Annex>,
}

/// Tools and resources attached to a stored interaction after it was stored: the tool,
/// retrieval and MCP spans of its OpenTelemetry trace (see `app::otlp`). Added to, never
/// changed; kept outside the content, whose digest stays what the caller sent. Destroyed
/// with the interaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annex {
    pub plugins: Vec<Plugin>,
    pub accessed_resources: Vec<AccessedResource>,
    /// When the latest entry was added.
    pub updated_at: DateTime<Utc>,
    /// The principals (token names) whose spans named them.
    pub principals: Vec<String>,
}

impl Annex {
    /// Adds what `other` has that is not here yet, keeping at most `max` of each (and of
    /// principals); true when anything was added.
    pub fn add(&mut self, other: &Annex, max: usize) -> bool {
        let mut added = false;
        for plugin in &other.plugins {
            if self.plugins.len() < max && !self.plugins.contains(plugin) {
                self.plugins.push(plugin.clone());
                added = true;
            }
        }
        for resource in &other.accessed_resources {
            if self.accessed_resources.len() < max && !self.accessed_resources.contains(resource) {
                self.accessed_resources.push(resource.clone());
                added = true;
            }
        }
        if added {
            for principal in &other.principals {
                if self.principals.len() < max && !self.principals.contains(principal) {
                    self.principals.push(principal.clone());
                }
            }
        }
        added
    }
}

/// Which items `DeleteHistory` moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySelector {
    pub mailbox_id: MailboxId,
    /// Empty: every thread.
    pub thread_id: String,
    /// Only items created strictly before this.
    pub before: Option<DateTime<Utc>>,
}

/// The user's view of one mailbox: ACTIVE items, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub mailbox_id: MailboxId,
    /// Empty: every thread.
    pub thread_id: String,
    /// created_at >= created_from.
    pub created_from: Option<DateTime<Utc>>,
    /// created_at < created_to.
    pub created_to: Option<DateTime<Utc>>,
}

/// Where a page of a listing ends: the (created_at, id) of its last item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    pub created_micros: i64,
    pub id: InteractionId,
}

/// A 64-bit key of a mailbox id (the first 8 bytes of its SHA-256): the index filters by it,
/// and a cluster partitions search by it.
pub fn mailbox_key(mailbox: &str) -> u64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(mailbox.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Partitions of a cluster's search: each mailbox's items are in one of them.
pub const SEARCH_PARTITIONS: u16 = 16;

/// The search partition of `mailbox`.
pub fn search_partition(mailbox: &str) -> i16 {
    (mailbox_key(mailbox) % u64::from(SEARCH_PARTITIONS)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_ids_are_lower_cased_and_checked() {
        assert_eq!(
            MailboxId::parse("Alice@Contoso.COM").unwrap().as_str(),
            "alice@contoso.com"
        );
        assert!(MailboxId::parse("").is_err());
        assert!(MailboxId::parse("a\u{7}b").is_err());
        assert!(MailboxId::parse(&"a".repeat(321)).is_err());
        assert!(MailboxId::parse(&"a".repeat(320)).is_ok());
    }
}
