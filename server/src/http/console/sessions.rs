//! Console sessions: a signed-in browser holds a random session id in an HttpOnly,
//! SameSite=Strict cookie (Secure under TLS); the server keeps, per session, the SHA-256 of the
//! bearer token it was opened with (never the token), a CSRF token, and its times. Every
//! request looks the token up again, so a revoked token ends its sessions at once.
//!
//! Hand-written rather than tower-sessions: the state is one small map that must be checked
//! against the token registry on every request anyway, and the crate would add its own store
//! traits and the `time` stack for no behaviour we need.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};

/// A session unused this long ends.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, used or not.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept; past it the least recently used ends.
const MAX_SESSIONS: usize = 10_000;
/// Most sessions of one token; past it that token's least recently used ends (one token
/// signing in again and again cannot push everyone else's sessions out).
const MAX_SESSIONS_PER_TOKEN: usize = 16;

#[derive(Debug, Clone)]
pub struct Session {
    /// The SHA-256 of the bearer token the session was opened with.
    pub token_sha256: [u8; 32],
    /// Sent back in every form and compared on every change.
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

impl Session {
    /// Seconds until the session ends if left idle (for the timeout warning).
    pub fn seconds_left(&self, now: Instant) -> u64 {
        let idle_end = self.last_seen + IDLE_TIMEOUT;
        let absolute_end = self.created + ABSOLUTE_TIMEOUT;
        idle_end
            .min(absolute_end)
            .saturating_duration_since(now)
            .as_secs()
    }
}

/// The open sessions, keyed by the SHA-256 of their id (a leaked map reveals no cookie).
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_text() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// Opens a session for a token; answers the new session id (the cookie's value). A new
    /// id each time: a session id planted before sign-in is never the one signed in.
    pub fn open(&self, token_sha256: [u8; 32]) -> (String, Session) {
        let id = random_text();
        let now = Instant::now();
        let session = Session {
            token_sha256,
            csrf: random_text(),
            created: now,
            last_seen: now,
        };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, s| s.seconds_left(now) > 0);
        let same_token = || open.iter().filter(|(_, s)| s.token_sha256 == token_sha256);
        if same_token().count() >= MAX_SESSIONS_PER_TOKEN {
            if let Some(oldest) = same_token()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k)
            {
                open.remove(&oldest);
            }
        }
        if open.len() >= MAX_SESSIONS {
            if let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k)
            {
                open.remove(&oldest);
            }
        }
        open.insert(key(&id), session.clone());
        (id, session)
    }

    /// The session of a cookie value, if it is open; using it extends its idle time.
    pub fn touch(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let k = key(id);
        let session = open.get_mut(&k)?;
        if session.seconds_left(now) == 0 {
            open.remove(&k);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    pub fn close(&self, id: &str) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&key(id));
    }
}

/// Constant-time comparison of two CSRF tokens.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_id_only_and_ends_when_closed() {
        let sessions = Sessions::default();
        let (id, session) = sessions.open([7; 32]);
        let (other, _) = sessions.open([7; 32]);
        assert_ne!(id, other, "every sign-in gets a new id");
        assert_eq!(sessions.touch(&id).unwrap().csrf, session.csrf);
        assert!(sessions.touch("not-a-session").is_none());
        sessions.close(&id);
        assert!(sessions.touch(&id).is_none());
        assert!(sessions.touch(&other).is_some());
    }

    #[test]
    fn one_token_cannot_push_out_other_sessions() {
        let sessions = Sessions::default();
        let (theirs, _) = sessions.open([1; 32]);
        let first_of_many = sessions.open([2; 32]).0;
        for _ in 0..100 {
            sessions.open([2; 32]);
        }
        assert!(sessions.touch(&theirs).is_some());
        assert!(sessions.touch(&first_of_many).is_none());
    }

    #[test]
    fn csrf_tokens_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", "a"));
    }
}
