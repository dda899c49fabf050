//! Page tokens. Input: a first line, opened as a token of every kind (with a fixed key, two
//! contexts and two times; a seed is a genuine token under that key), then bytes that choose
//! a key, kind, context, time and payload for a round trip: sealing then opening gives the
//! payload back, and another kind is refused. Nothing may panic.

use arbitrary::{Result, Unstructured};
use chrono::{DateTime, Utc};
use holdfast_server::page_token::{context, PageTokens, PayloadReader, TokenKind};

const KINDS: [TokenKind; 4] = [
    TokenKind::Search,
    TokenKind::ListInteractions,
    TokenKind::QueryAuditLog,
    TokenKind::ListDispositions,
];

/// The key and context of the seed tokens (fuzz/corpus/page_token).
const SEED_KEY: [u8; 32] = [7; 32];
const SEED_CONTEXT: &[u8] = b"budget";
/// 2026-01-01T00:00:00Z; the seed tokens were issued a minute before.
const SEED_NOW: i64 = 1_767_225_600;

fn time(u: &mut Unstructured) -> Result<DateTime<Utc>> {
    let seconds = u.int_in_range(
        DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp(),
    )?;
    Ok(DateTime::from_timestamp(seconds, 0).unwrap_or_default())
}

fn open_any(token: &str) {
    let tokens = PageTokens::with_key(SEED_KEY);
    let debug = std::env::var_os("HOLDFAST_FUZZ_DEBUG").is_some();
    for kind in KINDS {
        for ctx in [context(&[SEED_CONTEXT]), context(&[b"other"])] {
            for now in [SEED_NOW, SEED_NOW + 2 * 86_400] {
                let now = DateTime::from_timestamp(now, 0).expect("a time");
                let opened = tokens.open(kind, ctx, token, now);
                if let Ok(payload) = &opened {
                    let mut reader = PayloadReader::new(payload);
                    let _ = reader.u64();
                    let _ = reader.bytes16();
                    let _ = reader.finish();
                }
                if debug {
                    eprintln!("{kind:?}: {:?}", opened.map(|p| p.len()));
                }
            }
        }
    }
}

fn round_trip(u: &mut Unstructured) -> Result<()> {
    let tokens = PageTokens::with_key(u.arbitrary()?);
    let kind = *u.choose(&KINDS)?;
    let other_kind = *u.choose(&KINDS)?;
    let parts: Vec<Vec<u8>> = u.arbitrary()?;
    let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let ctx = context(&parts);
    let now = time(u)?;
    let later = time(u)?;
    let payload_len = u.int_in_range(0..=64)?;
    let payload = u.bytes(payload_len)?.to_vec();

    let sealed = tokens.seal(kind, ctx, &payload, now);
    assert_eq!(
        tokens.open(kind, ctx, &sealed, now).expect("own token"),
        payload
    );
    let other = tokens.open(other_kind, ctx, &sealed, later);
    if other_kind != kind {
        assert!(other.is_err(), "a token of one call opened for another");
    }
    // A copy with one character changed is refused (never a panic).
    let mut damaged = sealed.clone().into_bytes();
    let at = u.choose_index(damaged.len())?;
    damaged[at] = u.arbitrary()?;
    if let Ok(damaged) = String::from_utf8(damaged) {
        if damaged != sealed {
            assert!(
                tokens.open(kind, ctx, &damaged, now).is_err(),
                "a damaged token opened"
            );
        }
    }
    Ok(())
}

/// One input of the target (the fuzz binary and the corpus replay test call this).
pub fn run(data: &[u8]) {
    let (line, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(end) => (&data[..end], &data[end + 1..]),
        None => (data, &[][..]),
    };
    open_any(&String::from_utf8_lossy(line));
    let _ = round_trip(&mut Unstructured::new(rest));
}
