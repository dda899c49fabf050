//! The retention lifecycle as the server runs it: stored policies and holds, their conversion
//! into the pure rules of the `holdfast-retention` crate, and `Lifecycle`, the policies in force
//! and the one way to change policies and holds. The ingest writer plans each new item by it,
//! the application layer changes it, the sweeper enforces it.
//!
//! (Two other things carry the name "retention": the `holdfast-retention` crate, the pure
//! decision rules without storage; and `service::retention`, the gRPC handlers of
//! `holdfast.v1.RetentionService`.)

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use holdfast_retention::decide::{self, Item, Settings};
use holdfast_retention::policy::{Hold, Period, Policy, Scope};
use holdfast_retention::ItemLocation;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::audit_intent::AuditIntent;
use crate::config::RetentionConfig;
use crate::domain::{InteractionId, MailboxId};
use crate::error::Error;
use crate::search::fanout::QueryText;
use crate::search::kql;
use crate::store::keys::META_REPLAN;
use crate::store::{ItemRetention, PolicyWrite, RulesWrite, Store, StoreError};

/// What "retained forever" locks content for in a storage engine that needs a date.
const FOREVER_YEARS: i64 = 100;

pub use crate::records::{HoldKind, HoldRecord, PolicyRecord};

impl HoldRecord {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.released_at.is_none()
            && match self.kind {
                HoldKind::Litigation { .. } | HoldKind::Case { .. } => true,
                HoldKind::Delay { until } => now < until,
            }
    }

    pub fn is_on(&self, mailbox: &MailboxId) -> bool {
        self.mailboxes.contains(mailbox)
    }

    /// Whether a case hold's date range admits an item created at `created_at`. Other holds
    /// have no range.
    pub fn admits_created_at(&self, created_at: DateTime<Utc>) -> bool {
        match &self.kind {
            HoldKind::Case {
                created_from,
                created_to,
                ..
            } => {
                created_from.is_none_or(|from| created_at >= from)
                    && created_to.is_none_or(|to| created_at < to)
            }
            _ => true,
        }
    }

    /// A case hold's query, when it has one (then matching needs the search index).
    pub fn query(&self) -> Option<&str> {
        match &self.kind {
            HoldKind::Case { query, .. } if !query.trim().is_empty() => Some(query),
            _ => None,
        }
    }

    /// Whether this hold covers an item of `mailbox` created at `created_at`, at `now`: the
    /// one definition of what a hold covers, for the sweeper's decisions, `ExplainRetention`
    /// and the policy preview. A hold covers an item when it is active, is on the item's
    /// mailbox, its created range (case holds) admits the item, and, for a case hold with a
    /// query, `query_matches` says the item matches it. Only that last part needs the search
    /// index; a caller that cannot evaluate it answers `true` (a hold that may keep an item
    /// counts as keeping it).
    pub fn covers(
        &self,
        mailbox: &MailboxId,
        created_at: DateTime<Utc>,
        now: DateTime<Utc>,
        query_matches: impl FnOnce() -> bool,
    ) -> bool {
        self.is_active(now)
            && self.is_on(mailbox)
            && self.admits_created_at(created_at)
            && (self.query().is_none() || query_matches())
    }

    /// A case hold's query and created range as one index query (`case_hold_query`): what
    /// the sweeper evaluates for the items of its custodians and what counts the items it
    /// keeps. `None` for holds that cover whole mailboxes.
    pub fn index_query(&self) -> Option<Result<kql::Query, Error>> {
        self.leaf_query().map(|query| query.map(|(_, query)| query))
    }

    /// `index_query`, with the text the leaves of a cluster searching splits are sent.
    pub fn leaf_query(&self) -> Option<Result<(QueryText, kql::Query), Error>> {
        match &self.kind {
            HoldKind::Case {
                query,
                created_from,
                created_to,
                ..
            } => Some(case_hold_text(query, *created_from, *created_to)),
            _ => None,
        }
    }

    /// The pure rule's view of this hold. For a case hold the caller has established that it
    /// matches the item.
    pub fn to_hold(&self) -> Hold {
        match &self.kind {
            HoldKind::Litigation { days } => Hold::Litigation {
                id: self.id.to_string(),
                days: *days,
            },
            HoldKind::Delay { until } => Hold::Delay {
                id: self.id.to_string(),
                until: *until,
            },
            HoldKind::Case { case_id, .. } => Hold::Case {
                id: self.id.to_string(),
                case_id: case_id.to_string(),
            },
        }
    }
}

/// What a case hold matches, as one query: its KQL query (if any) and its created range.
/// `location:` is refused: a hold keeps an item wherever it is, and an item's location
/// changes when it moves, so a hold limited by location would let go of what it held.
pub fn case_hold_query(
    text: &str,
    created_from: Option<DateTime<Utc>>,
    created_to: Option<DateTime<Utc>>,
) -> Result<kql::Query, Error> {
    fn mentions_location(query: &kql::Query) -> bool {
        match query {
            kql::Query::Location(_) => true,
            kql::Query::And(parts) | kql::Query::Or(parts) => parts.iter().any(mentions_location),
            kql::Query::Not(inner) => mentions_location(inner),
            _ => false,
        }
    }
    let mut parts = Vec::new();
    if !text.trim().is_empty() {
        let parsed =
            kql::parse(text).map_err(|error| Error::invalid("query", error.to_string()))?;
        if mentions_location(&parsed) {
            return Err(Error::invalid(
                "query",
                "location: has no meaning in a hold query (a hold covers an item wherever it is)",
            ));
        }
        parts.push(parsed);
    }
    if created_from.is_some() || created_to.is_some() {
        // Items' times are whole microseconds; a bound with nanoseconds rounds up, so that
        // the index admits exactly what `admits_created_at` admits (rounding down would let
        // the index miss an item at the excluded end that the hold covers).
        parts.push(kql::Query::Created {
            from: created_from.map(micros_rounded_up),
            to: created_to.map(micros_rounded_up),
        });
    }
    Ok(kql::Query::And(parts))
}

/// A case hold's query (text and created range) as the leaves of a cluster searching splits
/// are sent it (`search::fanout`), and parsed (`case_hold_query`).
pub fn case_hold_text(
    text: &str,
    created_from: Option<DateTime<Utc>>,
    created_to: Option<DateTime<Utc>>,
) -> Result<(QueryText, kql::Query), Error> {
    let query = case_hold_query(text, created_from, created_to)?;
    // The range as the query holds it (whole microseconds, rounded up).
    Ok((
        QueryText {
            text: text.to_string(),
            case_hold: Some((
                created_from.map(micros_rounded_up),
                created_to.map(micros_rounded_up),
            )),
        },
        query,
    ))
}

/// `t` in microseconds since the epoch, rounded up to the next whole microsecond.
fn micros_rounded_up(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros() + i64::from(!t.timestamp_subsec_nanos().is_multiple_of(1000))
}

pub fn settings(config: &RetentionConfig) -> Settings {
    Settings {
        default_retention: (config.default_retention_days > 0)
            .then_some(Period::Days(config.default_retention_days)),
        holds_area_minimum_age: TimeDelta::hours(i64::from(config.holds_area_minimum_age_hours)),
    }
}

/// Which stored items a re-plan looks at: every mailbox, or some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplanScope {
    All,
    Mailboxes(BTreeSet<MailboxId>),
}

impl ReplanScope {
    /// The items a policy can affect.
    pub fn of_policy(policy: &Policy) -> ReplanScope {
        match &policy.scope {
            Scope::OrgWide { .. } => ReplanScope::All,
            Scope::Include(mailboxes) => ReplanScope::Mailboxes(
                mailboxes
                    .iter()
                    .filter_map(|m| MailboxId::parse(m).ok())
                    .collect(),
            ),
        }
    }

    pub fn union(self, other: ReplanScope) -> ReplanScope {
        match (self, other) {
            (ReplanScope::Mailboxes(mut a), ReplanScope::Mailboxes(b)) => {
                a.extend(b);
                ReplanScope::Mailboxes(a)
            }
            _ => ReplanScope::All,
        }
    }

    pub fn contains(&self, mailbox: &MailboxId) -> bool {
        match self {
            ReplanScope::All => true,
            ReplanScope::Mailboxes(mailboxes) => mailboxes.contains(mailbox),
        }
    }
}

/// A pending re-plan, persisted in `meta` so that it resumes after a restart. A new request
/// widens the scope and starts the scan over (`generation` tells the sweeper its cursor is
/// stale).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplanJob {
    pub generation: u64,
    pub scope: ReplanScope,
    pub after: Option<InteractionId>,
    pub requested_at: DateTime<Utc>,
}

/// The policies in force and the locks that order retention work.
pub struct Lifecycle {
    store: Arc<dyn Store>,
    policies: RwLock<Arc<Vec<Policy>>>,
    pub settings: Settings,
    /// Held while a hold or a policy changes and while the sweeper re-checks and writes a
    /// chunk, so a change made at the same moment is either seen by the re-check or made
    /// after the destruction. Taken before the policies' lock, never after it.
    pub change_guard: Mutex<()>,
    replan_guard: Mutex<()>,
    /// When ingest last wrote (ms after `started`): the sweeper yields to ingest.
    last_ingest_ms: AtomicU64,
    started: Instant,
    /// The store's `rules_generation` the policies were loaded at: in a cluster, another
    /// node's change moves it, and `refresh` loads the policies again.
    generation: AtomicU64,
    /// The holds as last loaded and the rules generation they were loaded at, for ingest into
    /// a store that enforces locks (`holds`); `None`: load again.
    holds: Mutex<Option<(u64, Arc<Vec<HoldRecord>>)>>,
}

impl Lifecycle {
    pub fn load(store: Arc<dyn Store>, config: &RetentionConfig) -> Result<Lifecycle, StoreError> {
        let generation = store.rules_generation()?;
        let policies = store
            .list_policies()?
            .into_iter()
            .map(|r| r.policy)
            .collect();
        let lifecycle = Lifecycle {
            store,
            policies: RwLock::new(Arc::new(policies)),
            settings: settings(config),
            change_guard: Mutex::new(()),
            replan_guard: Mutex::new(()),
            last_ingest_ms: AtomicU64::new(0),
            started: Instant::now(),
            generation: AtomicU64::new(generation),
            holds: Mutex::new(None),
        };
        // Items were planned with the settings of their time: re-plan if they changed.
        let recorded = lifecycle
            .store
            .get_meta(crate::store::keys::META_RETENTION_SETTINGS)?;
        let current = serde_json::to_vec(&serde_json::json!({
            "default_retention_days": config.default_retention_days,
            "holds_area_minimum_age_hours": config.holds_area_minimum_age_hours,
        }))
        .expect("settings serialise");
        if recorded.as_deref() != Some(current.as_slice()) {
            if recorded.is_some() {
                tracing::info!("retention settings changed since the last start: re-planning");
                lifecycle.request_replan(ReplanScope::All, Utc::now())?;
            }
            lifecycle
                .store
                .put_meta(crate::store::keys::META_RETENTION_SETTINGS, Some(&current))?;
        }
        Ok(lifecycle)
    }

    /// Loads the policies again if another process sharing the store changed the rules since
    /// they were loaded, and answers the generation they are now current at. Called before
    /// planning new items and before each sweeper step (whose write is fenced on it).
    pub fn refresh(&self) -> Result<u64, StoreError> {
        let generation = self.store.rules_generation()?;
        if generation != self.generation.load(Ordering::Acquire) {
            let mut policies: Vec<Policy> = self
                .store
                .list_policies()?
                .into_iter()
                .map(|r| r.policy)
                .collect();
            policies.sort_by(|a, b| a.id.cmp(&b.id));
            *self.policies.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policies);
            self.generation.store(generation, Ordering::Release);
            tracing::info!(
                generation,
                "retention rules changed elsewhere: policies reloaded"
            );
        }
        Ok(generation)
    }

    /// The policies in force now.
    pub fn policies(&self) -> Arc<Vec<Policy>> {
        Arc::clone(&self.policies.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs `write` (which stores new items) while no policy can change, with the policies
    /// it must plan them by.
    pub fn with_policies<T>(&self, write: impl FnOnce(&[Policy]) -> T) -> T {
        let policies = self.policies.read().unwrap_or_else(|e| e.into_inner());
        let result = write(&policies);
        self.last_ingest_ms.store(
            self.started.elapsed().as_millis() as u64 + 1,
            Ordering::Relaxed,
        );
        result
    }

    /// Whether ingest wrote within `window`.
    pub fn ingest_active(&self, window: Duration) -> bool {
        let last = self.last_ingest_ms.load(Ordering::Relaxed);
        last > 0
            && (self.started.elapsed().as_millis() as u64 + 1).saturating_sub(last)
                <= window.as_millis() as u64
    }

    /// When an item just written should first be looked at: its `delete_at`.
    pub fn first_check(
        &self,
        policies: &[Policy],
        mailbox: &MailboxId,
        app: &str,
        created_at: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.plan_new(policies, mailbox, app, created_at).0
    }

    /// An item just written: its `delete_at`, and the retention a storage engine that
    /// enforces retention locks it with. When a preservation-locked policy retains it, that
    /// is the latest end of such a policy's retention, `locked` (nobody may shorten it; the
    /// rest of a longer unlocked retention is holdfast's to enforce); otherwise its
    /// `retain_until`. Retention "forever" is a date `FOREVER_YEARS` after creation: storage
    /// engines lock until a date.
    pub fn plan_new(
        &self,
        policies: &[Policy],
        mailbox: &MailboxId,
        app: &str,
        created_at: DateTime<Utc>,
    ) -> (Option<DateTime<Utc>>, Option<ItemRetention>) {
        let item = Item {
            mailbox: mailbox.as_str(),
            app,
            created_at,
            location: ItemLocation::Active,
        };
        let decision = decide::decide(&item, policies, &[], &self.settings, created_at);
        let forever = created_at
            .checked_add_signed(chrono::TimeDelta::days(365 * FOREVER_YEARS))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let locked_until = decision
            .reasons
            .iter()
            .filter_map(|reason| match reason {
                decide::Reason::RetainedBy { policy, until }
                    if policies.iter().any(|p| p.id == *policy && p.locked) =>
                {
                    Some(until.unwrap_or(forever))
                }
                _ => None,
            })
            .max();
        let retention = match (locked_until, decision.retain_until) {
            (Some(until), _) => Some(ItemRetention {
                until,
                locked: true,
            }),
            (None, decide::RetainUntil::Nothing) => None,
            (None, decide::RetainUntil::Date(until)) => Some(ItemRetention {
                until,
                locked: false,
            }),
            (None, decide::RetainUntil::Forever) => Some(ItemRetention {
                until: forever,
                locked: false,
            }),
        };
        (decision.delete_at, retention)
    }

    /// Stores a policy change and puts it in force. Ingest waits meanwhile, so every item is
    /// planned either by the old policies and then re-planned, or by the new ones. The policy,
    /// the re-plan of `scope` and the audit intent are one atomic write.
    pub fn change_policies(
        &self,
        scope: ReplanScope,
        now: DateTime<Utc>,
        change: PolicyWrite,
        intent: Option<AuditIntent>,
    ) -> Result<(), StoreError> {
        let _guard = self.change_guard.lock().unwrap_or_else(|e| e.into_inner());
        let mut policies = self.policies.write().unwrap_or_else(|e| e.into_inner());
        // The policies in force after the change, computed before it is written: once the
        // write succeeds they replace the old ones without another read that could fail and
        // leave the old policies in force over a changed store.
        let mut next: Vec<Policy> = policies.as_ref().clone();
        match &change {
            PolicyWrite::Put(record) => {
                next.retain(|policy| policy.id != record.policy.id);
                next.push(record.policy.clone());
            }
            PolicyWrite::Delete(id) => {
                let id = id.to_string();
                next.retain(|policy| policy.id != id);
            }
        }
        // The order `list_policies` gives (by id; ULIDs sort the same as text).
        next.sort_by(|a, b| a.id.cmp(&b.id));
        self.write_with_replan(
            Some(scope),
            now,
            RulesWrite {
                policy: Some(change),
                audit_intent: intent,
                ..RulesWrite::default()
            },
        )?;
        *policies = Arc::new(next);
        Ok(())
    }

    /// Stores hold records (new, released or cleared) while the sweeper cannot be between its
    /// re-check and a destruction, with the re-plan of `replan` (a release or a cleared delay
    /// hold lets items go sooner) and the audit intent, in one atomic write: a crash cannot
    /// leave a released hold whose items were never re-planned. In a store that enforces
    /// locks every hold change re-plans its mailboxes: the re-plan sets and clears the legal
    /// holds of their items' content.
    pub fn save_holds(
        &self,
        holds: Vec<HoldRecord>,
        replan: Option<ReplanScope>,
        intent: Option<AuditIntent>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _guard = self.change_guard.lock().unwrap_or_else(|e| e.into_inner());
        let replan = if self.store.enforces_locks() {
            let covered =
                ReplanScope::Mailboxes(holds.iter().flat_map(|h| h.mailboxes.clone()).collect());
            Some(replan.map_or(covered.clone(), |scope| scope.union(covered)))
        } else {
            replan
        };
        let written = self.write_with_replan(
            replan,
            now,
            RulesWrite {
                holds,
                audit_intent: intent,
                ..RulesWrite::default()
            },
        );
        *self.holds.lock().unwrap_or_else(|e| e.into_inner()) = None;
        written
    }

    /// Every stored hold (active or not), as of the rules generation of the last `refresh`:
    /// loaded again only when the rules changed since.
    pub fn holds(&self) -> Result<Arc<Vec<HoldRecord>>, StoreError> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut cached = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some((at, holds)) if *at == generation => Ok(Arc::clone(holds)),
            _ => {
                let holds = Arc::new(self.store.list_holds()?);
                *cached = Some((generation, Arc::clone(&holds)));
                Ok(holds)
            }
        }
    }

    /// Releases `hold` as `by` at `now`: each of its mailboxes gets a delay hold of
    /// `delay_days` (0: none) so that no instant is left without protection, the hold is
    /// marked released, and its mailboxes are re-planned (items it kept may now go, after the
    /// delay). One atomic write, with the audit intent: a crash leaves all of it or none.
    pub fn release_hold(
        &self,
        mut hold: HoldRecord,
        by: &str,
        delay_days: u32,
        intent: Option<AuditIntent>,
        now: DateTime<Utc>,
    ) -> Result<HoldRecord, StoreError> {
        let mut records: Vec<HoldRecord> = if delay_days == 0 {
            Vec::new()
        } else {
            hold.mailboxes
                .iter()
                .map(|mailbox| HoldRecord {
                    id: Ulid::new(),
                    mailboxes: [mailbox.clone()].into(),
                    kind: HoldKind::Delay {
                        until: now + TimeDelta::days(i64::from(delay_days)),
                    },
                    created_at: now,
                    created_by: by.to_string(),
                    released_at: None,
                    released_by: None,
                })
                .collect()
        };
        hold.released_at = Some(now);
        hold.released_by = Some(by.to_string());
        records.push(hold.clone());
        let scope = ReplanScope::Mailboxes(hold.mailboxes.clone());
        self.save_holds(records, Some(scope), intent, now)?;
        Ok(hold)
    }

    /// Asks the sweeper to re-plan the items in `scope` (in the background, resumably).
    pub fn request_replan(&self, scope: ReplanScope, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.write_with_replan(Some(scope), now, RulesWrite::default())
    }

    /// Writes `write` with, when `scope` is given, the pending re-plan widened to it.
    fn write_with_replan(
        &self,
        scope: Option<ReplanScope>,
        now: DateTime<Utc>,
        mut write: RulesWrite,
    ) -> Result<(), StoreError> {
        let _guard = self.replan_guard.lock().unwrap_or_else(|e| e.into_inner());
        let Some(scope) = scope else {
            return self.store.write_rules(&write);
        };
        // Another node may change the pending job between this read and the write: the store
        // then refuses (`Fenced`) and the job is read and widened again.
        let mut attempts = 0;
        loop {
            let (pending, read) = self.replan_job_read()?;
            let job = match pending {
                None => ReplanJob {
                    generation: 1,
                    scope: scope.clone(),
                    after: None,
                    requested_at: now,
                },
                Some(pending) => ReplanJob {
                    generation: pending.generation + 1,
                    scope: pending.scope.union(scope.clone()),
                    after: None,
                    requested_at: now,
                },
            };
            write.replan_job = Some(serde_json::to_vec(&job).expect("jobs serialise"));
            write.replan_job_read = read;
            match self.store.write_rules(&write) {
                Err(StoreError::Fenced(_)) if attempts < 10 => attempts += 1,
                other => return other,
            }
        }
    }

    pub fn replan_job(&self) -> Result<Option<ReplanJob>, StoreError> {
        let _guard = self.replan_guard.lock().unwrap_or_else(|e| e.into_inner());
        self.replan_job_unlocked()
    }

    fn replan_job_unlocked(&self) -> Result<Option<ReplanJob>, StoreError> {
        Ok(self.replan_job_read()?.0)
    }

    /// The pending job and its stored bytes.
    fn replan_job_read(&self) -> Result<(Option<ReplanJob>, Option<Vec<u8>>), StoreError> {
        match self.store.get_meta(META_REPLAN)? {
            None => Ok((None, None)),
            Some(bytes) => {
                let job = serde_json::from_slice(&bytes).map_err(|error| StoreError::Corrupt {
                    column_family: "meta",
                    reason: format!("re-plan job: {error}"),
                })?;
                Ok((Some(job), Some(bytes)))
            }
        }
    }

    /// Records progress of re-plan `generation` (`None`: finished), unless a newer request
    /// replaced it meanwhile.
    pub fn replan_progress(
        &self,
        generation: u64,
        after: Option<InteractionId>,
    ) -> Result<(), StoreError> {
        let _guard = self.replan_guard.lock().unwrap_or_else(|e| e.into_inner());
        // Only the job as read: a request another node adds meanwhile is never overwritten
        // or removed (the swap does nothing, and the widened job runs next).
        match self.replan_job_read()? {
            (Some(mut job), Some(read)) if job.generation == generation => {
                let next = after.map(|after| {
                    job.after = Some(after);
                    serde_json::to_vec(&job).expect("jobs serialise")
                });
                self.store
                    .swap_meta(META_REPLAN, Some(&read), next.as_deref())
                    .map(|_| ())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
