//! The store conformance suite: one set of cases, run against every backend. A case is a
//! function generic over a `Fixture` (a fresh, empty store that can be reopened) and bounded
//! by the seams it exercises; `conformance_cases!` instantiates cases as tests for one
//! backend. Every bug found in a backend becomes a case here.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use holdfast_retention::policy::{Action, Period, Policy, Scope};
use holdfast_retention::MoveReason;
use ulid::Ulid;

use super::keys::META_REPLAN;
use super::{
    AuditTrail, IndexFeed, Interactions, ItemStates, Leases, Metadata, NewInteraction, PolicyWrite,
    RulesWrite, StoreError, WriteOutcome,
};
use crate::domain::{
    HistorySelector, InteractionContent, InteractionId, ListQuery, MailboxId, Model, Safety,
};
use crate::records::{
    AuditIntent, AuditRecord, CaseRecord, CaseStatus, HoldKind, HoldRecord, PolicyRecord, Role,
    TokenRecord,
};

/// A backend under test.
pub trait Fixture {
    type Store: ?Sized;
    /// Whether the backend can run here (a service it needs is configured); when not, its
    /// cases pass without running, saying so.
    fn available() -> bool {
        true
    }
    /// A fresh, empty store.
    fn new() -> Self;
    /// Opens the store (again: what was written before must be there). At most one opened
    /// store is alive at a time.
    fn open(&self) -> Arc<Self::Store>;
}

/// The embedded RocksDB backend in a temporary directory.
pub struct Rocks {
    dir: tempfile::TempDir,
}

impl Fixture for Rocks {
    type Store = super::RocksStore;

    fn new() -> Rocks {
        Rocks {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn open(&self) -> Arc<super::RocksStore> {
        Arc::new(super::RocksStore::open(&self.dir.path().join("store")).unwrap())
    }
}

/// The store a test above the store layer (the sweeper, search) runs on.
pub enum Backend {
    Rocks,
    /// PostgreSQL and an S3 bucket with Object Lock (fresh for the test).
    Cluster(Box<super::cluster::tests::Cluster>),
}

/// An open cluster store and its engines' fixture (drop it after everything using the store).
pub type OpenedCluster = (
    Arc<super::ClusterStore>,
    Box<super::cluster::tests::Cluster>,
);

impl Backend {
    /// Opens the store; an embedded one in `dir`. Answers it, and the embedded store or the
    /// cluster's fixture for what only that backend has.
    pub fn open(
        self,
        dir: &std::path::Path,
    ) -> (
        Arc<dyn super::Store>,
        Option<Arc<super::RocksStore>>,
        Option<OpenedCluster>,
    ) {
        match self {
            Backend::Rocks => {
                let rocks = Arc::new(super::RocksStore::open(dir).unwrap());
                (
                    Arc::clone(&rocks) as Arc<dyn super::Store>,
                    Some(rocks),
                    None,
                )
            }
            Backend::Cluster(fixture) => {
                let store = fixture.open();
                (
                    Arc::clone(&store) as Arc<dyn super::Store>,
                    None,
                    Some((store, fixture)),
                )
            }
        }
    }
}

/// Instantiates cases (functions taking a `Backend`) as tests on each backend: `rocks::case`
/// and `cluster::case`. The cluster's run only where PostgreSQL and S3 are configured (CI
/// requires them).
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod rocks {
            $(
                #[test]
                fn $case() {
                    super::$case($crate::store::conformance::Backend::Rocks);
                }
            )*
        }
        mod cluster {
            use $crate::store::conformance::Fixture;
            $(
                #[test]
                fn $case() {
                    type Cluster = $crate::store::cluster::tests::Cluster;
                    if Cluster::available() {
                        super::$case($crate::store::conformance::Backend::Cluster(Box::new(
                            Cluster::new(),
                        )));
                    }
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

/// Instantiates conformance cases as tests against one fixture.
macro_rules! conformance_cases {
    ($fixture:ty; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                if !<$fixture as $crate::store::conformance::Fixture>::available() {
                    return;
                }
                $crate::store::conformance::$case(
                    <$fixture as $crate::store::conformance::Fixture>::new(),
                );
            }
        )*
    };
}
pub(crate) use conformance_cases;

/// The cases of the seams every node of a cluster shares: metadata, the audit log, leases.
macro_rules! shared_state_cases {
    ($fixture:ty) => {
        $crate::store::conformance::conformance_cases!($fixture;
            meta_values_are_set_replaced_and_removed,
            tokens_are_kept_by_hash_and_deleted,
            policies_holds_and_cases_are_kept_in_id_order,
            a_rules_write_is_kept_whole_with_its_audit_intent,
            audit_entries_append_in_order_and_scan_from_any_sequence,
            an_append_that_does_not_follow_the_head_stores_nothing,
            two_audit_writers_on_one_store_keep_one_chain,
            a_lease_has_one_holder_until_it_is_released,
            an_expired_lease_passes_on_with_a_new_epoch,
            of_racing_contenders_exactly_one_takes_a_lease,
        );
    };
}
pub(crate) use shared_state_cases;

/// The cases of item content, state and the index feed.
macro_rules! item_cases {
    ($fixture:ty) => {
        $crate::store::conformance::conformance_cases!($fixture;
            records_round_trip_with_their_digest,
            idempotency_holds_within_a_group_and_across_groups,
            moving_hides_items_from_the_listing_only,
            writes_and_moves_queue_index_work_in_order_and_survive_reopening,
        );
    };
}
pub(crate) use item_cases;

mod rocks {
    super::shared_state_cases!(super::Rocks);
    super::item_cases!(super::Rocks);
}

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, day, 0, 0, 0).unwrap()
}

pub(crate) fn content(client_key: &str, day: u32, thread: &str) -> InteractionContent {
    InteractionContent {
        client_key: client_key.into(),
        mailbox_id: MailboxId::parse("alice@contoso.com").unwrap(),
        thread_id: thread.into(),
        app: "Word".into(),
        created_at: at(day),
        prompt: "p \"quoted\" \u{e9}".into(),
        response: String::new(),
        model: Model::default(),
        plugins: Vec::new(),
        accessed_resources: Vec::new(),
        contexts: Vec::new(),
        safety: Safety::default(),
        sensitivity_label: String::new(),
        attributes: Default::default(),
    }
}

pub(crate) fn new_item(content: InteractionContent) -> NewInteraction {
    NewInteraction::new(InteractionId(Ulid::new()), Utc::now(), content)
}

pub fn records_round_trip_with_their_digest<F: Fixture>(fixture: F)
where
    F::Store: Interactions,
{
    let item = new_item(content("k1", 1, "t"));
    {
        let store = fixture.open();
        assert_eq!(
            store
                .write_interactions(std::slice::from_ref(&item))
                .unwrap(),
            [WriteOutcome::Created(item.id)]
        );
    }
    let store = fixture.open();
    let stored = store.get_interaction(item.id).unwrap().unwrap();
    assert_eq!(stored.content, item.content);
    assert_eq!(stored.received_at, item.received_at);
    assert_eq!(
        stored.content_sha256,
        InteractionContent::digest(&item.content.canonical_encoding())
    );
    assert!(stored.location.is_visible_to_user());
    assert!(store
        .get_interaction(InteractionId(Ulid::new()))
        .unwrap()
        .is_none());
}

pub fn idempotency_holds_within_a_group_and_across_groups<F: Fixture>(fixture: F)
where
    F::Store: Interactions,
{
    let store = fixture.open();
    let first = new_item(content("k", 1, ""));
    let same = new_item(content("k", 1, ""));
    let changed = new_item(content("k", 2, ""));
    let outcomes = store
        .write_interactions(&[first.clone(), same.clone(), changed.clone()])
        .unwrap();
    assert_eq!(
        outcomes,
        [
            WriteOutcome::Created(first.id),
            WriteOutcome::Duplicate(first.id),
            WriteOutcome::Conflict(first.id)
        ]
    );
    assert_eq!(
        store.write_interactions(&[changed]).unwrap(),
        [WriteOutcome::Conflict(first.id)]
    );
    assert!(store.get_interaction(same.id).unwrap().is_none());
    // The same client key in another mailbox is another item.
    let mut elsewhere = content("k", 1, "");
    elsewhere.mailbox_id = MailboxId::parse("bob@contoso.com").unwrap();
    let elsewhere = new_item(elsewhere);
    assert_eq!(
        store
            .write_interactions(std::slice::from_ref(&elsewhere))
            .unwrap(),
        [WriteOutcome::Created(elsewhere.id)]
    );
}

pub fn moving_hides_items_from_the_listing_only<F: Fixture>(fixture: F)
where
    F::Store: Interactions + ItemStates,
{
    let store = fixture.open();
    let items: Vec<_> = (1..=5)
        .map(|day| new_item(content(&format!("k{day}"), day, "t")))
        .collect();
    store.write_interactions(&items).unwrap();
    let mailbox = MailboxId::parse("alice@contoso.com").unwrap();
    let query = ListQuery {
        mailbox_id: mailbox.clone(),
        thread_id: String::new(),
        created_from: None,
        created_to: None,
    };
    let (page, next) = store.list_active(&query, None, 2).unwrap();
    assert_eq!(page[0].content.client_key, "k5");
    let (page, _) = store.list_active(&query, next, 10).unwrap();
    assert_eq!(page.len(), 3);
    assert_eq!(page[0].content.client_key, "k3");

    let selector = HistorySelector {
        mailbox_id: mailbox.clone(),
        thread_id: "t".into(),
        before: Some(at(3)),
    };
    let now = Utc::now();
    let moved = store
        .move_to_holds_area(&selector, MoveReason::UserDeleted, now)
        .unwrap();
    assert_eq!(moved, 2);
    let (page, _) = store.list_active(&query, None, 10).unwrap();
    let keys: Vec<_> = page.iter().map(|i| i.content.client_key.as_str()).collect();
    assert_eq!(keys, ["k5", "k4", "k3"]);
    let held = store.get_interaction(items[0].id).unwrap().unwrap();
    assert_eq!(
        held.location,
        holdfast_retention::ItemLocation::HoldsArea {
            reason: MoveReason::UserDeleted,
            moved_at: now
        }
    );
    assert_eq!(store.count_mailbox(&mailbox).unwrap(), (3, 2));
}

pub fn writes_and_moves_queue_index_work_in_order_and_survive_reopening<F: Fixture>(fixture: F)
where
    F::Store: Interactions + ItemStates + IndexFeed,
{
    let item = |client_key: &str| {
        let mut content = content(client_key, 1, "");
        content.mailbox_id = MailboxId::parse("q@contoso.com").unwrap();
        new_item(content)
    };
    let (a, b, c) = (item("a"), item("b"), item("c"));
    {
        let store = fixture.open();
        store.write_interactions(&[a.clone(), b.clone()]).unwrap();
        // A duplicate queues nothing.
        store.write_interactions(std::slice::from_ref(&a)).unwrap();
        let selector = HistorySelector {
            mailbox_id: MailboxId::parse("q@contoso.com").unwrap(),
            thread_id: String::new(),
            before: None,
        };
        store
            .move_to_holds_area(&selector, MoveReason::UserDeleted, Utc::now())
            .unwrap();
        let work = store.index_queue_after(0, 100).unwrap();
        let sequences: Vec<u64> = work.iter().map(|(s, _)| *s).collect();
        assert_eq!(sequences, [1, 2, 3, 4]);
        assert_eq!(work[0].1, a.id);
        assert_eq!(store.index_queue_after(2, 100).unwrap().len(), 2);
        store.trim_index_queue(4).unwrap();
        assert!(store.index_queue_after(0, 100).unwrap().is_empty());
        assert_eq!(store.last_index_sequence(), 4);
    }
    // Reopened with an empty queue, sequences go on from where they were.
    let store = fixture.open();
    assert_eq!(store.last_index_sequence(), 4);
    store.write_interactions(std::slice::from_ref(&c)).unwrap();
    assert_eq!(store.index_queue_after(0, 100).unwrap(), [(5, c.id)]);

    let all = store.scan_interactions(None, 10).unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|pair| pair[0].id < pair[1].id));
    for item in &all {
        assert_eq!(item.location.is_visible_to_user(), item.id == c.id);
    }
    let rest = store.scan_interactions(Some(all[0].id), 10).unwrap();
    assert_eq!(rest.len(), 2);
    let got = store
        .get_interactions(&[c.id, InteractionId(Ulid::new())])
        .unwrap();
    assert!(got[0].is_some() && got[1].is_none());
}

pub fn meta_values_are_set_replaced_and_removed<F: Fixture>(fixture: F)
where
    F::Store: Metadata,
{
    {
        let store = fixture.open();
        assert_eq!(store.get_meta(b"a").unwrap(), None);
        store.put_meta(b"a", Some(b"one")).unwrap();
        store.put_meta(b"a", Some(b"two")).unwrap();
        store.put_meta(b"b\0\xff", Some(&[0, 255, 7])).unwrap();
        store.put_meta(b"gone", Some(b"x")).unwrap();
        store.put_meta(b"gone", None).unwrap();
        // Removing what is not there is not an error.
        store.put_meta(b"never", None).unwrap();
    }
    let store = fixture.open();
    assert_eq!(store.get_meta(b"a").unwrap().as_deref(), Some(&b"two"[..]));
    assert_eq!(
        store.get_meta(b"b\0\xff").unwrap().as_deref(),
        Some(&[0, 255, 7][..])
    );
    assert_eq!(store.get_meta(b"gone").unwrap(), None);
}

fn token(name: &str) -> TokenRecord {
    TokenRecord {
        name: name.into(),
        roles: BTreeSet::from([Role::Ingest]),
        created_at: at(1),
        created_by: "admin".into(),
    }
}

pub fn tokens_are_kept_by_hash_and_deleted<F: Fixture>(fixture: F)
where
    F::Store: Metadata,
{
    {
        let store = fixture.open();
        assert!(store.list_tokens().unwrap().is_empty());
        store.put_token([9; 32], &token("nine")).unwrap();
        store.put_token([1; 32], &token("one")).unwrap();
        store.put_token([5; 32], &token("five")).unwrap();
        store.put_token([5; 32], &token("five again")).unwrap();
        store.delete_token([9; 32]).unwrap();
        store.delete_token([7; 32]).unwrap();
    }
    let store = fixture.open();
    assert_eq!(
        store.list_tokens().unwrap(),
        [([1; 32], token("one")), ([5; 32], token("five again"))]
    );
}

fn policy(id: Ulid, days: u32) -> PolicyRecord {
    PolicyRecord {
        id,
        policy: Policy {
            id: id.to_string(),
            name: format!("keep {days} days"),
            scope: Scope::OrgWide {
                exclude: BTreeSet::new(),
            },
            apps: None,
            action: Action::RetainThenDelete,
            period: Period::Days(days),
            enabled: true,
            locked: false,
        },
        created_at: at(1),
        created_by: "admin".into(),
        updated_at: at(2),
    }
}

fn hold(id: Ulid, mailbox: &str) -> HoldRecord {
    HoldRecord {
        id,
        mailboxes: BTreeSet::from([MailboxId::parse(mailbox).unwrap()]),
        kind: HoldKind::Litigation { days: None },
        created_at: at(1),
        created_by: "officer".into(),
        released_at: None,
        released_by: None,
    }
}

fn case(id: Ulid, name: &str) -> CaseRecord {
    CaseRecord {
        id,
        name: name.into(),
        description: String::new(),
        status: CaseStatus::Open,
        members: BTreeSet::from(["reviewer".to_string()]),
        custodians: BTreeSet::from([MailboxId::parse("alice@contoso.com").unwrap()]),
        created_at: at(1),
        created_by: "manager".into(),
        closed_at: None,
    }
}

/// Ids in increasing order.
fn ids(n: usize) -> Vec<Ulid> {
    let mut ids: Vec<Ulid> = (0..n).map(|_| Ulid::new()).collect();
    ids.sort();
    ids
}

pub fn policies_holds_and_cases_are_kept_in_id_order<F: Fixture>(fixture: F)
where
    F::Store: Metadata,
{
    let id = ids(3);
    {
        let store = fixture.open();
        for (i, id) in id.iter().enumerate().rev() {
            store.put_policy(&policy(*id, 30 * (i as u32 + 1))).unwrap();
            store.put_hold(&hold(*id, "alice@contoso.com")).unwrap();
            store.put_case(&case(*id, &format!("case {i}"))).unwrap();
        }
        store.put_policy(&policy(id[1], 365)).unwrap();
        store.delete_policy(id[0]).unwrap();
        store.delete_policy(Ulid::new()).unwrap();
        let mut released = hold(id[2], "alice@contoso.com");
        released.released_at = Some(at(5));
        released.released_by = Some("officer".into());
        store.put_hold(&released).unwrap();
        let mut closed = case(id[0], "case 0");
        closed.status = CaseStatus::Closed;
        closed.closed_at = Some(at(6));
        store.put_case(&closed).unwrap();
    }
    let store = fixture.open();
    assert_eq!(
        store.list_policies().unwrap(),
        [policy(id[1], 365), policy(id[2], 90)]
    );
    let holds = store.list_holds().unwrap();
    assert_eq!(holds.iter().map(|h| h.id).collect::<Vec<_>>(), id);
    assert_eq!(holds[2].released_at, Some(at(5)));
    let cases = store.list_cases().unwrap();
    assert_eq!(cases.iter().map(|c| c.id).collect::<Vec<_>>(), id);
    assert_eq!(
        store.get_case(id[0]).unwrap().unwrap().status,
        CaseStatus::Closed
    );
    assert_eq!(store.get_case(id[1]).unwrap(), Some(case(id[1], "case 1")));
    assert_eq!(store.get_case(Ulid::new()).unwrap(), None);
}

fn intent(action: &str) -> AuditIntent {
    AuditIntent {
        id: Ulid::new(),
        after_sequence: 0,
        actor: "officer".into(),
        action: action.into(),
        target: "policy".into(),
        parameters: serde_json::json!({"days": 30}),
        interrupted: false,
    }
}

/// A chain of `n` entries after `head` (hashes computed as the audit log does).
fn entries(head: Option<&AuditRecord>, n: u64, actor: &str) -> Vec<AuditRecord> {
    let mut records: Vec<AuditRecord> = Vec::new();
    let (first, mut previous) =
        head.map_or((1, String::new()), |h| (h.sequence + 1, h.hash.clone()));
    for sequence in first..first + n {
        let mut record = AuditRecord {
            sequence,
            time: at(1),
            actor: actor.into(),
            action: "Test".into(),
            target: format!("t{sequence}"),
            parameters: serde_json::json!({"n": sequence}),
            result: "ok".into(),
            previous_hash: std::mem::take(&mut previous),
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        previous = record.hash.clone();
        records.push(record);
    }
    records
}

pub fn a_rules_write_is_kept_whole_with_its_audit_intent<F: Fixture>(fixture: F)
where
    F::Store: Metadata + AuditTrail,
{
    let id = ids(2);
    let first = intent("CreatePolicy");
    let second = intent("RemovePolicy");
    {
        let store = fixture.open();
        store.append_audit_records(&entries(None, 3, "a")).unwrap();
        store
            .write_rules(&RulesWrite {
                holds: vec![
                    hold(id[0], "alice@contoso.com"),
                    hold(id[1], "bob@contoso.com"),
                ],
                policy: Some(PolicyWrite::Put(policy(id[0], 30))),
                replan_job: Some(b"{\"job\":1}".to_vec()),
                replan_job_read: None,
                audit_intent: Some(first.clone()),
            })
            .unwrap();
        store
            .append_audit_records(&entries(
                store.last_audit_record().unwrap().as_ref(),
                2,
                "a",
            ))
            .unwrap();
        store
            .write_rules(&RulesWrite {
                policy: Some(PolicyWrite::Delete(id[0])),
                audit_intent: Some(second.clone()),
                ..RulesWrite::default()
            })
            .unwrap();
    }
    let store = fixture.open();
    assert!(store.list_policies().unwrap().is_empty());
    assert_eq!(store.list_holds().unwrap().len(), 2);
    assert_eq!(
        store.get_meta(META_REPLAN).unwrap().as_deref(),
        Some(&b"{\"job\":1}"[..])
    );
    let mut intents = store.audit_intents().unwrap();
    intents.sort_by_key(|i| i.after_sequence);
    // Each intent records the audit head at the time of its write.
    assert_eq!(
        intents,
        [
            AuditIntent {
                after_sequence: 3,
                ..first.clone()
            },
            AuditIntent {
                after_sequence: 5,
                ..second.clone()
            }
        ]
    );
    store.clear_audit_intent(first.id).unwrap();
    store.clear_audit_intent(Ulid::new()).unwrap();
    assert_eq!(
        store
            .audit_intents()
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect::<Vec<_>>(),
        [second.id]
    );
}

pub fn audit_entries_append_in_order_and_scan_from_any_sequence<F: Fixture>(fixture: F)
where
    F::Store: AuditTrail,
{
    let written = entries(None, 7, "a");
    {
        let store = fixture.open();
        assert_eq!(store.last_audit_record().unwrap(), None);
        assert!(store.scan_audit_records(1, 10).unwrap().is_empty());
        store.append_audit_record(&written[0]).unwrap();
        store.append_audit_records(&written[1..]).unwrap();
        store.append_audit_records(&[]).unwrap();
    }
    let store = fixture.open();
    assert_eq!(store.last_audit_record().unwrap().as_ref(), written.last());
    assert_eq!(store.scan_audit_records(0, 100).unwrap(), written);
    assert_eq!(store.scan_audit_records(3, 2).unwrap(), written[2..4]);
    assert!(store.scan_audit_records(8, 10).unwrap().is_empty());
}

pub fn an_append_that_does_not_follow_the_head_stores_nothing<F: Fixture>(fixture: F)
where
    F::Store: AuditTrail,
{
    let store = fixture.open();
    let first = entries(None, 2, "a");
    store.append_audit_records(&first).unwrap();
    let head = first.last();
    let refused = |records: &[AuditRecord]| {
        assert!(matches!(
            store.append_audit_records(records),
            Err(StoreError::AuditHeadMoved { head_sequence: 2 })
        ));
    };
    // A second writer that still thinks the log is empty.
    refused(&entries(None, 1, "b"));
    // The right sequence after the wrong hash.
    let mut wrong_hash = entries(head, 1, "b");
    wrong_hash[0].previous_hash = "00".repeat(32);
    refused(&wrong_hash);
    // A gap, and a group that breaks in its middle: nothing of either is stored.
    refused(&entries(head, 3, "b")[1..]);
    let mut broken = entries(head, 3, "b");
    broken[2].previous_hash = broken[0].hash.clone();
    refused(&broken);
    assert_eq!(store.scan_audit_records(0, 100).unwrap(), first);
    store.append_audit_records(&entries(head, 3, "b")).unwrap();
    assert_eq!(store.last_audit_record().unwrap().unwrap().sequence, 5);
}

/// Two audit logs on one store, as two nodes on one PostgreSQL: their appends interleave in
/// one linear chain that verifies.
pub fn two_audit_writers_on_one_store_keep_one_chain<F: Fixture>(fixture: F)
where
    F::Store: AuditTrail + Sized + 'static,
{
    let store: Arc<dyn AuditTrail> = fixture.open();
    let first = crate::audit::AuditLog::open(Arc::clone(&store)).unwrap();
    let second = crate::audit::AuditLog::open(Arc::clone(&store)).unwrap();
    let event = |actor: &str| crate::audit::AuditEvent {
        actor: actor.into(),
        action: "Test",
        target: String::new(),
        parameters: serde_json::json!({}),
        result: "ok".into(),
    };
    std::thread::scope(|scope| {
        for (log, actor) in [(&first, "first"), (&second, "second")] {
            scope.spawn(move || {
                for _ in 0..50 {
                    log.append_blocking(event(actor), Utc::now()).unwrap();
                }
            });
        }
    });
    let verification = first.verify_blocking().unwrap();
    assert_eq!(verification.problem, None);
    assert_eq!(verification.num_entries, 100);
    let records = store.scan_audit_records(0, 1000).unwrap();
    assert_eq!(records.len(), 100);
    assert!(records.iter().any(|r| r.actor == "first"));
    assert!(records.iter().any(|r| r.actor == "second"));
}

pub fn a_lease_has_one_holder_until_it_is_released<F: Fixture>(fixture: F)
where
    F::Store: Leases,
{
    let store = fixture.open();
    let minute = std::time::Duration::from_secs(60);
    let first = store
        .acquire_lease("sweeper", "node-a", minute)
        .unwrap()
        .unwrap();
    assert!(first.expires_at > Utc::now());
    assert_eq!(
        store.acquire_lease("sweeper", "node-b", minute).unwrap(),
        None
    );
    // Another lease is another name.
    assert!(store
        .acquire_lease("indexer-7", "node-b", minute)
        .unwrap()
        .is_some());
    // Renewing keeps the epoch.
    let renewed = store
        .acquire_lease("sweeper", "node-a", minute)
        .unwrap()
        .unwrap();
    assert_eq!(renewed.epoch, first.epoch);
    // Only the holder can release it.
    store.release_lease("sweeper", "node-b").unwrap();
    assert_eq!(
        store.acquire_lease("sweeper", "node-b", minute).unwrap(),
        None
    );
    store.release_lease("sweeper", "node-a").unwrap();
    let taken = store
        .acquire_lease("sweeper", "node-b", minute)
        .unwrap()
        .unwrap();
    assert!(taken.epoch > first.epoch);
    assert_eq!(
        store.acquire_lease("sweeper", "node-a", minute).unwrap(),
        None
    );
}

pub fn an_expired_lease_passes_on_with_a_new_epoch<F: Fixture>(fixture: F)
where
    F::Store: Leases,
{
    let store = fixture.open();
    // Long enough that a paused test machine does not let it lapse between two steps.
    let short = std::time::Duration::from_secs(2);
    let first = store
        .acquire_lease("sweeper", "node-a", short)
        .unwrap()
        .unwrap();
    assert_eq!(
        store.acquire_lease("sweeper", "node-b", short).unwrap(),
        None
    );
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let taken = store
        .acquire_lease("sweeper", "node-b", short)
        .unwrap()
        .unwrap();
    assert!(taken.epoch > first.epoch);
    // The first holder, back after a pause, no longer holds it.
    assert_eq!(
        store.acquire_lease("sweeper", "node-a", short).unwrap(),
        None
    );
}

pub fn of_racing_contenders_exactly_one_takes_a_lease<F: Fixture>(fixture: F)
where
    F::Store: Leases + Sized + 'static,
{
    let store = fixture.open();
    let minute = std::time::Duration::from_secs(60);
    let start = std::sync::Barrier::new(8);
    let won: Vec<bool> = std::thread::scope(|scope| {
        let contenders: Vec<_> = (0..8)
            .map(|n| {
                let (store, start) = (&store, &start);
                scope.spawn(move || {
                    start.wait();
                    store
                        .acquire_lease("sweeper", &format!("node-{n}"), minute)
                        .unwrap()
                        .is_some()
                })
            })
            .collect();
        contenders.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
}
