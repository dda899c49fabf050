//! The sweeper against a real RocksDB store and tantivy index, with simulated time.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use holdfast_retention::decide::{self, Item};
use holdfast_retention::policy::{Action, Period, Policy, Scope};
use holdfast_retention::{ItemLocation, MoveReason};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ulid::Ulid;

use super::*;
use crate::audit::AuditLog;
use crate::config::RetentionConfig;
use crate::domain::{HistorySelector, InteractionContent, MailboxId, Model, Safety};
use crate::ingest::write_planned;
use crate::retention::{HoldKind, HoldRecord, PolicyRecord, ReplanScope, Rules};
use crate::search::index::{self, IndexSettings};
use crate::store::{NewInteraction, RocksStore};

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    rules: Arc<Rules>,
    index: Arc<SearchIndex>,
    sweeper: Sweeper,
    _stop: tokio_util::sync::CancellationToken,
}

fn date(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
}

fn harness(config: RetentionConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(&dir.path().join("store")).unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let (index, _indexer) = index::start(
        &dir.path().join("index"),
        Arc::clone(&store),
        IndexSettings {
            commit_interval: Duration::from_millis(20),
            ..IndexSettings::default()
        },
        stop.clone(),
    )
    .unwrap();
    let rules = Arc::new(Rules::load(Arc::clone(&store), &config).unwrap());
    let audit = Arc::new(AuditLog::open(Arc::clone(&store)).unwrap());
    let sweeper = Sweeper::new(
        Arc::clone(&store),
        Arc::clone(&rules),
        Arc::clone(&index),
        audit,
        Duration::ZERO,
    );
    Harness {
        _dir: dir,
        store,
        rules,
        index,
        sweeper,
        _stop: stop,
    }
}

fn item(mailbox: &str, app: &str, created_at: DateTime<Utc>, prompt: &str) -> NewInteraction {
    NewInteraction::new(
        InteractionId(Ulid::new()),
        created_at,
        InteractionContent {
            client_key: Ulid::new().to_string(),
            mailbox_id: MailboxId::parse(mailbox).unwrap(),
            thread_id: "t".into(),
            app: app.into(),
            created_at,
            prompt: prompt.into(),
            response: String::new(),
            model: Model::default(),
            plugins: Vec::new(),
            accessed_resources: Vec::new(),
            contexts: Vec::new(),
            safety: Safety::default(),
            sensitivity_label: String::new(),
            attributes: Default::default(),
        },
    )
}

fn policy(id: Ulid, scope: Scope, action: Action, days: u32) -> PolicyRecord {
    PolicyRecord {
        id,
        policy: Policy {
            id: id.to_string(),
            name: id.to_string(),
            scope,
            apps: None,
            action,
            period: Period::Days(days),
            enabled: true,
            locked: false,
        },
        created_at: Utc::now(),
        created_by: "test".into(),
        updated_at: Utc::now(),
    }
}

impl Harness {
    fn ingest(&self, mut items: Vec<NewInteraction>) -> Vec<InteractionId> {
        write_planned(self.store.as_ref(), &self.rules, &mut items).unwrap();
        items.iter().map(|i| i.id).collect()
    }

    fn put_policy(&self, record: PolicyRecord, now: DateTime<Utc>) {
        let scope = ReplanScope::of_policy(&record.policy);
        self.rules
            .change_policies(scope, now, move |store| Ok(store.put_policy(&record)?))
            .unwrap();
    }

    fn put_hold(&self, record: HoldRecord) {
        self.store.put_hold(&record).unwrap();
    }

    /// Re-plans to the end, then one pass.
    fn sweep(&self, now: DateTime<Utc>) -> SweepStats {
        while self.sweeper.replan_step(now).unwrap() {}
        self.sweeper.run_once(now).unwrap()
    }

    fn wait_for_index(&self) {
        for _ in 0..500 {
            if self.index.lag(self.store.as_ref()) == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the index did not catch up");
    }

    fn exists(&self, id: InteractionId) -> bool {
        self.store.get_interaction(id).unwrap().is_some()
    }
}

#[test]
fn moves_at_delete_at_and_destroys_after_the_minimum_age_with_a_disposition() {
    let h = harness(RetentionConfig::default());
    let created = date(2025, 3, 1);
    h.put_policy(
        policy(
            Ulid::new(),
            Scope::OrgWide {
                exclude: BTreeSet::new(),
            },
            Action::DeleteOnly,
            30,
        ),
        created,
    );
    let ids = h.ingest(vec![item("alice@contoso.com", "Word", created, "hello")]);
    let id = ids[0];

    // Before delete_at nothing happens, and a pass with nothing due reads nothing.
    let stats = h.sweep(created + TimeDelta::days(29));
    assert_eq!((stats.moved, stats.destroyed), (0, 0));
    assert!(h.store.get_interaction(id).unwrap().unwrap().location == ItemLocation::Active);

    let moved_at = created + TimeDelta::days(30);
    let stats = h.sweep(moved_at);
    assert_eq!(stats.moved, 1);
    let location = h.store.get_interaction(id).unwrap().unwrap().location;
    assert_eq!(
        location,
        ItemLocation::HoldsArea {
            reason: MoveReason::Expired,
            moved_at
        }
    );
    // The minimum age (1 day) keeps it.
    assert_eq!(h.sweep(moved_at + TimeDelta::hours(23)).destroyed, 0);
    assert!(h.exists(id));
    let stats = h.sweep(moved_at + TimeDelta::days(1));
    assert_eq!(stats.destroyed, 1);
    assert!(!h.exists(id));
    assert!(h.store.planned_items(&[id]).unwrap()[0].is_none());

    let dispositions = h.store.list_dispositions(None, None, 10).unwrap();
    assert_eq!(dispositions.len(), 1);
    let record = &dispositions[0];
    assert_eq!(record.id, id);
    assert_eq!(record.reason, MoveReason::Expired);
    assert_eq!(record.moved_at, moved_at);
    assert_eq!(record.created_at, created);
    assert_eq!(record.content_sha256.len(), 64);
    assert_eq!(record.policies.len(), 1);
    // The client key is free again and nothing is due any more.
    assert!(h
        .store
        .due_until(None, date(2100, 1, 1), 10)
        .unwrap()
        .is_empty());
    // The index drops the document.
    h.wait_for_index();
    let searcher = h.index.reader.searcher();
    let (present, _) =
        searcher::present_and_matching(&searcher, &h.index.fields, None, &[id]).unwrap();
    assert!(present.is_empty());
}

#[test]
fn holds_are_checked_right_before_destroying_and_a_release_re_plans() {
    let h = harness(RetentionConfig {
        holds_area_minimum_age_hours: 0,
        ..RetentionConfig::default()
    });
    let created = date(2025, 3, 1);
    let ids = h.ingest(vec![
        item("alice@contoso.com", "Word", created, "a"),
        item("bob@contoso.com", "Word", created, "b"),
    ]);
    let alice = MailboxId::parse("alice@contoso.com").unwrap();
    let hold = HoldRecord {
        id: Ulid::new(),
        mailboxes: [alice.clone()].into(),
        kind: HoldKind::Litigation { days: None },
        created_at: created,
        created_by: "test".into(),
        released_at: None,
        released_by: None,
    };
    h.put_hold(hold.clone());
    let now = created + TimeDelta::days(2);
    for mailbox in ["alice@contoso.com", "bob@contoso.com"] {
        h.store
            .move_to_holds_area(
                &HistorySelector {
                    mailbox_id: MailboxId::parse(mailbox).unwrap(),
                    thread_id: String::new(),
                    before: None,
                },
                MoveReason::UserDeleted,
                now,
            )
            .unwrap();
    }
    let stats = h.sweep(now);
    assert_eq!((stats.destroyed, stats.skipped_held), (1, 1));
    assert!(h.exists(ids[0]) && !h.exists(ids[1]));
    // Held forever: nothing is due for alice's item any more (a release re-plans it).
    assert!(h
        .store
        .due_until(None, date(2100, 1, 1), 10)
        .unwrap()
        .is_empty());

    // Release with a delay hold of 30 days, then re-plan the mailbox.
    let later = now + TimeDelta::days(10);
    h.put_hold(HoldRecord {
        released_at: Some(later),
        released_by: Some("test".into()),
        ..hold
    });
    h.put_hold(HoldRecord {
        id: Ulid::new(),
        mailboxes: [alice.clone()].into(),
        kind: HoldKind::Delay {
            until: later + TimeDelta::days(30),
        },
        created_at: later,
        created_by: "test".into(),
        released_at: None,
        released_by: None,
    });
    h.rules
        .request_replan(ReplanScope::Mailboxes([alice].into()), later)
        .unwrap();
    assert_eq!(h.sweep(later).destroyed, 0);
    assert_eq!(h.sweep(later + TimeDelta::days(29)).destroyed, 0);
    assert!(h.exists(ids[0]));
    assert_eq!(h.sweep(later + TimeDelta::days(30)).destroyed, 1);
    assert!(!h.exists(ids[0]));
}

#[test]
fn a_hold_placed_during_a_pass_is_seen_before_destroying() {
    let h = harness(RetentionConfig {
        holds_area_minimum_age_hours: 0,
        ..RetentionConfig::default()
    });
    let created = date(2025, 3, 1);
    let ids = h.ingest(vec![item("alice@contoso.com", "Word", created, "a")]);
    let now = created + TimeDelta::days(2);
    h.store
        .move_ids_to_holds_area(&ids, MoveReason::UserDeleted, now)
        .unwrap();
    let store = Arc::clone(&h.store);
    *h.sweeper.before_recheck.lock().unwrap() = Some(Box::new(move || {
        store
            .put_hold(&HoldRecord {
                id: Ulid::new(),
                mailboxes: [MailboxId::parse("alice@contoso.com").unwrap()].into(),
                kind: HoldKind::Litigation { days: None },
                created_at: now,
                created_by: "test".into(),
                released_at: None,
                released_by: None,
            })
            .unwrap();
    }));
    let stats = h.sweep(now);
    assert_eq!((stats.destroyed, stats.skipped_held), (0, 1));
    assert!(h.exists(ids[0]));
}

#[test]
fn a_query_based_case_hold_keeps_matching_items_only() {
    let h = harness(RetentionConfig {
        holds_area_minimum_age_hours: 0,
        ..RetentionConfig::default()
    });
    let created = date(2025, 3, 1);
    let ids = h.ingest(vec![
        item("alice@contoso.com", "Word", created, "merger with fabrikam"),
        item("alice@contoso.com", "Word", created, "lunch menu"),
        item(
            "alice@contoso.com",
            "Word",
            created + TimeDelta::days(100),
            "fabrikam again, outside the range",
        ),
    ]);
    h.put_hold(HoldRecord {
        id: Ulid::new(),
        mailboxes: [MailboxId::parse("alice@contoso.com").unwrap()].into(),
        kind: HoldKind::Case {
            case_id: Ulid::new(),
            name: "fabrikam".into(),
            query: "fabrikam".into(),
            created_from: Some(created - TimeDelta::days(1)),
            created_to: Some(created + TimeDelta::days(1)),
        },
        created_at: created,
        created_by: "test".into(),
        released_at: None,
        released_by: None,
    });
    let now = created + TimeDelta::days(200);
    h.store
        .move_ids_to_holds_area(&ids, MoveReason::PurgeRequested, now)
        .unwrap();
    h.wait_for_index();
    let stats = h.sweep(now);
    assert_eq!((stats.destroyed, stats.skipped_held), (2, 1));
    assert!(h.exists(ids[0]));
    assert!(!h.exists(ids[1]) && !h.exists(ids[2]));
}

#[test]
fn an_item_not_yet_in_the_index_counts_as_matching_a_query_hold() {
    let h = harness(RetentionConfig {
        holds_area_minimum_age_hours: 0,
        ..RetentionConfig::default()
    });
    let created = date(2025, 3, 1);
    h.put_hold(HoldRecord {
        id: Ulid::new(),
        mailboxes: [MailboxId::parse("alice@contoso.com").unwrap()].into(),
        kind: HoldKind::Case {
            case_id: Ulid::new(),
            name: "h".into(),
            query: "fabrikam".into(),
            created_from: None,
            created_to: None,
        },
        created_at: created,
        created_by: "test".into(),
        released_at: None,
        released_by: None,
    });
    let planned = PlannedItem {
        id: InteractionId(Ulid::new()),
        facts: item("alice@contoso.com", "Word", created, "x").facts(),
        location: ItemLocation::HoldsArea {
            reason: MoveReason::UserDeleted,
            moved_at: created,
        },
    };
    let decision = h
        .sweeper
        .explain(&planned, created + TimeDelta::days(1))
        .unwrap();
    assert!(!decision.destroyable);
}

/// Many items, policies and holds changing over ten simulated years: after every pass no item
/// that the rules allow to go is left (nothing is late) and every destroyed item was
/// destroyable at that moment with the holds then in force (nothing held or retained went).
#[test]
fn randomized_simulation_over_simulated_years() {
    let h = harness(RetentionConfig::default());
    let mut rng = StdRng::seed_from_u64(0x5eed_4011);
    let mailboxes = ["m0@sim.test", "m1@sim.test", "m2@sim.test", "m3@sim.test"];
    let apps = ["Word", "Teams"];
    let settings = h.rules.settings;
    let mut now = date(2020, 1, 1);
    let mut policies: Vec<PolicyRecord> = Vec::new();
    let mut facts: HashMap<InteractionId, (String, String, DateTime<Utc>)> = HashMap::new();
    let mut seen_dispositions = 0usize;
    let mut destroyed_total = 0usize;
    for step in 0..280 {
        now += TimeDelta::days(13);
        // New items, some backfilled.
        let batch: Vec<NewInteraction> = (0..rng.random_range(0..12))
            .map(|_| {
                let mailbox = mailboxes[rng.random_range(0..mailboxes.len())];
                let app = apps[rng.random_range(0..apps.len())];
                let created = now - TimeDelta::days(rng.random_range(0..800));
                item(mailbox, app, created, "sim")
            })
            .collect();
        for new in &batch {
            facts.insert(
                new.id,
                (
                    new.content.mailbox_id.to_string(),
                    new.content.app.clone(),
                    new.content.created_at,
                ),
            );
        }
        h.ingest(batch);

        match rng.random_range(0..10) {
            0 if policies.len() < 5 => {
                let scope = if rng.random_bool(0.5) {
                    Scope::OrgWide {
                        exclude: BTreeSet::new(),
                    }
                } else {
                    Scope::Include([mailboxes[rng.random_range(0..4)].to_string()].into())
                };
                let action = [
                    Action::RetainOnly,
                    Action::DeleteOnly,
                    Action::RetainThenDelete,
                ][rng.random_range(0..3)];
                let days = [30, 90, 365, 730][rng.random_range(0..4)];
                let record = policy(Ulid::new(), scope, action, days);
                policies.push(record.clone());
                h.put_policy(record, now);
            }
            1 if !policies.is_empty() => {
                let gone = policies.remove(rng.random_range(0..policies.len()));
                let scope = ReplanScope::of_policy(&gone.policy);
                h.rules
                    .change_policies(scope, now, |store| Ok(store.delete_policy(gone.id)?))
                    .unwrap();
            }
            2 if !policies.is_empty() => {
                let index = rng.random_range(0..policies.len());
                policies[index].policy.period = Period::Days([30, 90, 365][rng.random_range(0..3)]);
                h.put_policy(policies[index].clone(), now);
            }
            3 => {
                let mailbox = MailboxId::parse(mailboxes[rng.random_range(0..4)]).unwrap();
                h.put_hold(HoldRecord {
                    id: Ulid::new(),
                    mailboxes: [mailbox].into(),
                    kind: HoldKind::Litigation {
                        days: rng.random_bool(0.5).then_some(365),
                    },
                    created_at: now,
                    created_by: "sim".into(),
                    released_at: None,
                    released_by: None,
                });
            }
            4 => {
                // Release a hold (with a delay hold) or end a delay hold early.
                let active: Vec<HoldRecord> = h
                    .store
                    .list_holds()
                    .unwrap()
                    .into_iter()
                    .filter(|hold| hold.is_active(now))
                    .collect();
                if let Some(hold) = active.get(rng.random_range(0..active.len().max(1))) {
                    if let HoldKind::Litigation { .. } = hold.kind {
                        h.put_hold(HoldRecord {
                            id: Ulid::new(),
                            mailboxes: hold.mailboxes.clone(),
                            kind: HoldKind::Delay {
                                until: now + TimeDelta::days(30),
                            },
                            created_at: now,
                            created_by: "sim".into(),
                            released_at: None,
                            released_by: None,
                        });
                    }
                    h.put_hold(HoldRecord {
                        released_at: Some(now),
                        released_by: Some("sim".into()),
                        ..hold.clone()
                    });
                    h.rules
                        .request_replan(ReplanScope::Mailboxes(hold.mailboxes.clone()), now)
                        .unwrap();
                }
            }
            5 => {
                let mailbox = MailboxId::parse(mailboxes[rng.random_range(0..4)]).unwrap();
                h.store
                    .move_to_holds_area(
                        &HistorySelector {
                            mailbox_id: mailbox,
                            thread_id: String::new(),
                            before: Some(now - TimeDelta::days(rng.random_range(0..400))),
                        },
                        MoveReason::UserDeleted,
                        now,
                    )
                    .unwrap();
            }
            _ => {}
        }

        h.sweep(now);

        let in_force: Vec<Policy> = policies.iter().map(|p| p.policy.clone()).collect();
        let holds: Vec<HoldRecord> = h
            .store
            .list_holds()
            .unwrap()
            .into_iter()
            .filter(|hold| hold.is_active(now))
            .collect();
        let holds_on = |mailbox: &str| -> Vec<_> {
            holds
                .iter()
                .filter(|hold| hold.mailboxes.iter().any(|m| m.as_str() == mailbox))
                .map(HoldRecord::to_hold)
                .collect()
        };
        // Every destruction since the last step was allowed at `now`.
        let dispositions = h.store.list_dispositions(None, None, usize::MAX).unwrap();
        for record in &dispositions[seen_dispositions..] {
            let (mailbox, app, created_at) = &facts[&record.id];
            let decision = decide::decide(
                &Item {
                    mailbox,
                    app,
                    created_at: *created_at,
                    location: ItemLocation::HoldsArea {
                        reason: record.reason,
                        moved_at: record.moved_at,
                    },
                },
                &in_force,
                &holds_on(mailbox),
                &settings,
                now,
            );
            assert!(
                decision.destroyable,
                "step {step}: {} destroyed but not destroyable: {:?}",
                record.id, decision.reasons
            );
            facts.remove(&record.id);
        }
        destroyed_total += dispositions.len() - seen_dispositions;
        seen_dispositions = dispositions.len();
        // Nothing that may move or go is left behind.
        let mut after = None;
        loop {
            let items = h.store.scan_planned_items(after, 1000).unwrap();
            let Some(last) = items.last() else { break };
            after = Some(last.id);
            for stored in items {
                let decision = decide::decide(
                    &Item {
                        mailbox: stored.facts.mailbox.as_str(),
                        app: &stored.facts.app,
                        created_at: stored.facts.created_at,
                        location: stored.location,
                    },
                    &in_force,
                    &holds_on(stored.facts.mailbox.as_str()),
                    &settings,
                    now,
                );
                assert!(
                    !decision.move_now && !decision.destroyable,
                    "step {step}: {} was left behind: {:?}",
                    stored.id,
                    decision
                );
            }
        }
    }
    assert!(
        destroyed_total > 100,
        "the simulation destroyed only {destroyed_total}"
    );
}
