//! Column-family names and key encodings, all in one place.
//!
//! Integers are big-endian so that RocksDB's byte order is numeric order; signed times are
//! stored with the sign bit flipped so that negative values sort first. Mailbox and thread ids
//! never contain control characters, so a 0x00 byte safely ends them inside a key.
//!
//! | column family       | key                                              | value                  |
//! |---------------------|--------------------------------------------------|------------------------|
//! | `interactions`      | id (16)                                          | versioned record       |
//! | `client_keys`       | mailbox 0x00 client_key                          | id (16) + sha256 (32)  |
//! | `active_by_mailbox` | mailbox 0x00 created_at µs (8) id (16)           | thread id              |
//! | `active_by_thread`  | mailbox 0x00 thread 0x00 created_at µs (8) id (16) | empty                |
//! | `locations`         | id (16)                                          | location record (JSON) |
//! | `holds_area`        | mailbox 0x00 moved_at µs (8) id (16)             | move reason (JSON)     |
//! | `audit`             | sequence (8)                                     | audit entry (JSON)     |
//! | `tokens`            | sha256 of the token (32)                         | token record (JSON)    |
//! | `index_queue`       | sequence (8)                                     | id (16)                |
//! | `cases`             | case id (16)                                     | case record (JSON)     |
//! | `policies`          | policy id (16)                                   | policy record (JSON)   |
//! | `holds`             | hold id (16)                                     | hold record (JSON)     |
//! | `item_facts`        | id (16)                                          | retention facts (binary, `ItemFacts::encode`) |
//! | `due`               | check time µs (8) id (16)                        | empty                  |
//! | `dispositions`      | purged_at µs (8) id (16)                         | disposition (JSON)     |
//! | `erasure`           | destroyed_at µs (8) id (16)                      | empty                  |
//! | `annexes`           | id (16)                                          | annex (JSON)           |
//! | `trace_states`      | opaque key (principal, trace)                    | forget-at µs (8) + state |
//! | `trace_forget`      | forget-at µs (8) + `trace_states` key            | empty                  |
//! | `meta`              | name                                             | value                  |
//!
//! `due` entries are hints, never promises: "look at this item again at this time". An item
//! may have several (a stale one is harmless: the sweeper recomputes and drops it); what must
//! never happen is an item whose next action has no entry at or before its time.

use crate::domain::{InteractionId, MailboxId};

pub const CF_INTERACTIONS: &str = "interactions";
pub const CF_CLIENT_KEYS: &str = "client_keys";
pub const CF_ACTIVE_BY_MAILBOX: &str = "active_by_mailbox";
pub const CF_ACTIVE_BY_THREAD: &str = "active_by_thread";
pub const CF_LOCATIONS: &str = "locations";
pub const CF_HOLDS_AREA: &str = "holds_area";
pub const CF_AUDIT: &str = "audit";
pub const CF_TOKENS: &str = "tokens";
pub const CF_INDEX_QUEUE: &str = "index_queue";
pub const CF_CASES: &str = "cases";
pub const CF_POLICIES: &str = "policies";
pub const CF_HOLDS: &str = "holds";
pub const CF_FACTS: &str = "item_facts";
pub const CF_DUE: &str = "due";
pub const CF_DISPOSITIONS: &str = "dispositions";
/// Destroyed items whose text may still be in files on disk (see `Store::erase_from_disk`).
pub const CF_ERASURE: &str = "erasure";
pub const CF_META: &str = "meta";
/// Tools and resources attached to stored interactions (`domain::Annex`).
pub const CF_ANNEXES: &str = "annexes";
/// What is known of recent OTLP traces (`app::otlp`), forgotten after a while.
pub const CF_TRACE_STATES: &str = "trace_states";
/// When each `trace_states` entry is to be forgotten (stale entries are harmless: the time in
/// the state itself decides).
pub const CF_TRACE_FORGET: &str = "trace_forget";

pub const ALL_CFS: &[&str] = &[
    CF_INTERACTIONS,
    CF_CLIENT_KEYS,
    CF_ACTIVE_BY_MAILBOX,
    CF_ACTIVE_BY_THREAD,
    CF_LOCATIONS,
    CF_HOLDS_AREA,
    CF_AUDIT,
    CF_TOKENS,
    CF_INDEX_QUEUE,
    CF_CASES,
    CF_POLICIES,
    CF_HOLDS,
    CF_FACTS,
    CF_DUE,
    CF_DISPOSITIONS,
    CF_ERASURE,
    CF_META,
    CF_ANNEXES,
    CF_TRACE_STATES,
    CF_TRACE_FORGET,
];

/// `meta` key holding the on-disk format version.
pub const META_FORMAT_VERSION: &[u8] = b"format_version";
pub const FORMAT_VERSION: u32 = 3;
/// Version 1 had no `item_facts` and `due`; opening it fills them in (see `RocksStore::open`).
pub const FORMAT_VERSION_WITHOUT_FACTS: u32 = 1;
/// Version 2 had no `annexes`, `trace_states` and `trace_forget`; opening it creates them
/// empty. (A version-2 binary refuses a version-3 directory with a clear message, rather than
/// RocksDB's about column families it does not know.)
pub const FORMAT_VERSION_WITHOUT_ANNEXES: u32 = 2;
/// `meta` key of the retention settings the items were last planned with (see
/// `lifecycle::Lifecycle::load`): a change re-plans every item.
pub const META_RETENTION_SETTINGS: &[u8] = b"retention_settings";
/// `meta` key of the pending re-plan job (see `sweeper::Replan`).
pub const META_REPLAN: &[u8] = b"replan";
/// Up to when ended delay holds have had their items' locks re-synced (RFC 3339), in a store
/// that enforces locks.
pub const META_LOCKS_DELAYS_ENDED: &[u8] = b"locks_delays_ended";
/// Prefix of the `meta` keys of audit intents (then the intent's ULID, 16 bytes): audit
/// entries owed by saved changes (see `audit_intent.rs`).
pub const META_AUDIT_INTENT: &[u8] = b"audit_intent/";
/// `meta` key holding the last index-queue sequence handed out (the queue itself is trimmed).
pub const META_INDEX_SEQUENCE: &[u8] = b"index_sequence";
/// `meta` key holding the 32-byte HMAC key of page tokens (see `page_token`).
pub const META_PAGE_TOKEN_KEY: &[u8] = b"page_token_key";

const SEPARATOR: u8 = 0x00;

/// Order-preserving encoding of a signed time in microseconds.
pub fn encode_time(micros: i64) -> [u8; 8] {
    ((micros as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn decode_time(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

pub fn interaction_key(id: InteractionId) -> [u8; 16] {
    id.to_bytes()
}

pub fn client_key_key(mailbox: &MailboxId, client_key: &str) -> Vec<u8> {
    let mut key = mailbox_prefix(mailbox);
    key.extend_from_slice(client_key.as_bytes());
    key
}

/// `mailbox 0x00`: the prefix of every per-mailbox key.
pub fn mailbox_prefix(mailbox: &MailboxId) -> Vec<u8> {
    let mut key = Vec::with_capacity(mailbox.as_str().len() + 1 + 24);
    key.extend_from_slice(mailbox.as_str().as_bytes());
    key.push(SEPARATOR);
    key
}

/// `mailbox 0x00 thread 0x00`: the prefix of one thread's keys.
pub fn thread_prefix(mailbox: &MailboxId, thread: &str) -> Vec<u8> {
    let mut key = mailbox_prefix(mailbox);
    key.extend_from_slice(thread.as_bytes());
    key.push(SEPARATOR);
    key
}

/// A prefix followed by (time, id): the shape of every time-ordered index key.
pub fn timed_key(prefix: &[u8], micros: i64, id: InteractionId) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 24);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&encode_time(micros));
    key.extend_from_slice(&id.to_bytes());
    key
}

/// Splits the (time, id) suffix off a time-ordered index key.
pub fn split_timed_key(key: &[u8]) -> Option<(i64, InteractionId)> {
    if key.len() < 24 {
        return None;
    }
    let suffix = &key[key.len() - 24..];
    let micros = decode_time(suffix[..8].try_into().ok()?);
    let id = InteractionId::from_bytes(suffix[8..].try_into().ok()?);
    Some((micros, id))
}

pub fn index_queue_key(sequence: u64) -> [u8; 8] {
    sequence.to_be_bytes()
}

pub fn audit_key(sequence: u64) -> [u8; 8] {
    sequence.to_be_bytes()
}

/// The smallest key greater than every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // A prefix of only 0xff bytes has no upper bound; the caller never builds one.
    vec![0xff; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ulid::Ulid;

    proptest! {
        #[test]
        fn time_encoding_preserves_order(a in any::<i64>(), b in any::<i64>()) {
            prop_assert_eq!(a.cmp(&b), encode_time(a).cmp(&encode_time(b)));
            prop_assert_eq!(decode_time(encode_time(a)), a);
        }

        #[test]
        fn timed_keys_sort_by_time_then_id(
            a in any::<i64>(), b in any::<i64>(), ia in any::<u128>(), ib in any::<u128>()
        ) {
            let mailbox = MailboxId::parse("alice@contoso.com").unwrap();
            let prefix = mailbox_prefix(&mailbox);
            let ka = timed_key(&prefix, a, InteractionId(Ulid(ia)));
            let kb = timed_key(&prefix, b, InteractionId(Ulid(ib)));
            prop_assert_eq!((a, ia).cmp(&(b, ib)), ka.cmp(&kb));
            prop_assert_eq!(split_timed_key(&ka), Some((a, InteractionId(Ulid(ia)))));
        }

        #[test]
        fn one_mailbox_never_prefixes_another(a in "[a-z@.]{1,12}", b in "[a-z@.]{1,12}") {
            prop_assume!(a != b);
            let pa = mailbox_prefix(&MailboxId::parse(&a).unwrap());
            let pb = mailbox_prefix(&MailboxId::parse(&b).unwrap());
            prop_assert!(!pa.starts_with(&pb) && !pb.starts_with(&pa));
        }
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab\x00"), b"ab\x01".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert!(prefix_end(b"abc").as_slice() > b"abc\xff\xff".as_slice());
    }
}
