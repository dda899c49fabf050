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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
use crate::lifecycle::{HoldKind, HoldRecord, Lifecycle, ReplanScope};
use crate::search::fanout::FanOut;
use crate::search::index::SearchIndex;
use crate::search::searcher;
use crate::store::keys::META_LOCKS_DELAYS_ENDED;
use crate::store::{Disposition, LockWant, PlannedItem, Store, StoreError, SweepWrite};

/// Due entries handled per atomic write.
const CHUNK: usize = 10_000;
/// Items re-planned per step between passes.
const REPLAN_CHUNK: usize = 5_000;
/// Items whose locks are synced again per step, in a store that enforces locks.
const LOCK_RETRY_CHUNK: usize = 1_000;
/// When an item cannot be checked against a query-based case hold yet (it is not in the
/// search index), it is looked at again this much later.
const INDEX_RETRY: TimeDelta = TimeDelta::minutes(1);
/// Ingest counts as busy if it wrote within this window.
const INGEST_WINDOW: Duration = Duration::from_millis(500);
/// While ingest is busy, the sweeper pauses this many times as long as each chunk took.
const YIELD_FACTOR: u32 = 9;
/// Erasure entries whose store files were erased, and the index sequence asked for them.
type StoreErased = (Vec<(i64, InteractionId)>, u64);

/// A pass that consumed at least this many due entries compacts the due-time index.
const COMPACT_AFTER: u64 = 10_000;
/// An item that cannot be read or decided is looked at again this much later.
const ITEM_ERROR_RETRY: TimeDelta = TimeDelta::hours(1);
/// Items kept because a case hold's query could not be evaluated are looked at again this
/// much later (a release re-plans them at once).
const HOLD_ERROR_RETRY: TimeDelta = TimeDelta::hours(1);
/// Destroyed items erased per round.
const ERASE_CHUNK: usize = 100_000;
/// How long erasure waits for the search index to merge away deleted documents.
const ERASE_INDEX_WAIT: Duration = Duration::from_secs(5);
/// Longest wait after repeated errors.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The lease that makes one node of a cluster the sweeping node.
pub const SWEEPER_LEASE: &str = "sweeper";
/// How long the lease lasts unless renewed (each chunk and each turn of the loop renews it):
/// how long retention pauses when the sweeping node dies.
const LEASE_TTL: Duration = Duration::from_secs(30);

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
    /// Passes that ended with an error.
    pub errors: u64,
    /// Items skipped because their records could not be read or decided; each is looked at
    /// again an hour later. They never stop the pass for the others.
    pub item_errors: u64,
    /// Case holds whose query could not be evaluated in this pass (id → why). Each kept every
    /// item of its custodians in its date range.
    pub unevaluable_holds: BTreeMap<String, String>,
}

impl SweepStats {
    fn note_unevaluable(&mut self, matches: &CaseMatches) {
        for (hold, why) in &matches.unevaluable {
            self.unevaluable_holds.insert(hold.clone(), why.clone());
        }
    }
}

/// The sweeper's state as `GetSweeperStatus` reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweeperStatus {
    pub last_run: Option<SweepStats>,
    pub last_error: Option<String>,
    pub running: bool,
    pub totals: SweepStats,
    pub interval_seconds: u64,
    /// Destroyed items whose text the eraser has removed from the files, since start.
    pub erased_total: u64,
    pub last_erasure_error: Option<String>,
}

pub struct Sweeper {
    store: Arc<dyn Store>,
    lifecycle: Arc<Lifecycle>,
    index: Arc<SearchIndex>,
    audit: Arc<AuditLog>,
    status: Mutex<SweeperStatus>,
    /// One pass or re-plan step at a time (the loop and `RunSweep` share it).
    running: Mutex<()>,
    pending_compaction: std::sync::atomic::AtomicBool,
    /// The chunk of erasure entries whose store files were last erased, and the index
    /// sequence asked of the index for it: while the index has not merged that far, the next
    /// look only waits again instead of flushing and compacting the store once more.
    store_erased: Mutex<Option<StoreErased>>,
    /// Longest time a destroyed item's text may stay in files on disk.
    erasure_bound: Duration,
    /// Runs once, between a chunk's first look and the re-check (tests place a hold or change
    /// a policy there to show that the re-check sees it).
    #[cfg(test)]
    before_recheck: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// In a cluster, who this sweeper is to the `sweeper` lease: only its holder sweeps.
    /// `None` (embedded): this is the only sweeper.
    lease_holder: Option<String>,
    /// The epoch of the lease when last taken or renewed.
    lease_epoch: Mutex<Option<u64>>,
    /// A cluster searching splits: case holds are evaluated by the nodes holding the items'
    /// partitions, never over every split on this node.
    fanout: Option<Arc<FanOut>>,
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

/// The holds of `holds` that cover `item` at `now`, query-based case holds resolved by
/// `case_matches`.
fn covering<'a>(
    item: &'a PlannedItem,
    holds: &'a [HoldRecord],
    case_matches: &'a CaseMatches,
    now: DateTime<Utc>,
) -> impl Iterator<Item = &'a HoldRecord> + 'a {
    let matched = case_matches.holds.get(&item.id);
    holds.iter().filter(move |hold| {
        hold.covers(&item.facts.mailbox, item.facts.created_at, now, || {
            matched.is_some_and(|ids| ids.contains(&hold.id.to_string()))
        })
    })
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
        lifecycle: Arc<Lifecycle>,
        index: Arc<SearchIndex>,
        audit: Arc<AuditLog>,
        interval: Duration,
    ) -> Sweeper {
        Sweeper {
            store,
            lifecycle,
            index,
            audit,
            status: Mutex::new(SweeperStatus {
                interval_seconds: interval.as_secs(),
                ..SweeperStatus::default()
            }),
            running: Mutex::new(()),
            pending_compaction: std::sync::atomic::AtomicBool::new(false),
            store_erased: Mutex::new(None),
            erasure_bound: Duration::from_secs(86_400),
            #[cfg(test)]
            before_recheck: Mutex::new(None),
            lease_holder: None,
            lease_epoch: Mutex::new(None),
            fanout: None,
        }
    }

    /// Evaluates case holds over the leaves of a cluster searching splits.
    pub fn with_fanout(mut self, fanout: Option<Arc<FanOut>>) -> Sweeper {
        self.fanout = fanout;
        self
    }

    /// The lease this sweeper's writes are fenced on (none when it is the only sweeper).
    fn lease_fence(&self) -> Option<(String, u64)> {
        let holder = self.lease_holder.clone()?;
        let epoch = (*self.lease_epoch.lock().unwrap_or_else(|e| e.into_inner()))?;
        Some((holder, epoch))
    }

    /// Makes passes, re-plans and erasure run only while this sweeper holds the cluster's
    /// sweeper lease as `holder` (unique per process).
    pub fn with_lease(mut self, holder: String) -> Sweeper {
        self.lease_holder = Some(holder);
        self
    }

    /// Whether this sweeper may sweep now: always when it is the only one; in a cluster,
    /// while it holds (and has just renewed) the lease.
    pub fn holds_lease(&self) -> Result<bool, Error> {
        let Some(holder) = &self.lease_holder else {
            return Ok(true);
        };
        let lease = self.store.acquire_lease(SWEEPER_LEASE, holder, LEASE_TTL)?;
        let held = lease.is_some();
        *self.lease_epoch.lock().unwrap_or_else(|e| e.into_inner()) = lease.map(|l| l.epoch);
        metrics::gauge!("holdfast_sweeper_lease_held").set(if held { 1.0 } else { 0.0 });
        Ok(held)
    }

    fn require_lease(&self) -> Result<(), Error> {
        if self.holds_lease()? {
            Ok(())
        } else {
            Err(Error::FailedPrecondition(
                "another node of the cluster holds the sweeper's lease: retention runs there \
                 (RunSweep on that node runs a pass now)"
                    .into(),
            ))
        }
    }

    /// Gives the lease up (at shutdown), so that another node sweeps at once.
    fn release_lease(&self) {
        if let Some(holder) = &self.lease_holder {
            if let Err(error) = self.store.release_lease(SWEEPER_LEASE, holder) {
                tracing::warn!(%error, "cannot release the sweeper lease; it expires on its own");
            }
        }
    }

    /// Sets the longest time a destroyed item's text may stay in files on disk (default one
    /// day).
    pub fn with_erasure_bound(mut self, bound: Duration) -> Sweeper {
        self.erasure_bound = bound;
        self
    }

    pub fn erasure_bound(&self) -> Duration {
        self.erasure_bound
    }

    /// How often the loop looks for destroyed items to erase.
    fn erasure_poll(&self) -> Duration {
        (self.erasure_bound / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// Erases destroyed items' text from the files on disk once the oldest of them has waited
    /// half the bound (so that one erasure covers many destructions, and the other half of
    /// the bound is left for the work): the store's files first, then the index's segments.
    /// Returns how many items it erased.
    pub fn erase_if_due(&self, now: DateTime<Utc>) -> Result<u64, Error> {
        let half = TimeDelta::from_std(self.erasure_bound / 2).unwrap_or(TimeDelta::hours(12));
        if self.store.erasure_pending(now - half, 1)?.is_empty() {
            return Ok(0);
        }
        let mut erased = 0u64;
        loop {
            let pending = self.store.erasure_pending(now, ERASE_CHUNK)?;
            if pending.is_empty() {
                return Ok(erased);
            }
            let already = {
                let saved = self.store_erased.lock().unwrap_or_else(|e| e.into_inner());
                saved
                    .as_ref()
                    .filter(|(chunk, _)| *chunk == pending)
                    .map(|(_, through)| *through)
            };
            let through = match already {
                Some(through) => through,
                None => {
                    // Every destruction listed here queued its index work at or before this
                    // sequence.
                    let through = self.store.last_index_sequence();
                    let ids: Vec<InteractionId> = pending.iter().map(|(_, id)| *id).collect();
                    self.store.erase_from_disk(&ids)?;
                    *self.store_erased.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((pending.clone(), through));
                    through
                }
            };
            self.index.request_erasure(through);
            // A short wait only: the loop thread also runs passes and `RunSweep`. While the
            // index is rebuilding or behind, the entries stay pending and the next look (at
            // most a minute later) asks again.
            let deadline = Instant::now() + ERASE_INDEX_WAIT;
            while self.index.erased_through() < through {
                if Instant::now() > deadline {
                    let bound =
                        TimeDelta::from_std(self.erasure_bound).unwrap_or(TimeDelta::hours(24));
                    if pending
                        .first()
                        .and_then(|(micros, _)| DateTime::from_timestamp_micros(*micros))
                        .is_some_and(|oldest| oldest < now - bound)
                    {
                        // Reported (status and metrics), not only logged: destroyed text is
                        // on disk past the promised bound while the index catches up.
                        metrics::counter!("holdfast_sweeper_erasure_overdue_total").increment(1);
                        return Err(Error::Unavailable(
                            "erasure is past its bound: the search index has not yet merged \
                             away destroyed items (it is rebuilding or behind)"
                                .into(),
                        ));
                    }
                    tracing::debug!("waiting for the search index to merge away destroyed items");
                    return Ok(erased);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.store.finish_erasure(&pending)?;
            *self.store_erased.lock().unwrap_or_else(|e| e.into_inner()) = None;
            erased += pending.len() as u64;
            metrics::counter!("holdfast_sweeper_erased_total").increment(pending.len() as u64);
            self.status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .erased_total += pending.len() as u64;
            tracing::info!(erased = pending.len(), "destroyed items erased from disk");
            if pending.len() < ERASE_CHUNK {
                return Ok(erased);
            }
        }
    }

    /// `erase_if_due` as the loop runs it: a failure is logged, reported and tried again at
    /// the next look.
    fn erase_step(&self) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if !self.holds_lease()? {
                return Ok(0);
            }
            self.erase_if_due(Utc::now())
        }))
        .unwrap_or_else(|_| Err(Error::Internal("the eraser panicked".into())));
        let error = result.err().map(|error| error.to_string());
        if let Some(error) = &error {
            tracing::error!(error, "erasure failed; it will be retried");
            metrics::counter!("holdfast_sweeper_errors_total").increment(1);
        }
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_erasure_error = error;
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
        let covering: Vec<Hold> = covering(item, holds, case_matches, now)
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
            &self.lifecycle.settings,
            now,
        )
    }

    /// For items of mailboxes with query-based case holds: which holds match each item, by
    /// the search index. An item not (yet) in the index counts as matching every such hold,
    /// and so does every item of a hold whose query cannot be evaluated (saved by an older
    /// version, or the index failed): such a hold keeps all its custodians' items in its date
    /// range until it is released or can be evaluated again (fail safe: keep).
    pub fn case_matches(
        &self,
        items: &[&PlannedItem],
        holds: &HoldsByMailbox,
        now: DateTime<Utc>,
    ) -> CaseMatches {
        type Evaluated<'h> = (&'h HoldRecord, Vec<InteractionId>, BTreeSet<MailboxId>);
        let mut by_hold: BTreeMap<String, Evaluated> = BTreeMap::new();
        for item in items {
            for hold in holds.on(&item.facts.mailbox) {
                // Holds whose query alone decides whether they cover the item.
                if hold.query().is_some()
                    && hold.covers(&item.facts.mailbox, item.facts.created_at, now, || true)
                {
                    let (_, ids, mailboxes) = by_hold
                        .entry(hold.id.to_string())
                        .or_insert_with(|| (hold, Vec::new(), BTreeSet::new()));
                    ids.push(item.id);
                    mailboxes.insert(item.facts.mailbox.clone());
                }
            }
        }
        let mut matches = CaseMatches::default();
        if by_hold.is_empty() {
            return matches;
        }
        // Unreadable (cluster splits out of reach): every such hold keeps, as below. A
        // cluster searching splits asks the nodes holding the items' partitions instead.
        let searcher = match &self.fanout {
            None => Some(self.index.searcher().map_err(|error| error.to_string())),
            Some(_) => None,
        };
        for (hold_id, (hold, ids, mailboxes)) in by_hold {
            // A panic while evaluating one hold makes that hold unevaluable (it keeps), never
            // a failed pass for everyone.
            let evaluated = catch_item(|| {
                hold.leaf_query()
                    .unwrap_or_else(|| Err(Error::Internal("not a case hold".into())))
                    .map_err(|error| error.to_string())
                    .and_then(|(text, query)| match (&searcher, &self.fanout) {
                        (Some(searcher), _) => {
                            let searcher = searcher.as_ref().map_err(Clone::clone)?;
                            searcher::present_and_matching(
                                searcher,
                                &self.index.fields,
                                Some(&query),
                                &ids,
                            )
                            .map_err(|error| error.to_string())
                        }
                        (None, Some(fanout)) => {
                            let mailboxes: Vec<MailboxId> = mailboxes.into_iter().collect();
                            fanout
                                .present_and_matching(&text, &query, &mailboxes, &ids)
                                .map_err(|error| error.to_string())
                        }
                        (None, None) => Err("no index to evaluate the hold".to_string()),
                    })
            })
            .unwrap_or_else(|_| Err("evaluating the hold's query panicked".to_string()));
            match evaluated {
                Ok((present, matching)) => {
                    for id in ids {
                        if !present.contains(&id) {
                            matches.unindexed.insert(id);
                        }
                        if matching.contains(&id) || !present.contains(&id) {
                            matches.holds.entry(id).or_default().push(hold_id.clone());
                        }
                    }
                }
                Err(error) => {
                    for id in ids {
                        matches.unevaluated_items.insert(id);
                        matches.holds.entry(id).or_default().push(hold_id.clone());
                    }
                    matches.unevaluable.insert(hold_id, error);
                }
            }
        }
        matches
    }

    /// The decision for one item now, with every hold that covers it (`ExplainRetention`).
    pub fn explain(&self, item: &PlannedItem, now: DateTime<Utc>) -> Result<Decision, Error> {
        let holds = HoldsByMailbox::load(self.store.as_ref(), now)?;
        let matches = self.case_matches(&[item], &holds, now);
        let policies = self.lifecycle.policies();
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
        self.require_lease()?;
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
        let result = result.and_then(|()| self.replan_ended_delays(now));
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
            if self.lifecycle.ingest_active(INGEST_WINDOW) {
                let mut pause = chunk_started.elapsed() * YIELD_FACTOR;
                if self.lease_holder.is_some() {
                    // Never so long that the lease lapses between two chunks.
                    pause = pause.min(LEASE_TTL / 3);
                }
                std::thread::sleep(pause);
                // Moves and destructions are index work too: leave the index's headroom to
                // ingest, whose backpressure starts at `max_lag`.
                let headroom = self.index.settings.max_lag / 2;
                while self.index.lag(self.store.as_ref()) > headroom
                    && self.lifecycle.ingest_active(INGEST_WINDOW)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            chunk_started = Instant::now();
            // A pass longer than the lease renews it; a pass that lost it ends (another node
            // sweeps now, and sees what this one wrote).
            self.require_lease()?;
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
            let mut write = SweepWrite {
                consumed: due,
                ..SweepWrite::default()
            };
            // An item whose records cannot be read is skipped (and looked at again later);
            // it never stops the pass for the others.
            let mut items = Vec::with_capacity(ids.len());
            for (id, found) in ids.iter().zip(self.store.planned_items_each(&ids)?) {
                match found {
                    Ok(Some(item)) => items.push(item),
                    Ok(None) => {}
                    Err(error) => self.item_failed(*id, &error.to_string(), now, &mut write, stats),
                }
            }
            self.lifecycle.refresh()?;
            let policies = self.lifecycle.policies();
            let holds = HoldsByMailbox::load(self.store.as_ref(), now)?;
            let held_items: Vec<&PlannedItem> = items
                .iter()
                .filter(|i| matches!(i.location, ItemLocation::HoldsArea { .. }))
                .collect();
            let matches = self.case_matches(&held_items, &holds, now);
            stats.note_unevaluable(&matches);
            let mut candidates = Vec::new();
            for item in &items {
                let looked = catch_item(|| {
                    let mut part = Part::default();
                    let on = holds.on(&item.facts.mailbox);
                    let decision = self.decide(item, &policies, on, &matches, now);
                    if decision.move_now {
                        self.schedule_after_move(item, &policies, on, now, &mut part);
                        part.write.moves.push(item.clone());
                    } else if decision.destroyable {
                        part.candidate = true;
                    } else {
                        let next = self.plan_next(item, &decision, &matches, &policies, now);
                        defer(item, next, &mut part);
                    }
                    part
                });
                match looked {
                    Ok(part) => {
                        if part.candidate {
                            candidates.push(item);
                        }
                        part.merge_into(&mut write, stats);
                    }
                    Err(why) => self.item_failed(item.id, &why, now, &mut write, stats),
                }
            }
            if candidates.is_empty() && write.moves.is_empty() {
                self.apply(&write, now, stats)?;
                continue;
            }
            #[cfg(test)]
            if let Some(hook) = self.before_recheck.lock().unwrap().take() {
                hook();
            }
            // Re-check immediately before writing, with hold and policy changes locked out:
            // the policies and holds in force at this instant decide. A change made a moment
            // earlier is seen; one made later comes after this write.
            let _guard = self
                .lifecycle
                .change_guard
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // In a cluster other nodes change rules too: the store writes this step only if
            // the rules are still those read here (and this node still sweeps).
            write.rules_generation = Some(self.lifecycle.refresh()?);
            write.lease = self.lease_fence();
            let fresh_policies = self.lifecycle.policies();
            if !Arc::ptr_eq(&fresh_policies, &policies) {
                // A policy changed during the chunk: only moves it still wants are made. An
                // item no longer moved is re-planned by the re-plan the change requested.
                let moves = std::mem::take(&mut write.moves);
                for item in moves {
                    let still = catch_item(|| {
                        self.decide(
                            &item,
                            &fresh_policies,
                            holds.on(&item.facts.mailbox),
                            &matches,
                            now,
                        )
                        .move_now
                    });
                    if still == Ok(true) {
                        write.moves.push(item);
                    }
                }
            }
            if !candidates.is_empty() {
                let fresh = HoldsByMailbox::load(self.store.as_ref(), now)?;
                let matches = self.case_matches(&candidates, &fresh, now);
                stats.note_unevaluable(&matches);
                for item in candidates {
                    let ItemLocation::HoldsArea { reason, moved_at } = item.location else {
                        continue;
                    };
                    let looked = catch_item(|| {
                        let mut part = Part::default();
                        let on = fresh.on(&item.facts.mailbox);
                        let decision = self.decide(item, &fresh_policies, on, &matches, now);
                        if decision.destroyable {
                            part.destroy = Some(Disposition {
                                id: item.id,
                                mailbox: item.facts.mailbox.clone(),
                                content_sha256: item.facts.content_sha256.clone(),
                                created_at: item.facts.created_at,
                                moved_at,
                                purged_at: now,
                                reason,
                                policies: deciding_policies(&decision),
                            });
                        } else {
                            let next =
                                self.plan_next(item, &decision, &matches, &fresh_policies, now);
                            defer(item, next, &mut part);
                        }
                        part
                    });
                    match looked {
                        Ok(mut part) => {
                            if let Some(disposition) = part.destroy.take() {
                                write.destroys.push((item.clone(), disposition));
                            }
                            part.merge_into(&mut write, stats);
                        }
                        Err(why) => self.item_failed(item.id, &why, now, &mut write, stats),
                    }
                }
            }
            self.apply(&write, now, stats)?;
        }
    }

    /// Skips an item that cannot be read or decided: counted, logged (its id and why, never
    /// content), and looked at again later so that a repaired record is picked up.
    fn item_failed(
        &self,
        id: InteractionId,
        why: &str,
        now: DateTime<Utc>,
        write: &mut SweepWrite,
        stats: &mut SweepStats,
    ) {
        tracing::warn!(%id, error = why, "sweeper skipped an item it cannot handle");
        metrics::counter!("holdfast_sweeper_item_errors_total").increment(1);
        stats.item_errors += 1;
        write.schedule.push((now + ITEM_ERROR_RETRY, id));
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
        part: &mut Part,
    ) {
        let moved = PlannedItem {
            location: ItemLocation::Active
                .move_to_holds_area(holdfast_retention::MoveReason::Expired, now),
            ..item.clone()
        };
        let after = self.decide(&moved, policies, holds, &CaseMatches::default(), now);
        if after.destroyable || holds.iter().any(|h| h.query().is_some()) {
            part.write.schedule.push((now, item.id));
        } else {
            let next = self.plan_next(&moved, &after, &CaseMatches::default(), policies, now);
            defer(&moved, next, part);
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
            _ if held && matches.unevaluated_items.contains(&item.id) => {
                Some(now + HOLD_ERROR_RETRY)
            }
            _ => None,
        };
        (next, skipped_held)
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
        if !self.holds_lease()? {
            return Ok(false);
        }
        self.lifecycle.refresh()?;
        if self.store.enforces_locks() {
            self.retry_locks(now)?;
        }
        let Some(job) = self.lifecycle.replan_job()? else {
            return Ok(false);
        };
        let scanned = self.store.scan_planned_items(job.after, REPLAN_CHUNK)?;
        let policies = self.lifecycle.policies();
        let mut schedule = Vec::new();
        let mut item_errors = 0u64;
        for entry in &scanned {
            let item = match entry {
                Ok(item) if job.scope.contains(&item.facts.mailbox) => item,
                Ok(_) => continue,
                Err((id, error)) => {
                    tracing::warn!(%id, %error, "re-plan skipped an item it cannot read");
                    item_errors += 1;
                    continue;
                }
            };
            // Holds are left to the pass: an entry at the earliest time retention allows is
            // early at worst, never late.
            let planned = catch_item(|| {
                let decision = self.decide(item, &policies, &[], &CaseMatches::default(), now);
                match (item.location, decision.delete_at) {
                    (ItemLocation::Active, Some(at)) => Some(at),
                    (ItemLocation::Active, None) => None,
                    (ItemLocation::HoldsArea { .. }, _) if decision.destroyable => Some(now),
                    (ItemLocation::HoldsArea { .. }, _) => decision.next_check,
                }
            });
            match planned {
                Ok(Some(at)) => schedule.push((at.max(item.facts.created_at), item.id)),
                Ok(None) => {}
                Err(why) => {
                    tracing::warn!(id = %item.id, error = why, "re-plan skipped an item it cannot decide");
                    item_errors += 1;
                }
            }
        }
        if item_errors > 0 {
            metrics::counter!("holdfast_sweeper_item_errors_total").increment(item_errors);
            self.status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .totals
                .item_errors += item_errors;
        }
        self.store.schedule(&schedule)?;
        if self.store.enforces_locks() {
            let in_scope: Vec<&PlannedItem> = scanned
                .iter()
                .filter_map(|entry| entry.as_ref().ok())
                .filter(|item| job.scope.contains(&item.facts.mailbox))
                .collect();
            self.sync_locks(&in_scope, &policies, now)?;
        }
        metrics::counter!("holdfast_sweeper_replanned_total").increment(scanned.len() as u64);
        let more = scanned.len() == REPLAN_CHUNK;
        let after = if more {
            scanned.last().map(|entry| match entry {
                Ok(item) => item.id,
                Err((id, _)) => *id,
            })
        } else {
            None
        };
        self.lifecycle.replan_progress(job.generation, after)?;
        Ok(more || self.lifecycle.replan_job()?.is_some())
    }

    /// Brings the engine's locks on `items`' content in step with the rules at `now`: the
    /// retention the policies want and a legal hold while any hold covers the item (a case
    /// hold whose query cannot be evaluated covers all it may cover).
    fn sync_locks(
        &self,
        items: &[&PlannedItem],
        policies: &[Policy],
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let holds = HoldsByMailbox::load(self.store.as_ref(), now)?;
        let matches = self.case_matches(items, &holds, now);
        let mut wants: Vec<(InteractionId, LockWant)> = Vec::with_capacity(items.len());
        for item in items {
            // One item that cannot be decided is skipped, never the chunk.
            let want = catch_item(|| {
                let facts = &item.facts;
                let (_, retention) =
                    self.lifecycle
                        .plan_new(policies, &facts.mailbox, &facts.app, facts.created_at);
                let held = covering(item, holds.on(&facts.mailbox), &matches, now)
                    .next()
                    .is_some();
                LockWant {
                    retention,
                    legal_hold: held,
                }
            });
            match want {
                Ok(want) => wants.push((item.id, want)),
                Err(why) => {
                    tracing::warn!(id = %item.id, error = why, "cannot decide an item's locks")
                }
            }
        }
        // The engine's calls may take a while: only while this node still sweeps.
        self.require_lease()?;
        let (changed, failed) = self.store.sync_locks(&wants)?;
        metrics::counter!("holdfast_sweeper_locks_changed_total").increment(changed);
        if failed > 0 {
            metrics::counter!("holdfast_sweeper_lock_failures_total").increment(failed);
        }
        Ok(())
    }

    /// Syncs again the locks of items whose change the engine did not accept before.
    fn retry_locks(&self, now: DateTime<Utc>) -> Result<(), Error> {
        let ids = self.store.lock_retries(LOCK_RETRY_CHUNK)?;
        if ids.is_empty() {
            return Ok(());
        }
        let items: Vec<PlannedItem> = self
            .store
            .planned_items_each(&ids)?
            .into_iter()
            .filter_map(|found| found.ok().flatten())
            .collect();
        let items: Vec<&PlannedItem> = items.iter().collect();
        self.lifecycle.refresh()?;
        let policies = self.lifecycle.policies();
        self.sync_locks(&items, &policies, now)
    }

    /// In a store that enforces locks, a delay hold that ended since the last look re-plans
    /// its mailboxes, so that the legal holds it set are cleared (when nothing else holds).
    fn replan_ended_delays(&self, now: DateTime<Utc>) -> Result<(), Error> {
        if !self.store.enforces_locks() {
            return Ok(());
        }
        let since = self
            .store
            .get_meta(META_LOCKS_DELAYS_ENDED)?
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| DateTime::parse_from_rfc3339(&text).ok())
            .map(|time| time.with_timezone(&Utc));
        let ended: BTreeSet<MailboxId> = self
            .store
            .list_holds()?
            .into_iter()
            .filter(|hold| hold.released_at.is_none())
            .filter(|hold| match hold.kind {
                HoldKind::Delay { until } => until <= now && since.is_none_or(|s| until > s),
                _ => false,
            })
            .flat_map(|hold| hold.mailboxes)
            .collect();
        if !ended.is_empty() {
            self.lifecycle
                .request_replan(ReplanScope::Mailboxes(ended), now)?;
        }
        self.store
            .put_meta(META_LOCKS_DELAYS_ENDED, Some(now.to_rfc3339().as_bytes()))?;
        Ok(())
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
            totals.item_errors += stats.item_errors;
            totals
                .unevaluable_holds
                .extend(stats.unevaluable_holds.clone());
        }
        // The reason quotes parts of the hold's query (confidential case terms): it goes to
        // `SweeperStatus` for administrators, never to the log.
        for hold in stats.unevaluable_holds.keys() {
            tracing::warn!(
                hold,
                "a case hold's query cannot be evaluated; every item of its custodians is kept"
            );
        }
        metrics::counter!("holdfast_sweeper_unevaluable_holds_total")
            .increment(stats.unevaluable_holds.len() as u64);
        metrics::gauge!("holdfast_sweeper_unevaluable_holds")
            .set(stats.unevaluable_holds.len() as f64);
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
    /// Holds whose query could not be evaluated, with why: they count as matching every item
    /// of their custodians in their date range.
    pub unevaluable: BTreeMap<String, String>,
    /// Items kept only because a hold could not be evaluated.
    pub unevaluated_items: HashSet<InteractionId>,
}

/// What deciding one item adds to a chunk's write. It is built apart from the chunk's write
/// so that a panic while deciding one item costs only that item.
#[derive(Default)]
struct Part {
    write: SweepWrite,
    /// Destroyable at first look: re-checked under the guard.
    candidate: bool,
    destroy: Option<Disposition>,
    skipped_held: u64,
}

impl Part {
    fn merge_into(self, write: &mut SweepWrite, stats: &mut SweepStats) {
        write.moves.extend(self.write.moves);
        write.schedule.extend(self.write.schedule);
        if self.skipped_held > 0 {
            stats.skipped_held += self.skipped_held;
            metrics::counter!("holdfast_sweeper_skipped_held_total").increment(self.skipped_held);
        }
    }
}

/// Records the next look at an item not acted on now, and whether only a hold kept it.
fn defer(item: &PlannedItem, next: (Option<DateTime<Utc>>, bool), part: &mut Part) {
    let (at, skipped_held) = next;
    if skipped_held {
        part.skipped_held += 1;
    }
    if let Some(at) = at {
        part.write.schedule.push((at, item.id));
    }
}

/// Runs the decision work of one item; a panic becomes that item's error.
fn catch_item<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
        .map_err(|_| "deciding it panicked".to_string())
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
        sweeper.erase_step();
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
        let mut wait = if replanning {
            Duration::ZERO
        } else {
            next_pass
                .saturating_duration_since(Instant::now())
                .min(sweeper.erasure_poll())
        };
        if sweeper.lease_holder.is_some() {
            // Often enough that the holder keeps the lease between passes, and that a
            // survivor takes it soon after the holder dies.
            wait = wait.min(LEASE_TTL / 3);
        }
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
                match sweeper.holds_lease() {
                    Ok(true) => {}
                    // Another node sweeps; this one asks again a third of a lease later.
                    Ok(false) => {
                        next_pass = Instant::now() + LEASE_TTL / 3;
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot renew the sweeper lease");
                        next_pass = Instant::now() + LEASE_TTL / 3;
                        continue;
                    }
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
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                sweeper.release_lease();
                return;
            }
        }
    }
}

#[cfg(test)]
#[path = "sweeper_tests.rs"]
mod tests;
