//! The sweeper (SPEC §3.5): moves items whose `delete_at` has come to the holds area and
//! destroys what the principles of retention and every hold allow.
//!
//! Its work is proportional to the items that are due: the `due` column family holds
//! "look at item X at time T" entries, written with each ingest (at `delete_at`), each move
//! (at the move time) and each re-plan. A pass reads the entries up to `now`, recomputes each
//! item's decision with `holdfast_retention::decide`, and writes one atomic batch per chunk:
//! moves, destructions with their disposition records and index work, consumed entries and the
//! next check of every item that time alone can change. Holds are read again, under the lock
//! that hold changes take, immediately before a chunk's destructions are written.
//!
//! Policy and hold changes that can make items go *sooner* than planned (a new or shortened
//! policy, a released hold) request a re-plan: a resumable scan of the affected items'
//! retention facts, run by the same thread between passes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use holdfast_retention::decide::{self, Decision, Item, Reason};
use holdfast_retention::policy::{Hold, Policy};
use holdfast_retention::ItemLocation;
use serde::Serialize;
use serde_json::json;
use tokio::sync::oneshot;

use crate::audit::{AuditEvent, AuditLog};
use crate::domain::{InteractionId, MailboxId};
use crate::error::Error;
use crate::retention::{HoldRecord, Rules};
use crate::search::index::SearchIndex;
use crate::search::{kql, searcher};
use crate::store::{Disposition, PlannedItem, Store, StoreError, SweepWrite};

/// Due entries handled per atomic write.
const CHUNK: usize = 10_000;
/// Items re-planned per step between passes.
const REPLAN_CHUNK: usize = 5_000;
/// When an item cannot be checked against a query-based case hold yet (it is not in the
/// search index), it is looked at again this much later.
const INDEX_RETRY: TimeDelta = TimeDelta::minutes(1);
/// Ingest counts as busy if it wrote within this window.
const INGEST_WINDOW: Duration = Duration::from_millis(500);
/// While ingest is busy, the sweeper pauses this many times as long as each chunk took.
const YIELD_FACTOR: u32 = 9;
/// A pass that consumed at least this many due entries compacts the due-time index.
const COMPACT_AFTER: u64 = 10_000;
/// Longest wait after repeated errors.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepStats {
    pub started_at: Option<DateTime<Utc>>,
    /// The `now` the pass decided by.
    pub as_of: Option<DateTime<Utc>>,
    pub duration_ms: u64,
    /// Due entries read.
    pub examined: u64,
    pub moved: u64,
    pub destroyed: u64,
    /// Items that would have been destroyed but a hold covers them.
    pub skipped_held: u64,
    pub errors: u64,
}

/// The sweeper's state as `GetSweeperStatus` reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweeperStatus {
    pub last_run: Option<SweepStats>,
    pub last_error: Option<String>,
    pub running: bool,
    pub totals: SweepStats,
    pub interval_seconds: u64,
}

pub struct Sweeper {
    store: Arc<dyn Store>,
    rules: Arc<Rules>,
    index: Arc<SearchIndex>,
    audit: Arc<AuditLog>,
    status: Mutex<SweeperStatus>,
    /// One pass or re-plan step at a time (the loop and `RunSweep` share it).
    running: Mutex<()>,
    pending_compaction: std::sync::atomic::AtomicBool,
    /// Runs between a chunk's first look at holds and the re-check (tests place a hold
    /// there to show that the re-check sees it).
    #[cfg(test)]
    before_recheck: Mutex<Option<Box<dyn Fn() + Send>>>,
}

/// The active holds at some time, by mailbox (a hold on several mailboxes is under each).
pub struct HoldsByMailbox {
    by_mailbox: HashMap<MailboxId, Vec<HoldRecord>>,
}

impl HoldsByMailbox {
    fn load(store: &dyn Store, now: DateTime<Utc>) -> Result<HoldsByMailbox, StoreError> {
        let mut by_mailbox: HashMap<MailboxId, Vec<HoldRecord>> = HashMap::new();
        for hold in store.list_holds()?.into_iter().filter(|h| h.is_active(now)) {
            for mailbox in &hold.mailboxes {
                by_mailbox
                    .entry(mailbox.clone())
                    .or_default()
                    .push(hold.clone());
            }
        }
        Ok(HoldsByMailbox { by_mailbox })
    }

    fn on(&self, mailbox: &MailboxId) -> &[HoldRecord] {
        self.by_mailbox.get(mailbox).map_or(&[], Vec::as_slice)
    }
}

/// Policy ids named by a decision (what a disposition record keeps).
fn deciding_policies(decision: &Decision) -> Vec<String> {
    let mut ids: Vec<String> = decision
        .reasons
        .iter()
        .filter_map(|reason| match reason {
            Reason::RetainedBy { policy, .. }
            | Reason::DeletedBy { policy, .. }
            | Reason::OverriddenByExplicit { policy } => Some(policy.clone()),
            Reason::DefaultRetention { .. } => Some("default".into()),
            _ => None,
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

impl Sweeper {
    pub fn new(
        store: Arc<dyn Store>,
        rules: Arc<Rules>,
        index: Arc<SearchIndex>,
        audit: Arc<AuditLog>,
        interval: Duration,
    ) -> Sweeper {
        Sweeper {
            store,
            rules,
            index,
            audit,
            status: Mutex::new(SweeperStatus {
                interval_seconds: interval.as_secs(),
                ..SweeperStatus::default()
            }),
            running: Mutex::new(()),
            pending_compaction: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            before_recheck: Mutex::new(None),
        }
    }

    pub fn status(&self) -> SweeperStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The decision for one item with the holds that cover it. Query-based case holds are
    /// resolved by `case_matches`: ids whose custodian has such a hold and that match it (or
    /// cannot be shown not to).
    fn decide(
        &self,
        item: &PlannedItem,
        policies: &[Policy],
        holds: &[HoldRecord],
        case_matches: &CaseMatches,
        now: DateTime<Utc>,
    ) -> Decision {
        let matched = case_matches.holds.get(&item.id);
        let covering: Vec<Hold> = holds
            .iter()
            .filter(|hold| hold.admits_created_at(item.facts.created_at))
            .filter(|hold| {
                hold.query().is_none()
                    || matched.is_some_and(|ids| ids.contains(&hold.id.to_string()))
            })
            .map(HoldRecord::to_hold)
            .collect();
        decide::decide(
            &Item {
                mailbox: item.facts.mailbox.as_str(),
                app: &item.facts.app,
                created_at: item.facts.created_at,
                location: item.location,
            },
            policies,
            &covering,
            &self.rules.settings,
            now,
        )
    }

    /// For items of mailboxes with query-based case holds: which holds match each item, by
    /// the search index. An item not (yet) in the index counts as matching every such hold.
    pub fn case_matches(
        &self,
        items: &[&PlannedItem],
        holds: &HoldsByMailbox,
    ) -> Result<CaseMatches, Error> {
        let mut by_hold: BTreeMap<String, (&HoldRecord, Vec<InteractionId>)> = BTreeMap::new();
        for item in items {
            for hold in holds.on(&item.facts.mailbox) {
                if hold.query().is_some() && hold.admits_created_at(item.facts.created_at) {
                    by_hold
                        .entry(hold.id.to_string())
                        .or_insert_with(|| (hold, Vec::new()))
                        .1
                        .push(item.id);
                }
            }
        }
        let mut matches = CaseMatches::default();
        if by_hold.is_empty() {
            return Ok(matches);
        }
        let searcher = self.index.reader.searcher();
        for (hold_id, (hold, ids)) in by_hold {
            let query = kql::parse(hold.query().unwrap_or_default())
                .map_err(|error| Error::Internal(format!("hold {hold_id}: {error}")))?;
            let (present, matching) =
                searcher::present_and_matching(&searcher, &self.index.fields, Some(&query), &ids)
                    .map_err(|error| Error::Internal(format!("hold {hold_id}: {error}")))?;
            for id in ids {
                if !present.contains(&id) {
                    matches.unindexed.insert(id);
                }
                if matching.contains(&id) || !present.contains(&id) {
                    matches.holds.entry(id).or_default().push(hold_id.clone());
                }
            }
        }
        Ok(matches)
    }

    /// The decision for one item now, with every hold that covers it (`ExplainRetention`).
    pub fn explain(&self, item: &PlannedItem, now: DateTime<Utc>) -> Result<Decision, Error> {
        let holds = HoldsByMailbox::load(self.store.as_ref(), now)?;
        let matches = self.case_matches(&[item], &holds)?;
        let policies = self.rules.policies();
        Ok(self.decide(
            item,
            &policies,
            holds.on(&item.facts.mailbox),
            &matches,
            now,
        ))
    }

    /// One pass at `now`: everything due up to `now` is handled. Errors end the pass (what was
    /// written stays written; the rest is still due) and are counted.
    pub fn run_once(&self, now: DateTime<Utc>) -> Result<SweepStats, Error> {
        let _running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        self.set_running(true);
        let started = Instant::now();
        let mut stats = SweepStats {
            started_at: Some(Utc::now()),
            as_of: Some(now),
            ..SweepStats::default()
        };
        // A bug must not stop retention for good: a panic ends this pass like an error.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.sweep(now, &mut stats)))
                .unwrap_or_else(|_| Err(Error::Internal("the sweeper panicked".into())));
        stats.duration_ms = started.elapsed().as_millis() as u64;
        if stats.examined >= COMPACT_AFTER {
            self.pending_compaction
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if result.is_err() {
            stats.errors += 1;
        }
        self.finish(&stats, result.as_ref().err());
        result.map(|()| stats)
    }

    fn sweep(&self, now: DateTime<Utc>, stats: &mut SweepStats) -> Result<(), Error> {
        let mut chunk_started = Instant::now();
        // Each chunk continues after the last entry read; when that finds nothing, one scan
        // from the start picks up entries written behind the cursor meanwhile (and those this
        // pass scheduled at `now`).
        let mut cursor: Option<(i64, InteractionId)> = None;
        loop {
            // While ingest is busy, the sweeper takes about a tenth of the time: on a small
            // machine ingest and indexing need the cores more than a pass does.
            if self.rules.ingest_active(INGEST_WINDOW) {
                std::thread::sleep(chunk_started.elapsed() * YIELD_FACTOR);
                // Moves and destructions are index work too: leave the index's headroom to
                // ingest, whose backpressure starts at `max_lag`.
                let headroom = self.index.settings.max_lag / 2;
                while self.index.lag(self.store.as_ref()) > headroom
                    && self.rules.ingest_active(INGEST_WINDOW)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            chunk_started = Instant::now();
            let due = self.store.due_until(cursor, now, CHUNK)?;
            let Some(last) = due.last().copied() else {
                if cursor.take().is_some() {
                    continue;
                }
                return Ok(());
            };
            cursor = Some(last);
            stats.examined += due.len() as u64;
            let mut ids: Vec<InteractionId> = due.iter().map(|(_, id)| *id).collect();
            ids.sort();
            ids.dedup();
            let items: Vec<PlannedItem> = self
                .store
                .planned_items(&ids)?
                .into_iter()
                .flatten()
                .collect();
            let policies = self.rules.policies();
            let holds = HoldsByMailbox::load(self.store.as_ref(), now)?;
            let mut write = SweepWrite {
                consumed: due,
                ..SweepWrite::default()
            };
            let mut candidates = Vec::new();
            let held_items: Vec<&PlannedItem> = items
                .iter()
                .filter(|i| matches!(i.location, ItemLocation::HoldsArea { .. }))
                .collect();
            let matches = self.case_matches(&held_items, &holds)?;
            for item in &items {
                let decision = self.decide(
                    item,
                    &policies,
                    holds.on(&item.facts.mailbox),
                    &matches,
                    now,
                );
                if decision.move_now {
                    self.schedule_after_move(
                        item,
                        &policies,
                        holds.on(&item.facts.mailbox),
                        now,
                        &mut write,
                        stats,
                    );
                    write.moves.push(item.clone());
                } else if decision.destroyable {
                    candidates.push(item);
                } else {
                    let next = self.plan_next(item, &decision, &matches, &policies, now);
                    self.defer(item, next, &mut write, stats);
                }
            }
            if candidates.is_empty() {
                self.apply(&write, now, stats)?;
                continue;
            }
            #[cfg(test)]
            if let Some(hook) = self.before_recheck.lock().unwrap().as_ref() {
                hook();
            }
            // Re-check holds immediately before destroying, with hold changes locked out.
            let _holds_guard = self
                .rules
                .holds_guard
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let fresh = HoldsByMailbox::load(self.store.as_ref(), now)?;
            let matches = self.case_matches(&candidates, &fresh)?;
            let purged_at = now;
            for item in candidates {
                let decision = self.decide(
                    item,
                    &policies,
                    fresh.on(&item.facts.mailbox),
                    &matches,
                    now,
                );
                let ItemLocation::HoldsArea { reason, moved_at } = item.location else {
                    continue;
                };
                if !decision.destroyable {
                    let next = self.plan_next(item, &decision, &matches, &policies, now);
                    self.defer(item, next, &mut write, stats);
                    continue;
                }
                let disposition = Disposition {
                    id: item.id,
                    mailbox: item.facts.mailbox.clone(),
                    content_sha256: item.facts.content_sha256.clone(),
                    created_at: item.facts.created_at,
                    moved_at,
                    purged_at,
                    reason,
                    policies: deciding_policies(&decision),
                };
                write.destroys.push((item.clone(), disposition));
            }
            self.apply(&write, now, stats)?;
        }
    }

    fn apply(
        &self,
        write: &SweepWrite,
        now: DateTime<Utc>,
        stats: &mut SweepStats,
    ) -> Result<(), Error> {
        let applied = self.store.apply_sweep(write, now)?;
        stats.moved += applied.moved;
        stats.destroyed += applied.destroyed;
        metrics::counter!("holdfast_sweeper_moved_total").increment(applied.moved);
        metrics::counter!("holdfast_sweeper_destroyed_total").increment(applied.destroyed);
        Ok(())
    }

    /// Schedules the next look at an item this pass moves: now if it may go at once (or only
    /// the index can tell, with a query-based case hold), else when time may free it.
    fn schedule_after_move(
        &self,
        item: &PlannedItem,
        policies: &[Policy],
        holds: &[HoldRecord],
        now: DateTime<Utc>,
        write: &mut SweepWrite,
        stats: &mut SweepStats,
    ) {
        let moved = PlannedItem {
            location: ItemLocation::Active
                .move_to_holds_area(holdfast_retention::MoveReason::Expired, now),
            ..item.clone()
        };
        let after = self.decide(&moved, policies, holds, &CaseMatches::default(), now);
        if after.destroyable || holds.iter().any(|h| h.query().is_some()) {
            write.schedule.push((now, item.id));
        } else {
            let next = self.plan_next(&moved, &after, &CaseMatches::default(), policies, now);
            self.defer(&moved, next, write, stats);
        }
    }

    /// For an item not acted on now: when to look at it next, and whether only a hold kept
    /// it from being destroyed.
    fn plan_next(
        &self,
        item: &PlannedItem,
        decision: &Decision,
        matches: &CaseMatches,
        policies: &[Policy],
        now: DateTime<Utc>,
    ) -> (Option<DateTime<Utc>>, bool) {
        let held = decision
            .reasons
            .iter()
            .any(|r| matches!(r, Reason::HeldBy { .. }));
        let skipped_held = held
            && self
                .decide(item, policies, &[], &CaseMatches::default(), now)
                .destroyable;
        // Only a future time is worth an entry: an item that time alone cannot free (held
        // until a release) is re-planned when the hold is released.
        let next = match decision.next_check {
            Some(at) if at > now => Some(at),
            _ if held && matches.unindexed.contains(&item.id) => Some(now + INDEX_RETRY),
            _ => None,
        };
        (next, skipped_held)
    }

    fn defer(
        &self,
        item: &PlannedItem,
        next: (Option<DateTime<Utc>>, bool),
        write: &mut SweepWrite,
        stats: &mut SweepStats,
    ) {
        let (at, skipped_held) = next;
        if skipped_held {
            stats.skipped_held += 1;
            metrics::counter!("holdfast_sweeper_skipped_held_total").increment(1);
        }
        if let Some(at) = at {
            write.schedule.push((at, item.id));
        }
    }

    /// After a pass that consumed many due entries: drops their deletion markers so that the
    /// next passes start at the first live entry. The loop calls it after replying to a
    /// `RunSweep`; returns whether it compacted.
    pub fn compact_if_needed(&self) -> bool {
        if !self
            .pending_compaction
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            return false;
        }
        if let Err(error) = self.store.compact_due() {
            tracing::warn!(%error, "cannot compact the due-time index");
        }
        true
    }

    /// One step of a pending re-plan. Returns whether more remains.
    pub fn replan_step(&self, now: DateTime<Utc>) -> Result<bool, Error> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.replan_chunk(now)))
            .unwrap_or_else(|_| Err(Error::Internal("a re-plan step panicked".into())))
    }

    fn replan_chunk(&self, now: DateTime<Utc>) -> Result<bool, Error> {
        let _running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let Some(job) = self.rules.replan_job()? else {
            return Ok(false);
        };
        let items = self.store.scan_planned_items(job.after, REPLAN_CHUNK)?;
        let policies = self.rules.policies();
        let mut schedule = Vec::new();
        for item in items
            .iter()
            .filter(|i| job.scope.contains(&i.facts.mailbox))
        {
            // Holds are left to the pass: an entry at the earliest time retention allows is
            // early at worst, never late.
            let decision = self.decide(item, &policies, &[], &CaseMatches::default(), now);
            let at = match (item.location, decision.delete_at) {
                (ItemLocation::Active, Some(at)) => Some(at),
                (ItemLocation::Active, None) => None,
                (ItemLocation::HoldsArea { .. }, _) if decision.destroyable => Some(now),
                (ItemLocation::HoldsArea { .. }, _) => decision.next_check,
            };
            if let Some(at) = at {
                schedule.push((at.max(item.facts.created_at), item.id));
            }
        }
        self.store.schedule(&schedule)?;
        metrics::counter!("holdfast_sweeper_replanned_total").increment(items.len() as u64);
        let more = items.len() == REPLAN_CHUNK;
        let after = if more {
            items.last().map(|i| i.id)
        } else {
            None
        };
        self.rules.replan_progress(job.generation, after)?;
        Ok(more || self.rules.replan_job()?.is_some())
    }

    fn set_running(&self, running: bool) {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .running = running;
    }

    fn finish(&self, stats: &SweepStats, error: Option<&Error>) {
        {
            let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
            status.running = false;
            status.last_run = Some(stats.clone());
            status.last_error = error.map(ToString::to_string);
            let totals = &mut status.totals;
            totals.examined += stats.examined;
            totals.moved += stats.moved;
            totals.destroyed += stats.destroyed;
            totals.skipped_held += stats.skipped_held;
            totals.errors += stats.errors;
        }
        if let Some(error) = error {
            tracing::error!(%error, "sweep failed; it will be retried");
            metrics::counter!("holdfast_sweeper_errors_total").increment(1);
        }
        metrics::gauge!("holdfast_sweeper_last_run_timestamp_seconds")
            .set(Utc::now().timestamp() as f64);
        metrics::histogram!("holdfast_sweeper_run_seconds").record(stats.duration_ms as f64 / 1e3);
        if stats.moved + stats.destroyed > 0 {
            tracing::info!(
                moved = stats.moved,
                destroyed = stats.destroyed,
                skipped_held = stats.skipped_held,
                duration_ms = stats.duration_ms,
                "sweep done"
            );
            // Destructions are recorded one by one as disposition records; the audit log gets
            // one entry per pass that changed something.
            let _ = self.audit.append_blocking(
                AuditEvent {
                    actor: "sweeper".into(),
                    action: "Sweep",
                    target: String::new(),
                    parameters: json!({ "as_of": stats.as_of }),
                    result: format!(
                        "moved {}, destroyed {}, skipped (held) {}",
                        stats.moved, stats.destroyed, stats.skipped_held
                    ),
                },
                Utc::now(),
            );
        }
    }
}

/// Which query-based case holds match which items.
#[derive(Debug, Default)]
pub struct CaseMatches {
    /// Hold ids by item.
    pub holds: HashMap<InteractionId, Vec<String>>,
    /// Items not in the search index (yet): they count as matching.
    pub unindexed: HashSet<InteractionId>,
}

/// A request to run one pass now.
pub struct SweepRequest {
    pub reply: oneshot::Sender<Result<SweepStats, Error>>,
}

/// The background loop: a pass every `interval`, re-plan steps in between, a pass on request;
/// errors are logged and retried with a growing pause, never fatal.
pub fn start(
    sweeper: Arc<Sweeper>,
    interval: Duration,
) -> (mpsc::SyncSender<SweepRequest>, JoinHandle<()>) {
    let (sender, receiver) = mpsc::sync_channel::<SweepRequest>(16);
    let handle = std::thread::Builder::new()
        .name("holdfast-sweeper".into())
        .spawn(move || run_loop(&sweeper, &receiver, interval))
        .expect("can spawn the sweeper thread");
    (sender, handle)
}

fn run_loop(sweeper: &Sweeper, requests: &mpsc::Receiver<SweepRequest>, interval: Duration) {
    let mut backoff = Duration::from_secs(1);
    let mut next_pass = Instant::now();
    loop {
        sweeper.compact_if_needed();
        let replanning = match sweeper.replan_step(Utc::now()) {
            Ok(more) => more,
            Err(error) => {
                tracing::error!(%error, "re-plan step failed; it will be retried");
                metrics::counter!("holdfast_sweeper_errors_total").increment(1);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                false
            }
        };
        let wait = if replanning {
            Duration::ZERO
        } else {
            next_pass.saturating_duration_since(Instant::now())
        };
        match requests.recv_timeout(wait) {
            Ok(request) => {
                // A requested pass first finishes any pending re-plan, so that it acts on
                // every change made before it was asked for.
                let result = loop {
                    match sweeper.replan_step(Utc::now()) {
                        Ok(true) => continue,
                        Ok(false) => break sweeper.run_once(Utc::now()),
                        Err(error) => break Err(error),
                    }
                };
                let _ = request.reply.send(result);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() < next_pass || interval.is_zero() {
                    if interval.is_zero() {
                        next_pass = Instant::now() + Duration::from_secs(3600);
                    }
                    continue;
                }
                match sweeper.run_once(Utc::now()) {
                    Ok(_) => {
                        backoff = Duration::from_secs(1);
                        next_pass = Instant::now() + interval;
                    }
                    Err(_) => {
                        next_pass = Instant::now() + backoff.min(interval);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
#[path = "sweeper_tests.rs"]
mod tests;
