//! Calls without a valid token (issue 8, defect 5). A flood of bad tokens must cost the
//! server almost nothing and must not grow the audit log without bound, yet every refusal
//! stays accounted for:
//! - each source address has a token bucket; once it is empty, the answer is
//!   RESOURCE_EXHAUSTED instead of UNAUTHENTICATED (no store access either way);
//! - refusals are counted in memory per source and written to the audit log as one entry per
//!   source and window (`concurrency.refusal_window_seconds`), with the count, the calls by
//!   action and how many were rate-limited. The counts of the window in progress are flushed
//!   at shutdown; a crash loses at most one window of counts (never an action's audit).
//!
//! Callers with a valid token never touch these buckets, so their latency does not follow
//! the flood.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditEvent, AuditLog};
use crate::config::ConcurrencyConfig;

/// Sources tracked at once; refusals from further sources share one entry (`None`).
const MAX_SOURCES: usize = 1_024;

/// Method names counted per source and window; further ones count as "other".
const MAX_ACTIONS: usize = 32;

/// What the audit entry of a window says about one source.
pub const ACTION: &str = "UnauthenticatedCalls";

#[derive(Debug)]
struct Source {
    /// Token bucket: refusals this source may still get without being rate-limited.
    tokens: f64,
    refilled: Instant,
    /// This window's refusals.
    count: u64,
    limited: u64,
    /// By gRPC method; at most `MAX_ACTIONS` names, then "other".
    by_action: BTreeMap<String, u64>,
}

pub struct Refusals {
    per_second: f64,
    burst: f64,
    window: Duration,
    state: Mutex<State>,
}

struct State {
    window_started: DateTime<Utc>,
    /// By source address; `None`: unknown, or past `MAX_SOURCES`.
    sources: HashMap<Option<IpAddr>, Source>,
}

/// The key a source is counted under: its address, or for IPv6 its /64 (one host usually
/// holds a whole /64, so counting single addresses would let it escape the rate).
fn source_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(bits))
            }
        },
    }
}

impl Refusals {
    pub fn new(config: &ConcurrencyConfig) -> Arc<Refusals> {
        Arc::new(Refusals {
            per_second: f64::from(config.unauthenticated_per_second),
            burst: f64::from(config.unauthenticated_burst),
            window: Duration::from_secs(config.refusal_window_seconds),
            state: Mutex::new(State {
                window_started: Utc::now(),
                sources: HashMap::new(),
            }),
        })
    }

    /// Counts one refused call from `source`; returns `true` when the source is over its
    /// rate (the caller answers RESOURCE_EXHAUSTED).
    pub fn record(&self, source: Option<IpAddr>, action: &str) -> bool {
        let source = source.map(source_key);
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let key = if state.sources.contains_key(&source) || state.sources.len() < MAX_SOURCES {
            source
        } else {
            None
        };
        let burst = self.burst;
        let entry = state.sources.entry(key).or_insert_with(|| Source {
            tokens: burst,
            refilled: now,
            count: 0,
            limited: 0,
            by_action: BTreeMap::new(),
        });
        entry.tokens = (entry.tokens
            + now.duration_since(entry.refilled).as_secs_f64() * self.per_second)
            .min(self.burst);
        entry.refilled = now;
        entry.count += 1;
        let action = if entry.by_action.contains_key(action)
            || (entry.by_action.len() < MAX_ACTIONS && action.len() <= 64)
        {
            action
        } else {
            "other"
        };
        match entry.by_action.get_mut(action) {
            Some(count) => *count += 1,
            None => {
                entry.by_action.insert(action.to_string(), 1);
            }
        }
        let limited = entry.tokens < 1.0;
        if limited {
            entry.limited += 1;
        } else {
            entry.tokens -= 1.0;
        }
        limited
    }

    /// The audit entries of the window that ends now (one per source with refusals), and a
    /// new window. Sources idle for a whole window with a full bucket are forgotten.
    pub fn take_window(&self, now: DateTime<Utc>) -> Vec<AuditEvent> {
        let instant = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let window_started = std::mem::replace(&mut state.window_started, now);
        let mut events = Vec::new();
        let (per_second, burst) = (self.per_second, self.burst);
        state.sources.retain(|source, entry| {
            if entry.count == 0 {
                let refilled = entry.tokens
                    + instant.duration_since(entry.refilled).as_secs_f64() * per_second;
                return refilled < burst;
            }
            events.push(AuditEvent {
                actor: "anonymous".to_string(),
                action: ACTION,
                target: match source {
                    None => "unknown".to_string(),
                    Some(IpAddr::V4(ip)) => ip.to_string(),
                    Some(IpAddr::V6(ip)) => format!("{ip}/64"),
                },
                parameters: json!({
                    "count": entry.count,
                    "rate_limited": entry.limited,
                    "by_action": entry.by_action,
                    "window_start": window_started,
                    "window_end": now,
                }),
                result: format!("denied: {} call(s) without a valid token", entry.count),
            });
            entry.count = 0;
            entry.limited = 0;
            entry.by_action.clear();
            true
        });
        events
    }

    /// Writes the window's entries to the audit log, all at once so that the audit writer
    /// commits them together (one sync, not one per source).
    pub async fn flush(&self, audit: &Arc<AuditLog>) {
        let appends = self.take_window(Utc::now()).into_iter().map(|event| {
            let count = event.parameters["count"].as_u64().unwrap_or(0);
            tracing::info!(source = %event.target, count, "refused calls without a valid token");
            // A failure is logged by `append`; the counts of this window are then lost.
            audit.append(event)
        });
        futures::future::join_all(appends).await;
    }

    /// Flushes every window until `stop` is cancelled (the caller flushes once more after).
    pub fn start_flusher(
        self: &Arc<Self>,
        audit: Arc<AuditLog>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let refusals = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(refusals.window) => refusals.flush(&audit).await,
                    () = stop.cancelled() => return,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusals(per_second: u32, burst: u32) -> Arc<Refusals> {
        Refusals::new(&ConcurrencyConfig {
            unauthenticated_per_second: per_second,
            unauthenticated_burst: burst,
            ..ConcurrencyConfig::default()
        })
    }

    #[test]
    fn a_source_past_its_burst_is_limited_and_others_are_not() {
        let refusals = refusals(1, 3);
        let attacker: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let limited: Vec<bool> = (0..5)
            .map(|_| refusals.record(Some(attacker), "Ingest"))
            .collect();
        assert_eq!(limited, [false, false, false, true, true]);
        assert!(!refusals.record(Some(other), "Search"));
    }

    #[test]
    fn ipv6_sources_are_counted_by_their_64_prefix() {
        let refusals = refusals(1, 2);
        let first: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let second: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(!refusals.record(Some(first), "Ingest"));
        assert!(!refusals.record(Some(second), "Ingest"));
        // The same /64: its bucket is empty now.
        assert!(refusals.record(Some(first), "Ingest"));
        assert!(!refusals.record(Some(elsewhere), "Ingest"));
        let mut targets: Vec<String> = refusals
            .take_window(Utc::now())
            .into_iter()
            .map(|event| event.target)
            .collect();
        targets.sort();
        assert_eq!(targets, ["2001:db8:1:2::/64", "2001:db8:1:3::/64"]);
    }

    #[test]
    fn made_up_method_names_cannot_grow_an_entry_without_bound() {
        let refusals = refusals(1_000_000, 1_000_000);
        let attacker: IpAddr = "10.0.0.1".parse().unwrap();
        for n in 0..1000 {
            refusals.record(Some(attacker), &format!("Method{n}"));
        }
        let events = refusals.take_window(Utc::now());
        let by_action = events[0].parameters["by_action"].as_object().unwrap();
        assert_eq!(by_action.len(), MAX_ACTIONS + 1);
        assert_eq!(by_action["other"], 1000 - MAX_ACTIONS as u64);
    }

    #[test]
    fn a_window_is_one_entry_per_source_with_its_count() {
        let refusals = refusals(1, 3);
        let attacker: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..1000 {
            refusals.record(Some(attacker), "Ingest");
        }
        refusals.record(Some(attacker), "Search");
        refusals.record(None, "Search");
        let mut events = refusals.take_window(Utc::now());
        events.sort_by(|a, b| a.target.cmp(&b.target));
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].target, "10.0.0.1");
        assert_eq!(events[0].parameters["count"], 1001);
        assert_eq!(events[0].parameters["rate_limited"], 998);
        assert_eq!(events[0].parameters["by_action"]["Ingest"], 1000);
        assert_eq!(events[1].target, "unknown");
        // Nothing new: no entries; the next window counts from zero.
        assert!(refusals.take_window(Utc::now()).is_empty());
        refusals.record(Some(attacker), "Ingest");
        assert_eq!(refusals.take_window(Utc::now())[0].parameters["count"], 1);
    }
}
