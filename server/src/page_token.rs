//! Page tokens: the opaque cursors that `Search`, `ListInteractions`, `QueryAuditLog` and
//! `ListDispositions` hand out and take back (SPEC §8: "page tokens and resume points are
//! authenticated by the server").
//!
//! A token is URL-safe base64 (no padding) of
//!
//! ```text
//! version (1) | kind (1) | issued_at seconds (8, BE) | context (16) | payload | tag (32)
//! ```
//!
//! where `tag` is HMAC-SHA256 under the server's page-token key over every byte before it,
//! `kind` says which call issued it, `context` is the first 16 bytes of the SHA-256 of what
//! must not change between pages (the query, the filters), and `payload` is the call's own
//! cursor. A token that is not base64, has another length or version, or whose tag does not
//! verify is refused as "not a page token from this server": nothing in it is trusted before
//! the tag verifies. A genuine token of another call, of another request, or older than
//! `MAX_TOKEN_AGE` is refused with its own message. Every refusal is `INVALID_ARGUMENT` naming
//! `page_token`.
//!
//! The key is 32 random bytes in the store's `meta` column family (`page_token_key`), created
//! on first start: it survives restarts (tokens stay valid) and travels with a checkpoint of
//! the store (a backup).

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::store::keys::META_PAGE_TOKEN_KEY;
use crate::store::{Metadata, StoreError};

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const KEY_BYTES: usize = 32;
const CONTEXT_BYTES: usize = 16;
const TAG_BYTES: usize = 32;
const HEADER_BYTES: usize = 1 + 1 + 8 + CONTEXT_BYTES;
/// Longest payload any call puts in a token; longer input is refused before decoding.
const MAX_PAYLOAD_BYTES: usize = 64;
/// How long a token is accepted after it was issued: far longer than anyone pages through
/// one listing, short enough that an old token copied somewhere is not good for ever.
pub const MAX_TOKEN_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// Tolerated clock step backwards between issuing and using a token.
const CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

const NOT_OURS: &str = "not a page token from this server";

/// Which call issued a token: a token of one call is never accepted by another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Search,
    ListInteractions,
    QueryAuditLog,
    ListDispositions,
}

impl TokenKind {
    fn byte(self) -> u8 {
        match self {
            TokenKind::Search => 1,
            TokenKind::ListInteractions => 2,
            TokenKind::QueryAuditLog => 3,
            TokenKind::ListDispositions => 4,
        }
    }

    fn from_byte(byte: u8) -> Option<TokenKind> {
        match byte {
            1 => Some(TokenKind::Search),
            2 => Some(TokenKind::ListInteractions),
            3 => Some(TokenKind::QueryAuditLog),
            4 => Some(TokenKind::ListDispositions),
            _ => None,
        }
    }

    fn call(self) -> &'static str {
        match self {
            TokenKind::Search => "Search",
            TokenKind::ListInteractions => "ListInteractions",
            TokenKind::QueryAuditLog => "QueryAuditLog",
            TokenKind::ListDispositions => "ListDispositions",
        }
    }
}

/// What must stay the same between the pages of one request, as a few byte strings (each is
/// length-prefixed, so `["ab", "c"]` and `["a", "bc"]` differ).
pub fn context(parts: &[&[u8]]) -> [u8; CONTEXT_BYTES] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize()[..CONTEXT_BYTES]
        .try_into()
        .expect("16 bytes")
}

/// Issues and checks page tokens with the server's key.
pub struct PageTokens {
    key: [u8; KEY_BYTES],
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens { key: <secret> }")
    }
}

impl PageTokens {
    /// The key kept in the store, created (32 bytes from the OS's generator) if absent. A
    /// stored key of another length is a corrupt store, not a reason to mint a new one.
    /// Nodes of a cluster starting together agree on one key: it is created only where none
    /// is stored (compare and swap), and the one stored is used.
    pub fn load_or_create(store: &dyn Metadata) -> Result<PageTokens, StoreError> {
        if store.get_meta(META_PAGE_TOKEN_KEY)?.is_none() {
            let mut key = [0u8; KEY_BYTES];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
            store.swap_meta(META_PAGE_TOKEN_KEY, None, Some(&key))?;
        }
        if let Some(stored) = store.get_meta(META_PAGE_TOKEN_KEY)? {
            let key: [u8; KEY_BYTES] =
                stored
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt {
                        column_family: crate::store::keys::CF_META,
                        reason: format!(
                            "the page token key has {} bytes, expected {KEY_BYTES}",
                            stored.len()
                        ),
                    })?;
            return Ok(PageTokens { key });
        }
        Err(StoreError::Corrupt {
            column_family: crate::store::keys::CF_META,
            reason: "the page token key was stored and is gone".into(),
        })
    }

    /// A secret derived from the key for `purpose` (hex): the same on every node of a
    /// cluster, never equal to a page token's tag.
    pub fn derive_secret(&self, purpose: &str) -> String {
        let mut mac = self.tag(b"\0derived secret\0");
        mac.update(purpose.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn with_key(key: [u8; KEY_BYTES]) -> PageTokens {
        PageTokens { key }
    }

    fn tag(&self, bytes: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(bytes);
        mac
    }

    /// A token of `kind` for the request described by `context`, carrying `payload`.
    pub fn seal(
        &self,
        kind: TokenKind,
        context: [u8; CONTEXT_BYTES],
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> String {
        use base64::Engine;
        debug_assert!(payload.len() <= MAX_PAYLOAD_BYTES);
        let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len() + TAG_BYTES);
        bytes.push(VERSION);
        bytes.push(kind.byte());
        bytes.extend_from_slice(&now.timestamp().to_be_bytes());
        bytes.extend_from_slice(&context);
        bytes.extend_from_slice(payload);
        let tag = self.tag(&bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The payload of `token` if this server issued it for `kind` and `context` less than
    /// `MAX_TOKEN_AGE` before `now`.
    pub fn open(
        &self,
        kind: TokenKind,
        context: [u8; CONTEXT_BYTES],
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<u8>, Error> {
        use base64::Engine;
        let bad = || Error::invalid("page_token", NOT_OURS);
        let max_chars = (HEADER_BYTES + MAX_PAYLOAD_BYTES + TAG_BYTES).div_ceil(3) * 4;
        if token.len() > max_chars {
            return Err(bad());
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| bad())?;
        if bytes.len() < HEADER_BYTES + TAG_BYTES || bytes[0] != VERSION {
            return Err(bad());
        }
        let (signed, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
        self.tag(signed).verify_slice(tag).map_err(|_| bad())?;
        // From here on the bytes are the server's own.
        let issued_by = TokenKind::from_byte(signed[1]).ok_or_else(bad)?;
        if issued_by != kind {
            return Err(Error::invalid(
                "page_token",
                format!(
                    "is a page token of {}, not of {}",
                    issued_by.call(),
                    kind.call()
                ),
            ));
        }
        if signed[10..HEADER_BYTES] != context {
            return Err(Error::invalid(
                "page_token",
                "belongs to another request (the query and filters must not change between \
                 pages)",
            ));
        }
        let issued_secs = i64::from_be_bytes(signed[2..10].try_into().expect("8 bytes"));
        let age = now.timestamp().saturating_sub(issued_secs);
        if age > MAX_TOKEN_AGE.num_seconds() || age < -CLOCK_SKEW.num_seconds() {
            return Err(Error::invalid(
                "page_token",
                "has expired (tokens are good for 24 hours); start again without it",
            ));
        }
        Ok(signed[HEADER_BYTES..].to_vec())
    }
}

/// Reads fixed-size fields out of a payload; any length mismatch is "not ours" (a payload
/// of a genuine token always has the layout its kind writes).
pub struct PayloadReader<'a> {
    bytes: &'a [u8],
}

impl<'a> PayloadReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        PayloadReader { bytes }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        if self.bytes.len() < N {
            return Err(Error::invalid("page_token", NOT_OURS));
        }
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        Ok(head.try_into().expect("N bytes"))
    }

    pub fn u64(&mut self) -> Result<u64, Error> {
        self.take::<8>().map(u64::from_be_bytes)
    }

    pub fn i64(&mut self) -> Result<i64, Error> {
        self.take::<8>().map(i64::from_be_bytes)
    }

    pub fn bytes16(&mut self) -> Result<[u8; 16], Error> {
        self.take::<16>()
    }

    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<(), Error> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid("page_token", NOT_OURS))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use proptest::prelude::*;

    fn tokens() -> PageTokens {
        PageTokens::with_key([7; KEY_BYTES])
    }

    fn now() -> DateTime<Utc> {
        chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 1, 2, 3, 4, 5).unwrap()
    }

    fn refusal(result: Result<Vec<u8>, Error>) -> String {
        match result {
            Err(error @ Error::InvalidArgument { .. }) => {
                let text = error.to_string();
                assert!(text.contains("page_token"), "{text}");
                text
            }
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    fn decode(token: &str) -> Vec<u8> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .unwrap()
    }

    fn encode(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_token_round_trips_for_its_own_kind_and_context() {
        let ctx = context(&[b"case", b"budget"]);
        let token = tokens().seal(TokenKind::Search, ctx, b"payload", now());
        assert_eq!(
            tokens()
                .open(TokenKind::Search, ctx, &token, now())
                .unwrap(),
            b"payload"
        );
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let ctx = context(&[b"x"]);
        let token = tokens().seal(TokenKind::QueryAuditLog, ctx, &42u64.to_be_bytes(), now());
        let bytes = decode(&token);
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut tampered = bytes.clone();
                tampered[index] ^= 1 << bit;
                let text = refusal(tokens().open(
                    TokenKind::QueryAuditLog,
                    ctx,
                    &encode(&tampered),
                    now(),
                ));
                assert!(text.contains(NOT_OURS), "{text}");
            }
        }
    }

    #[test]
    fn truncated_extended_and_foreign_tokens_are_refused() {
        let ctx = context(&[b"x"]);
        let token = tokens().seal(TokenKind::ListDispositions, ctx, &[1; 24], now());
        let bytes = decode(&token);
        for length in 0..bytes.len() {
            refusal(tokens().open(
                TokenKind::ListDispositions,
                ctx,
                &encode(&bytes[..length]),
                now(),
            ));
        }
        let mut longer = bytes.clone();
        longer.push(0);
        refusal(tokens().open(TokenKind::ListDispositions, ctx, &encode(&longer), now()));
        // Another server's key.
        let other = PageTokens::with_key([8; KEY_BYTES]);
        refusal(other.open(TokenKind::ListDispositions, ctx, &token, now()));
        // Not base64, or absurdly long.
        refusal(tokens().open(TokenKind::ListDispositions, ctx, "!!!", now()));
        refusal(tokens().open(TokenKind::ListDispositions, ctx, &"A".repeat(10_000), now()));
        refusal(tokens().open(TokenKind::ListDispositions, ctx, "", now()));
    }

    #[test]
    fn the_old_plain_hex_search_token_is_refused() {
        // Today's format before this module: hex of (snapshot, offset = 2^40, fingerprint).
        let mut bytes = Vec::new();
        for part in [1u64, 1 << 40, 0] {
            bytes.extend_from_slice(&part.to_be_bytes());
        }
        let text = refusal(tokens().open(
            TokenKind::Search,
            context(&[b"x"]),
            &hex::encode(bytes),
            now(),
        ));
        assert!(text.contains(NOT_OURS), "{text}");
    }

    #[test]
    fn another_call_another_request_or_an_old_token_is_refused_with_its_reason() {
        let ctx = context(&[b"mailbox-a"]);
        let token = tokens().seal(TokenKind::ListInteractions, ctx, b"p", now());
        let text = refusal(tokens().open(TokenKind::QueryAuditLog, ctx, &token, now()));
        assert!(text.contains("ListInteractions"), "{text}");
        let text = refusal(tokens().open(
            TokenKind::ListInteractions,
            context(&[b"mailbox-b"]),
            &token,
            now(),
        ));
        assert!(text.contains("another request"), "{text}");
        let later = now() + MAX_TOKEN_AGE + chrono::TimeDelta::seconds(1);
        let text = refusal(tokens().open(TokenKind::ListInteractions, ctx, &token, later));
        assert!(text.contains("expired"), "{text}");
        let earlier = now() - chrono::TimeDelta::hours(1);
        refusal(tokens().open(TokenKind::ListInteractions, ctx, &token, earlier));
        // Just inside the age limit is fine.
        tokens()
            .open(
                TokenKind::ListInteractions,
                ctx,
                &token,
                now() + MAX_TOKEN_AGE,
            )
            .unwrap();
    }

    #[test]
    fn contexts_are_unambiguous() {
        assert_ne!(context(&[b"ab", b"c"]), context(&[b"a", b"bc"]));
        assert_ne!(context(&[b""]), context(&[]));
    }

    #[test]
    fn payload_readers_refuse_short_and_long_payloads() {
        let mut reader = PayloadReader::new(&[0; 8]);
        assert_eq!(reader.u64().unwrap(), 0);
        reader.finish().unwrap();
        assert!(PayloadReader::new(&[0; 7]).u64().is_err());
        let mut reader = PayloadReader::new(&[0; 9]);
        reader.i64().unwrap();
        assert!(reader.finish().is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_input_is_refused_never_panics(input in "\\PC{0,300}") {
            let result = tokens().open(TokenKind::Search, context(&[b"x"]), &input, now());
            prop_assert!(result.is_err());
        }

        #[test]
        fn arbitrary_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let result = tokens().open(TokenKind::Search, context(&[b"x"]), &encode(&bytes), now());
            prop_assert!(result.is_err());
        }
    }
}
