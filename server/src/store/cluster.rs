//! The cluster backend: every seam on shared engines, so that any number of stateless nodes
//! serve one store. Rows (item state, the due queue, idempotency, the index feed,
//! dispositions, trace states, metadata, the audit log, leases) are in PostgreSQL
//! (`PgStore`, schema `pg/0003_items.sql`); the content of each interaction is an object in
//! an S3 bucket with Object Lock (`ObjectLockStore`), whose retention the engine enforces.
//!
//! Order of writes, so that a crash never loses an acknowledged item nor leaves a row without
//! its content: an ingest marks its object keys for the janitor, writes the objects, then
//! commits the rows (clearing the marks) in one transaction; a destruction commits the row
//! deletion, its disposition and a mark of the version in one transaction, then deletes the
//! version. What a crash leaves marked is deleted by `collect_garbage` once the engine's lock
//! allows.
//!
//! The seams are synchronous and both clients block on runtimes of their own; called from an
//! async task, a call moves off the worker first (`off_async`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_retention::{ItemLocation, MoveReason};

pub mod splits;

use super::pg::PgStore;
use super::s3::{LockChange, ObjectLockStore, ObjectVersion, Retention, S3Config};
use super::{
    decode_record, AuditTrail, Disposition, Dispositions, IndexFeed, Interactions, ItemFacts,
    ItemRetention, ItemStates, Lease, Leases, LockWant, Metadata, NewInteraction, PlannedItem,
    RulesWrite, ScannedItem, Snapshots, StoreError, SweepApplied, SweepWrite, TraceStateWrite,
    TraceStates, WriteOutcome, FORGET_PER_WRITE,
};
use crate::domain::{
    search_partition, Annex, HistorySelector, InteractionId, ListCursor, ListQuery, MailboxId,
    StoredInteraction,
};
use crate::records::{AuditIntent, AuditRecord, CaseRecord, HoldRecord, PolicyRecord, TokenRecord};

/// Items moved per transaction by `move_to_holds_area`.
const MOVE_CHUNK: i64 = 10_000;
/// A feed reader (a node's index) not seen for this long no longer holds the feed back.
const READER_TIMEOUT_SECONDS: i64 = 24 * 3600;
/// How long an object may stay marked before the janitor may delete it: longer than any
/// ingest takes from marking to commit (S3 operations time out after a minute).
const JANITOR_GRACE: Duration = Duration::from_secs(600);
const JANITOR_INTERVAL: Duration = Duration::from_secs(60);
/// How often a node says it still reads the feed.
const READER_HEARTBEAT: Duration = Duration::from_secs(60);
/// How often the cached head of the index feed is refreshed from PostgreSQL.
const FEED_HEAD_REFRESH: Duration = Duration::from_millis(100);

pub struct ClusterStore {
    pg: PgStore,
    objects: ObjectLockStore,
    /// The last index-feed sequence seen (own writes, and a refresher thread for others'):
    /// `last_index_sequence` is asked on every ingest and must not cost a round trip.
    feed_head: Arc<AtomicU64>,
    /// This node's name: its index's reader of the feed.
    node: String,
}

/// Runs a blocking store call. Off an async worker thread it runs in place; on one, it moves
/// off first (the PostgreSQL and S3 clients block on runtimes of their own, which a worker
/// thread may not do).
pub(crate) fn off_async<T: Send>(call: impl FnOnce() -> T + Send) -> T {
    match tokio::runtime::Handle::try_current() {
        Err(_) => call(),
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(call)
        }
        Ok(_) => std::thread::scope(|scope| {
            scope
                .spawn(call)
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
    }
}

/// The engine's retention for an item's retention: COMPLIANCE for a preservation-locked
/// policy's, else GOVERNANCE.
fn engine_retention(retention: ItemRetention) -> Retention {
    if retention.locked {
        Retention::Compliance {
            until: retention.until,
        }
    } else {
        Retention::Governance {
            until: retention.until,
        }
    }
}

fn object_key(id: InteractionId) -> String {
    format!("interactions/{id}")
}

fn id_of(table: &'static str, bytes: &[u8]) -> Result<InteractionId, StoreError> {
    let bytes: [u8; 16] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        column_family: table,
        reason: "id is not 16 bytes".into(),
    })?;
    Ok(InteractionId::from_bytes(bytes))
}

fn ids_bytes(ids: &[InteractionId]) -> Vec<Vec<u8>> {
    ids.iter().map(|id| id.to_bytes().to_vec()).collect()
}

fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

fn location_of(text: Option<&str>) -> Result<ItemLocation, StoreError> {
    match text {
        None => Ok(ItemLocation::Active),
        Some(text) => serde_json::from_str(text).map_err(|error| StoreError::Corrupt {
            column_family: "items",
            reason: format!("location: {error}"),
        }),
    }
}

fn annex_of(text: Option<&str>) -> Result<Option<Annex>, StoreError> {
    text.map(|text| {
        serde_json::from_str(text).map_err(|error| StoreError::Corrupt {
            column_family: "items",
            reason: format!("annex: {error}"),
        })
    })
    .transpose()
}

fn moved_location(reason: MoveReason, now: DateTime<Utc>) -> String {
    serde_json::to_string(&ItemLocation::Active.move_to_holds_area(reason, now))
        .expect("locations serialise")
}

/// Appends index work for `entries` (an item and its mailbox's search partition) in
/// `transaction`, holding the feed head's row lock until the transaction ends (so sequences
/// commit in order). `fresh`: the entries are the items' ingest. Answers the last sequence.
fn append_feed(
    transaction: &mut postgres::Transaction<'_>,
    entries: &[(InteractionId, i16)],
    fresh: bool,
) -> Result<Option<u64>, StoreError> {
    if entries.is_empty() {
        return Ok(None);
    }
    let ids: Vec<InteractionId> = entries.iter().map(|(id, _)| *id).collect();
    let partitions: Vec<i16> = entries.iter().map(|(_, p)| *p).collect();
    let count = i64::try_from(ids.len()).expect("a write has fewer than 2^63 items");
    let last: i64 = transaction
        .query_one(
            "UPDATE index_feed_head SET last = last + $1 RETURNING last",
            &[&count],
        )?
        .get(0);
    let sequences: Vec<i64> = (last - count + 1..=last).collect();
    transaction.execute(
        "INSERT INTO index_feed (sequence, id, partition, fresh)
         SELECT s, i, p, $4 FROM unnest($1::bigint[], $2::bytea[], $3::smallint[]) AS u(s, i, p)",
        &[&sequences, &ids_bytes(&ids), &partitions, &fresh],
    )?;
    Ok(Some(last as u64))
}

/// Deletes the feed entries every reader has read: every node index seen in the last day, and
/// every search partition's indexer (cluster search in splits).
fn trim_feed(transaction: &mut postgres::Transaction<'_>) -> Result<(), StoreError> {
    transaction.execute(
        "DELETE FROM feed_readers WHERE seen_at < now() - $1::bigint * interval '1 second'",
        &[&READER_TIMEOUT_SECONDS],
    )?;
    // While the splits' bootstrap runs it needs the entries after its start.
    let through: Option<i64> = transaction
        .query_one(
            "SELECT least((SELECT min(position) FROM feed_readers),
                          (SELECT min(sequence) FROM split_checkpoints),
                          (SELECT bootstrap_at FROM split_head WHERE NOT bootstrapped))",
            &[],
        )?
        .get(0);
    if let Some(through) = through {
        let trimmed: i64 = transaction
            .query_one("SELECT trimmed FROM index_feed_head", &[])?
            .get(0);
        if through > trimmed {
            transaction.execute("DELETE FROM index_feed WHERE sequence <= $1", &[&through])?;
            transaction.execute(
                "UPDATE index_feed_head SET trimmed = greatest(trimmed, $1)",
                &[&through],
            )?;
        }
    }
    Ok(())
}

/// Stored items by (mailbox, client_key): their id and content digest.
type StoredKeys = HashMap<(String, String), (InteractionId, Vec<u8>)>;

/// An item row as read with its object's version.
struct Row {
    id: InteractionId,
    version_id: String,
    location: Option<String>,
    annex: Option<String>,
}

impl ClusterStore {
    /// Connects to both engines (checking the bucket's Object Lock and bringing the schema up
    /// to date), as node `node` (unique in the cluster: its index reads the feed by it).
    pub fn open(
        postgres: postgres::Config,
        max_connections: u32,
        s3: &S3Config,
        node: &str,
    ) -> Result<ClusterStore, StoreError> {
        let (pg, objects) = off_async(|| {
            Ok::<_, StoreError>((
                PgStore::connect(postgres, max_connections)?,
                ObjectLockStore::open(s3)?,
            ))
        })?;
        let store = ClusterStore {
            pg,
            objects,
            feed_head: Arc::new(AtomicU64::new(0)),
            node: node.to_string(),
        };
        off_async(|| store.refresh_feed_head())?;
        Ok(store)
    }

    fn refresh_feed_head(&self) -> Result<u64, StoreError> {
        let last: i64 = self
            .pg
            .connection()?
            .query_one("SELECT last FROM index_feed_head", &[])?
            .get(0);
        let last = u64::try_from(last).unwrap_or(0);
        Ok(self.feed_head.fetch_max(last, Ordering::AcqRel).max(last))
    }

    /// See `PgStore::release_leases_of_node`.
    pub fn release_leases_of_node(&self, node: &str, this_run: &str) -> Result<u64, StoreError> {
        off_async(|| self.pg.release_leases_of_node(node, this_run))
    }

    /// Keeps `last_index_sequence` current with other nodes' writes, until the store is
    /// dropped.
    pub fn spawn_feed_head_refresher(self: &Arc<ClusterStore>) -> std::thread::JoinHandle<()> {
        let store = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("holdfast-feed-head".into())
            .spawn(move || {
                let mut last_seen = std::time::Instant::now();
                loop {
                    let Some(store) = store.upgrade() else { return };
                    if let Err(error) = store.refresh_feed_head() {
                        tracing::warn!(%error, "cannot read the index feed's head");
                    }
                    // A live reader keeps the feed from being trimmed past it, even while
                    // its index has nothing to commit.
                    if last_seen.elapsed() >= READER_HEARTBEAT {
                        last_seen = std::time::Instant::now();
                        if let Err(error) = store.reader_heartbeat() {
                            tracing::warn!(%error, "cannot say this node still reads the feed");
                        }
                    }
                    drop(store);
                    std::thread::sleep(FEED_HEAD_REFRESH);
                }
            })
            .expect("threads start")
    }

    /// Forgets this node as a reader of the feed (its searches read splits instead), so
    /// that a position it left holds nothing back.
    pub fn forget_feed_reader(&self) -> Result<(), StoreError> {
        off_async(|| {
            self.pg
                .connection()?
                .execute("DELETE FROM feed_readers WHERE reader = $1", &[&self.node])?;
            Ok(())
        })
    }

    fn reader_heartbeat(&self) -> Result<(), StoreError> {
        self.pg.connection()?.execute(
            "UPDATE feed_readers SET seen_at = now() WHERE reader = $1",
            &[&self.node],
        )?;
        Ok(())
    }

    fn advanced_feed(&self, last: Option<u64>) {
        if let Some(last) = last {
            self.feed_head.fetch_max(last, Ordering::AcqRel);
        }
    }

    /// The stored items (by any node) with the (mailbox, client_key) of `items`: their id and
    /// content digest.
    fn stored_keys<'a>(
        &self,
        items: impl Iterator<Item = &'a NewInteraction>,
    ) -> Result<StoredKeys, StoreError> {
        let (mailboxes, client_keys): (Vec<&str>, Vec<&str>) = items
            .map(|i| (i.content.mailbox_id.as_str(), i.content.client_key.as_str()))
            .unzip();
        let rows = self.pg.connection()?.query(
            "SELECT i.mailbox, i.client_key, i.id, i.content_sha256
             FROM items i JOIN unnest($1::text[], $2::text[]) AS k(mailbox, client_key)
               ON i.mailbox = k.mailbox AND i.client_key = k.client_key",
            &[&mailboxes, &client_keys],
        )?;
        rows.iter()
            .map(|row| {
                Ok((
                    (row.get(0), row.get(1)),
                    (id_of("items", row.get(2))?, row.get(3)),
                ))
            })
            .collect()
    }

    /// Rows of `ids` (absent ones left out).
    fn rows(&self, ids: &[InteractionId]) -> Result<HashMap<InteractionId, Row>, StoreError> {
        let rows = self.pg.connection()?.query(
            "SELECT id, version_id, location, annex FROM items WHERE id = ANY($1)",
            &[&ids_bytes(ids)],
        )?;
        rows.iter()
            .map(|row| {
                let id = id_of("items", row.get(0))?;
                Ok((
                    id,
                    Row {
                        id,
                        version_id: row.get(1),
                        location: row.get(2),
                        annex: row.get(3),
                    },
                ))
            })
            .collect()
    }

    /// The stored interactions of `rows`, in order: their objects, read at once.
    fn load(&self, rows: Vec<Row>) -> Result<Vec<Option<StoredInteraction>>, StoreError> {
        let versions: Vec<ObjectVersion> = rows
            .iter()
            .map(|row| ObjectVersion {
                key: object_key(row.id),
                version_id: row.version_id.clone(),
            })
            .collect();
        let bodies = self.objects.get_many(&versions)?;
        let mut loaded = Vec::with_capacity(rows.len());
        let mut missing = Vec::new();
        for (row, body) in rows.iter().zip(bodies) {
            match body {
                Some(bytes) => loaded.push(Some(decode_record(
                    row.id,
                    &bytes,
                    location_of(row.location.as_deref())?,
                    annex_of(row.annex.as_deref())?,
                )?)),
                None => {
                    missing.push(row.id);
                    loaded.push(None);
                }
            }
        }
        if !missing.is_empty() {
            // Destroyed between reading the row and the object (the row goes first), or lost.
            let still = self.rows(&missing)?;
            if let Some(id) = missing.iter().find(|id| still.contains_key(id)) {
                return Err(StoreError::Corrupt {
                    column_family: "items",
                    reason: format!("item {id} has a row but its object version is missing"),
                });
            }
        }
        Ok(loaded)
    }

    /// Deletes object versions marked for the janitor in `object_gc` whose mark is older
    /// than `older_than` and that no item row names, as far as the engine's lock allows
    /// (holdfast may bypass GOVERNANCE retention for an object no item owns). Answers
    /// (versions deleted, marks still waiting on a lock).
    pub fn collect_garbage(&self, older_than: Duration) -> Result<(u64, u64), StoreError> {
        off_async(|| {
            let age = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
            // The marks stay locked (not deleted) while their versions are deleted: an ingest
            // still committing rows for one waits for this transaction, then finds its mark
            // gone and fails; a failure here leaves every mark as it was.
            let mut connection = self.pg.connection()?;
            let mut transaction = connection.transaction()?;
            let marks = transaction.query(
                "SELECT object_key, version_id FROM object_gc
                 WHERE since < now() - $1::bigint * interval '1 millisecond'
                 ORDER BY since LIMIT 200 FOR UPDATE SKIP LOCKED",
                &[&age],
            )?;
            let (mut deleted, mut waiting) = (0, 0);
            for mark in &marks {
                let (key, version_id): (String, String) = (mark.get(0), mark.get(1));
                let owner = key
                    .strip_prefix("interactions/")
                    .and_then(|id| id.parse::<ulid::Ulid>().ok())
                    .map(InteractionId);
                let owned: HashSet<String> = match owner {
                    Some(id) => transaction
                        .query(
                            "SELECT version_id FROM items WHERE id = $1",
                            &[&id.to_bytes().to_vec()],
                        )?
                        .iter()
                        .map(|row| row.get(0))
                        .collect(),
                    None => HashSet::new(),
                };
                let versions = if version_id.is_empty() {
                    self.objects.versions_of(&key)?
                } else {
                    vec![ObjectVersion {
                        key: key.clone(),
                        version_id: version_id.clone(),
                    }]
                };
                let mut locked = false;
                for version in versions {
                    if owned.contains(&version.version_id) {
                        continue;
                    }
                    match self.destroy_unowned(&version) {
                        Ok(()) => deleted += 1,
                        Err(StoreError::Locked(_)) => locked = true,
                        Err(error) => return Err(error),
                    }
                }
                if locked {
                    // The engine keeps it (COMPLIANCE retention or a legal hold): looked at
                    // again after another grace period, behind newer marks.
                    waiting += 1;
                    transaction.execute(
                        "UPDATE object_gc SET since = now() WHERE object_key = $1 AND version_id = $2",
                        &[&key, &version_id],
                    )?;
                } else {
                    transaction.execute(
                        "DELETE FROM object_gc WHERE object_key = $1 AND version_id = $2",
                        &[&key, &version_id],
                    )?;
                }
            }
            transaction.commit()?;
            Ok((deleted, waiting))
        })
    }

    /// Runs `collect_garbage` on marks older than `JANITOR_GRACE` every `JANITOR_INTERVAL` while
    /// this node holds the janitor lease as `holder`, until the store is dropped.
    pub fn spawn_janitor(self: &Arc<ClusterStore>, holder: String) -> std::thread::JoinHandle<()> {
        let store = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("holdfast-janitor".into())
            .spawn(move || loop {
                std::thread::sleep(JANITOR_INTERVAL);
                let Some(store) = store.upgrade() else { return };
                let round = store
                    .acquire_lease("janitor", &holder, JANITOR_INTERVAL * 2)
                    .and_then(|lease| match lease {
                        Some(_) => store.collect_garbage(JANITOR_GRACE).map(Some),
                        None => Ok(None),
                    });
                match round {
                    Ok(Some((deleted, waiting))) if deleted + waiting > 0 => {
                        tracing::info!(deleted, waiting, "janitor: object versions no item owns");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "janitor round failed; it runs again"),
                }
            })
            .expect("threads start")
    }

    /// Deletes a version no item owns any more (its item destroyed, or its ingest never
    /// committed): holdfast bypasses a GOVERNANCE retention and clears a legal hold left on
    /// it (the sweeper decided, fenced against every hold change, that no hold covers the
    /// item; a write that never committed stored nothing a hold could cover). A COMPLIANCE
    /// retention still refuses (`StoreError::Locked`).
    fn destroy_unowned(&self, version: &ObjectVersion) -> Result<(), StoreError> {
        match self.objects.destroy_with(version, true) {
            Err(StoreError::Locked(_)) if self.objects.legal_hold(version)? => {
                self.objects.set_legal_hold(version, false)?;
                self.objects.destroy_with(version, true)
            }
            other => other,
        }
    }

    /// Deletes destroyed items' versions right after their rows went; what the engine
    /// refuses stays marked for `collect_garbage`.
    fn delete_destroyed(&self, versions: &[ObjectVersion]) {
        for version in versions {
            // Holdfast decided this destruction (no retention or hold stands in its way), so
            // a GOVERNANCE retention is its own to bypass; COMPLIANCE still refuses.
            match self.destroy_unowned(version) {
                Ok(()) => {
                    let cleared = self.pg.connection().and_then(|mut c| {
                        c.execute(
                            "DELETE FROM object_gc WHERE object_key = $1 AND version_id = $2",
                            &[&version.key, &version.version_id],
                        )
                        .map_err(StoreError::from)
                    });
                    if let Err(error) = cleared {
                        tracing::warn!(%error, "a deleted object's janitor mark stays");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, key = %version.key, "a destroyed item's object is left to the janitor");
                }
            }
        }
    }
}

impl Interactions for ClusterStore {
    fn write_interactions(
        &self,
        items: &[NewInteraction],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        off_async(|| {
            // Stored already (by any node)?
            let earlier = self.stored_keys(items.iter())?;
            let decide = |earlier: &(InteractionId, Vec<u8>), item: &NewInteraction| {
                if earlier.1 == item.content_sha256 {
                    WriteOutcome::Duplicate(earlier.0)
                } else {
                    WriteOutcome::Conflict(earlier.0)
                }
            };
            let mut outcomes: Vec<Option<WriteOutcome>> = Vec::with_capacity(items.len());
            // An item whose key an earlier item of this group has: answered after the write,
            // by what became of that earlier item (stored, or another node's stands).
            let mut same_as: Vec<Option<usize>> = vec![None; items.len()];
            let mut first_of_key: HashMap<(String, String), usize> = HashMap::new();
            let mut fresh: Vec<&NewInteraction> = Vec::new();
            for (index, item) in items.iter().enumerate() {
                let key = (
                    item.content.mailbox_id.as_str().to_string(),
                    item.content.client_key.clone(),
                );
                if let Some(found) = earlier.get(&key) {
                    outcomes.push(Some(decide(found, item)));
                    continue;
                }
                outcomes.push(None);
                match first_of_key.get(&key) {
                    Some(first) => same_as[index] = Some(*first),
                    None => {
                        first_of_key.insert(key, index);
                        fresh.push(item);
                    }
                }
            }
            if fresh.is_empty() {
                return Ok(outcomes.into_iter().map(|o| o.expect("decided")).collect());
            }
            // Rows inserted in key order: two nodes writing the same keys lock them in the
            // same order (no deadlock).
            fresh.sort_by(|a, b| {
                (a.content.mailbox_id.as_str(), &a.content.client_key)
                    .cmp(&(b.content.mailbox_id.as_str(), &b.content.client_key))
            });

            // 1. Mark the keys, so that objects of a write that never commits are found.
            let keys: Vec<String> = fresh.iter().map(|item| object_key(item.id)).collect();
            self.pg.connection()?.execute(
                "INSERT INTO object_gc (object_key) SELECT unnest($1::text[])
                 ON CONFLICT DO NOTHING",
                &[&keys],
            )?;
            // 2. The objects, durable (S3 acknowledges a PUT once stored), each retained by
            //    the engine as the policies retain the item: COMPLIANCE when the longest
            //    retention is a preservation-locked policy's (nobody can shorten it), else
            //    GOVERNANCE (holdfast alone may shorten it, when a policy is shortened).
            //    An item a hold covers is written under legal hold.
            let now = Utc::now();
            let retentions: Vec<Option<ItemRetention>> = fresh
                .iter()
                .map(|item| item.retention.filter(|r| r.until > now))
                .collect();
            let objects = fresh
                .iter()
                .zip(&keys)
                .zip(&retentions)
                .map(|((item, key), retention)| {
                    (
                        key.clone(),
                        item.record.clone(),
                        retention.map(engine_retention),
                        item.legal_hold,
                    )
                })
                .collect();
            let versions = self.objects.put_many(objects)?;

            // 3. The rows, their due entries and index work, and the marks cleared: at once.
            let mut connection = self.pg.connection()?;
            let mut transaction = connection.transaction()?;
            let ids: Vec<Vec<u8>> = fresh.iter().map(|i| i.id.to_bytes().to_vec()).collect();
            let inserted = transaction.query(
                "INSERT INTO items (id, mailbox, client_key, thread, created_us, content_sha256,
                                    facts, version_id, lock_until_us, lock_compliance,
                                    legal_hold)
                 SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::text[],
                                      $5::bigint[], $6::bytea[], $7::bytea[], $8::text[],
                                      $9::bigint[], $10::boolean[], $11::boolean[])
                 ON CONFLICT DO NOTHING
                 RETURNING id",
                &[
                    &ids,
                    &fresh
                        .iter()
                        .map(|i| i.content.mailbox_id.as_str())
                        .collect::<Vec<_>>(),
                    &fresh
                        .iter()
                        .map(|i| i.content.client_key.as_str())
                        .collect::<Vec<_>>(),
                    &fresh
                        .iter()
                        .map(|i| i.content.thread_id.as_str())
                        .collect::<Vec<_>>(),
                    &fresh
                        .iter()
                        .map(|i| micros(i.content.created_at))
                        .collect::<Vec<_>>(),
                    &fresh
                        .iter()
                        .map(|i| i.content_sha256.to_vec())
                        .collect::<Vec<_>>(),
                    &fresh.iter().map(|i| i.facts().encode()).collect::<Vec<_>>(),
                    &versions
                        .iter()
                        .map(|v| v.version_id.as_str())
                        .collect::<Vec<_>>(),
                    &retentions
                        .iter()
                        .map(|r| r.map(|r| micros(r.until)))
                        .collect::<Vec<_>>(),
                    &retentions
                        .iter()
                        .map(|r| r.is_some_and(|r| r.locked))
                        .collect::<Vec<_>>(),
                    &fresh.iter().map(|i| i.legal_hold).collect::<Vec<_>>(),
                ],
            )?;
            let created: HashSet<InteractionId> = inserted
                .iter()
                .map(|row| id_of("items", row.get(0)))
                .collect::<Result<_, _>>()?;
            let created_in_order: Vec<InteractionId> = fresh
                .iter()
                .map(|item| item.id)
                .filter(|id| created.contains(id))
                .collect();
            let feed: Vec<(InteractionId, i16)> = fresh
                .iter()
                .filter(|item| created.contains(&item.id))
                .map(|item| (item.id, search_partition(item.content.mailbox_id.as_str())))
                .collect();
            let (due_at, due_ids): (Vec<i64>, Vec<Vec<u8>>) = fresh
                .iter()
                .filter(|item| created.contains(&item.id))
                .filter_map(|item| Some((micros(item.first_check?), item.id.to_bytes().to_vec())))
                .unzip();
            if !due_at.is_empty() {
                transaction.execute(
                    "INSERT INTO due (at_us, id) SELECT * FROM unnest($1::bigint[], $2::bytea[])
                     ON CONFLICT DO NOTHING",
                    &[&due_at, &due_ids],
                )?;
            }
            let created_keys: Vec<String> =
                created_in_order.iter().map(|id| object_key(*id)).collect();
            let cleared = transaction.execute(
                "DELETE FROM object_gc WHERE version_id = '' AND object_key = ANY($1)",
                &[&created_keys],
            )?;
            if cleared != created_keys.len() as u64 {
                // The janitor claimed a mark (this write took longer than JANITOR_GRACE) and
                // may be deleting its object: nothing of this write is stored.
                return Err(StoreError::Engine(
                    "the write took so long that the janitor claimed its objects; nothing \
                     was stored, write again"
                        .into(),
                ));
            }
            let last = append_feed(&mut transaction, &feed, true)?;
            transaction.commit()?;
            // Back to the pool before taking another (a pool of n never waits on itself).
            drop(connection);
            self.advanced_feed(last);

            // Items another node stored first (between the check and the insert): theirs
            // stands; this write's objects stay marked for the janitor.
            let lost: Vec<&NewInteraction> = fresh
                .iter()
                .copied()
                .filter(|item| !created.contains(&item.id))
                .collect();
            let winners = if lost.is_empty() {
                HashMap::new()
            } else {
                self.stored_keys(lost.iter().copied())?
            };
            let resolve = |item: &NewInteraction| {
                if created.contains(&item.id) {
                    return Ok((item.id, item.content_sha256.to_vec()));
                }
                let key = (
                    item.content.mailbox_id.as_str().to_string(),
                    item.content.client_key.clone(),
                );
                winners.get(&key).cloned().ok_or_else(|| {
                    StoreError::Engine(format!(
                        "item {} was neither stored nor found stored by another node",
                        item.id
                    ))
                })
            };
            items
                .iter()
                .zip(outcomes)
                .zip(same_as)
                .map(|((item, outcome), same_as)| match (outcome, same_as) {
                    (Some(outcome), _) => Ok(outcome),
                    (None, Some(first)) => Ok(decide(&resolve(&items[first])?, item)),
                    (None, None) if created.contains(&item.id) => {
                        Ok(WriteOutcome::Created(item.id))
                    }
                    (None, None) => Ok(decide(&resolve(item)?, item)),
                })
                .collect()
        })
    }

    fn get_interaction(&self, id: InteractionId) -> Result<Option<StoredInteraction>, StoreError> {
        Ok(self.get_interactions(&[id])?.pop().flatten())
    }

    fn list_active(
        &self,
        query: &ListQuery,
        cursor: Option<ListCursor>,
        limit: usize,
    ) -> Result<(Vec<StoredInteraction>, Option<ListCursor>), StoreError> {
        off_async(|| {
            // An empty thread id lists every thread.
            let mut sql = String::from(if query.thread_id.is_empty() {
                "SELECT id, created_us, version_id, annex FROM items
                 WHERE mailbox = $1 AND location IS NULL AND $2::text = ''"
            } else {
                "SELECT id, created_us, version_id, annex FROM items
                 WHERE mailbox = $1 AND location IS NULL AND thread = $2"
            });
            let from = query.created_from.map(micros);
            let (to_micros, to_id) = match (cursor, query.created_to) {
                (Some(cursor), _) => (
                    Some(cursor.created_micros),
                    Some(cursor.id.to_bytes().to_vec()),
                ),
                (None, Some(to)) => (Some(micros(to)), None),
                (None, None) => (None, None),
            };
            sql.push_str(" AND ($3::bigint IS NULL OR created_us >= $3)");
            sql.push_str(
                " AND ($4::bigint IS NULL OR created_us < $4
                       OR ($5::bytea IS NOT NULL AND created_us = $4 AND id < $5))",
            );
            sql.push_str(" ORDER BY created_us DESC, id DESC LIMIT $6");
            let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
            let rows = self.pg.connection()?.query(
                &sql,
                &[
                    &query.mailbox_id.as_str(),
                    &query.thread_id,
                    &from,
                    &to_micros,
                    &to_id,
                    &fetch,
                ],
            )?;
            let mut page: Vec<(ListCursor, Row)> = rows
                .iter()
                .map(|row| {
                    let id = id_of("items", row.get(0))?;
                    Ok((
                        ListCursor {
                            created_micros: row.get(1),
                            id,
                        },
                        Row {
                            id,
                            version_id: row.get(2),
                            location: None,
                            annex: row.get(3),
                        },
                    ))
                })
                .collect::<Result<_, StoreError>>()?;
            let next = if page.len() > limit {
                page.truncate(limit);
                page.last().map(|(cursor, _)| *cursor)
            } else {
                None
            };
            let loaded = self.load(page.into_iter().map(|(_, row)| row).collect())?;
            // An item destroyed while the page was read is left out.
            Ok((loaded.into_iter().flatten().collect(), next))
        })
    }

    fn scan_interactions(
        &self,
        after: Option<InteractionId>,
        limit: usize,
    ) -> Result<Vec<StoredInteraction>, StoreError> {
        off_async(|| {
            let after = after.map_or_else(Vec::new, |id| id.to_bytes().to_vec());
            let rows = self.pg.connection()?.query(
                "SELECT id, version_id, location, annex FROM items WHERE id > $1
                 ORDER BY id LIMIT $2",
                &[&after, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )?;
            let rows = rows
                .iter()
                .map(|row| {
                    Ok(Row {
                        id: id_of("items", row.get(0))?,
                        version_id: row.get(1),
                        location: row.get(2),
                        annex: row.get(3),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(self.load(rows)?.into_iter().flatten().collect())
        })
    }

    fn get_interactions(
        &self,
        ids: &[InteractionId],
    ) -> Result<Vec<Option<StoredInteraction>>, StoreError> {
        off_async(|| {
            let mut rows = self.rows(ids)?;
            let found: Vec<Row> = ids.iter().filter_map(|id| rows.remove(id)).collect();
            let mut loaded: HashMap<InteractionId, StoredInteraction> = self
                .load(found)?
                .into_iter()
                .flatten()
                .map(|item| (item.id, item))
                .collect();
            Ok(ids.iter().map(|id| loaded.remove(id)).collect())
        })
    }

    fn count_mailbox(&self, mailbox: &MailboxId) -> Result<(u64, u64), StoreError> {
        off_async(|| {
            let row = self.pg.connection()?.query_one(
                "SELECT count(*) FILTER (WHERE location IS NULL),
                        count(*) FILTER (WHERE location IS NOT NULL)
                 FROM items WHERE mailbox = $1",
                &[&mailbox.as_str()],
            )?;
            let (active, held): (i64, i64) = (row.get(0), row.get(1));
            Ok((active as u64, held as u64))
        })
    }
}

impl ItemStates for ClusterStore {
    fn move_to_holds_area(
        &self,
        selector: &HistorySelector,
        reason: MoveReason,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        off_async(|| {
            let location = moved_location(reason, now);
            let before = selector.before.map(micros);
            let mut moved = 0u64;
            loop {
                let mut connection = self.pg.connection()?;
                let mut transaction = connection.transaction()?;
                let rows = transaction.query(
                    "WITH chosen AS (
                         SELECT id FROM items
                         WHERE mailbox = $1 AND location IS NULL
                           AND ($2 = '' OR thread = $2)
                           AND ($3::bigint IS NULL OR created_us < $3)
                         ORDER BY created_us, id LIMIT $4 FOR UPDATE)
                     UPDATE items SET location = $5 FROM chosen WHERE items.id = chosen.id
                     RETURNING items.id",
                    &[
                        &selector.mailbox_id.as_str(),
                        &selector.thread_id,
                        &before,
                        &MOVE_CHUNK,
                        &location,
                    ],
                )?;
                let ids: Vec<InteractionId> = rows
                    .iter()
                    .map(|row| id_of("items", row.get(0)))
                    .collect::<Result<_, _>>()?;
                if ids.is_empty() {
                    break;
                }
                transaction.execute(
                    "INSERT INTO due (at_us, id) SELECT $1, unnest($2::bytea[])
                     ON CONFLICT DO NOTHING",
                    &[&micros(now), &ids_bytes(&ids)],
                )?;
                let partition = search_partition(selector.mailbox_id.as_str());
                let feed: Vec<_> = ids.iter().map(|id| (*id, partition)).collect();
                let last = append_feed(&mut transaction, &feed, false)?;
                transaction.commit()?;
                self.advanced_feed(last);
                moved += ids.len() as u64;
                if (ids.len() as i64) < MOVE_CHUNK {
                    break;
                }
            }
            Ok(moved)
        })
    }

    fn move_ids_to_holds_area(
        &self,
        ids: &[InteractionId],
        reason: MoveReason,
        now: DateTime<Utc>,
    ) -> Result<Vec<InteractionId>, StoreError> {
        off_async(|| {
            let mut connection = self.pg.connection()?;
            let mut transaction = connection.transaction()?;
            let rows = transaction.query(
                "UPDATE items SET location = $2 WHERE id = ANY($1) AND location IS NULL
                 RETURNING id, mailbox",
                &[&ids_bytes(ids), &moved_location(reason, now)],
            )?;
            let moved: HashMap<InteractionId, i16> = rows
                .iter()
                .map(|row| Ok((id_of("items", row.get(0))?, search_partition(row.get(1)))))
                .collect::<Result<_, StoreError>>()?;
            let mut in_order: Vec<InteractionId> = ids
                .iter()
                .copied()
                .filter(|id| moved.contains_key(id))
                .collect();
            in_order.dedup();
            let feed: Vec<_> = in_order.iter().map(|id| (*id, moved[id])).collect();
            if in_order.is_empty() {
                return Ok(in_order);
            }
            transaction.execute(
                "INSERT INTO due (at_us, id) SELECT $1, unnest($2::bytea[])
                 ON CONFLICT DO NOTHING",
                &[&micros(now), &ids_bytes(&in_order)],
            )?;
            let last = append_feed(&mut transaction, &feed, false)?;
            transaction.commit()?;
            self.advanced_feed(last);
            Ok(in_order)
        })
    }

    fn due_until(
        &self,
        after: Option<(i64, InteractionId)>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(i64, InteractionId)>, StoreError> {
        off_async(|| {
            let (after_at, after_id) = match after {
                Some((at, id)) => (at, id.to_bytes().to_vec()),
                None => (i64::MIN, Vec::new()),
            };
            self.pg
                .connection()?
                .query(
                    "SELECT at_us, id FROM due WHERE at_us <= $1 AND (at_us, id) > ($2, $3)
                     ORDER BY at_us, id LIMIT $4",
                    &[
                        &micros(until),
                        &after_at,
                        &after_id,
                        &i64::try_from(limit).unwrap_or(i64::MAX),
                    ],
                )?
                .iter()
                .map(|row| Ok((row.get(0), id_of("due", row.get(1))?)))
                .collect()
        })
    }

    fn planned_items_each(
        &self,
        ids: &[InteractionId],
    ) -> Result<Vec<Result<Option<PlannedItem>, StoreError>>, StoreError> {
        off_async(|| {
            let rows = self.pg.connection()?.query(
                "SELECT id, facts, location FROM items WHERE id = ANY($1)",
                &[&ids_bytes(ids)],
            )?;
            let mut found: HashMap<InteractionId, Result<PlannedItem, StoreError>> = HashMap::new();
            for row in &rows {
                let id = id_of("items", row.get(0))?;
                found.insert(id, planned(id, row.get(1), row.get(2)));
            }
            Ok(ids.iter().map(|id| found.remove(id).transpose()).collect())
        })
    }

    fn scan_planned_items(
        &self,
        after: Option<InteractionId>,
        limit: usize,
    ) -> Result<Vec<ScannedItem>, StoreError> {
        off_async(|| {
            let after = after.map_or_else(Vec::new, |id| id.to_bytes().to_vec());
            self.pg
                .connection()?
                .query(
                    "SELECT id, facts, location FROM items WHERE id > $1 ORDER BY id LIMIT $2",
                    &[&after, &i64::try_from(limit).unwrap_or(i64::MAX)],
                )?
                .iter()
                .map(|row| {
                    let id = id_of("items", row.get(0))?;
                    Ok(planned(id, row.get(1), row.get(2)).map_err(|error| (id, error)))
                })
                .collect()
        })
    }

    fn schedule(&self, entries: &[(DateTime<Utc>, InteractionId)]) -> Result<(), StoreError> {
        off_async(|| {
            let at: Vec<i64> = entries.iter().map(|(at, _)| micros(*at)).collect();
            let ids: Vec<Vec<u8>> = entries
                .iter()
                .map(|(_, id)| id.to_bytes().to_vec())
                .collect();
            self.pg.connection()?.execute(
                "INSERT INTO due (at_us, id) SELECT * FROM unnest($1::bigint[], $2::bytea[])
                 ON CONFLICT DO NOTHING",
                &[&at, &ids],
            )?;
            Ok(())
        })
    }

    fn apply_sweep(
        &self,
        write: &SweepWrite,
        now: DateTime<Utc>,
    ) -> Result<SweepApplied, StoreError> {
        off_async(|| {
            let mut connection = self.pg.connection()?;
            let mut transaction = connection.transaction()?;
            // Fencing: a policy or hold change by any node, or the lease passing to another
            // node, since this step was decided makes it write nothing. The rows read FOR
            // SHARE make such a change wait until this step commits.
            if let Some(decided_by) = write.rules_generation {
                let generation: i64 = transaction
                    .query_one("SELECT generation FROM rules_head FOR SHARE", &[])?
                    .get(0);
                if u64::try_from(generation).ok() != Some(decided_by) {
                    return Err(StoreError::Fenced(
                        "a retention policy or hold changed during the sweeper step".into(),
                    ));
                }
            }
            if let Some((holder, epoch)) = &write.lease {
                let held = transaction.query_opt(
                    "SELECT 1 FROM leases WHERE name = 'sweeper' AND holder = $1 AND epoch = $2
                       AND expires_at > clock_timestamp() FOR SHARE",
                    &[holder, &i64::try_from(*epoch).unwrap_or(i64::MAX)],
                )?;
                if held.is_none() {
                    return Err(StoreError::Fenced(
                        "this node no longer holds the sweeper lease".into(),
                    ));
                }
            }
            if !write.consumed.is_empty() {
                let at: Vec<i64> = write.consumed.iter().map(|(at, _)| *at).collect();
                let ids: Vec<Vec<u8>> = write
                    .consumed
                    .iter()
                    .map(|(_, id)| id.to_bytes().to_vec())
                    .collect();
                transaction.execute(
                    "DELETE FROM due WHERE (at_us, id) IN
                         (SELECT * FROM unnest($1::bigint[], $2::bytea[]))",
                    &[&at, &ids],
                )?;
            }
            if !write.schedule.is_empty() {
                let at: Vec<i64> = write.schedule.iter().map(|(at, _)| micros(*at)).collect();
                let ids: Vec<Vec<u8>> = write
                    .schedule
                    .iter()
                    .map(|(_, id)| id.to_bytes().to_vec())
                    .collect();
                transaction.execute(
                    "INSERT INTO due (at_us, id) SELECT * FROM unnest($1::bigint[], $2::bytea[])
                     ON CONFLICT DO NOTHING",
                    &[&at, &ids],
                )?;
            }
            // Where the items are now, locked until commit: a user deletion or another
            // node's move may have changed them since the sweeper looked.
            let all: Vec<InteractionId> = write
                .moves
                .iter()
                .map(|m| m.id)
                .chain(write.destroys.iter().map(|(d, _)| d.id))
                .collect();
            let mut current: HashMap<InteractionId, (Option<String>, String)> = HashMap::new();
            let mut partitions: HashMap<InteractionId, i16> = HashMap::new();
            for row in transaction.query(
                "SELECT id, location, version_id, mailbox FROM items WHERE id = ANY($1)
                 ORDER BY id FOR UPDATE",
                &[&ids_bytes(&all)],
            )? {
                let id = id_of("items", row.get(0))?;
                current.insert(id, (row.get(1), row.get(2)));
                partitions.insert(id, search_partition(row.get(3)));
            }
            let mut applied = SweepApplied::default();
            let mut changed = Vec::new();
            let moves: Vec<InteractionId> = write
                .moves
                .iter()
                .map(|m| m.id)
                .filter(|id| matches!(current.get(id), Some((None, _))))
                .collect();
            if !moves.is_empty() {
                transaction.execute(
                    "UPDATE items SET location = $2 WHERE id = ANY($1)",
                    &[
                        &ids_bytes(&moves),
                        &moved_location(MoveReason::Expired, now),
                    ],
                )?;
                applied.moved = moves.len() as u64;
                changed.extend(&moves);
            }
            let mut destroyed: Vec<(&PlannedItem, &Disposition, String)> = Vec::new();
            for (item, disposition) in &write.destroys {
                let Some((Some(location), version_id)) = current.get(&item.id) else {
                    continue;
                };
                let location = location_of(Some(location))?;
                if location != item.location || location == ItemLocation::Active {
                    continue;
                }
                destroyed.push((item, disposition, version_id.clone()));
            }
            if !destroyed.is_empty() {
                let ids: Vec<InteractionId> = destroyed.iter().map(|(i, _, _)| i.id).collect();
                transaction.execute("DELETE FROM items WHERE id = ANY($1)", &[&ids_bytes(&ids)])?;
                let purged: Vec<i64> = destroyed
                    .iter()
                    .map(|(_, d, _)| micros(d.purged_at))
                    .collect();
                let mailboxes: Vec<&str> = destroyed
                    .iter()
                    .map(|(_, d, _)| d.mailbox.as_str())
                    .collect();
                let records: Vec<String> = destroyed
                    .iter()
                    .map(|(_, d, _)| serde_json::to_string(d).expect("dispositions serialise"))
                    .collect();
                transaction.execute(
                    "INSERT INTO dispositions (purged_us, id, mailbox, record)
                     SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::text[])",
                    &[&purged, &ids_bytes(&ids), &mailboxes, &records],
                )?;
                transaction.execute(
                    "INSERT INTO erasure (destroyed_us, id)
                     SELECT * FROM unnest($1::bigint[], $2::bytea[]) ON CONFLICT DO NOTHING",
                    &[&purged, &ids_bytes(&ids)],
                )?;
                let keys: Vec<String> = ids.iter().map(|id| object_key(*id)).collect();
                let versions: Vec<&str> = destroyed.iter().map(|(_, _, v)| v.as_str()).collect();
                transaction.execute(
                    "INSERT INTO object_gc (object_key, version_id)
                     SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
                    &[&keys, &versions],
                )?;
                applied.destroyed = ids.len() as u64;
                changed.extend(&ids);
            }
            let feed: Vec<_> = changed
                .iter()
                .map(|id: &InteractionId| (*id, partitions[id]))
                .collect();
            let last = append_feed(&mut transaction, &feed, false)?;
            transaction.commit()?;
            drop(connection);
            self.advanced_feed(last);
            let versions: Vec<ObjectVersion> = destroyed
                .iter()
                .map(|(item, _, version_id)| ObjectVersion {
                    key: object_key(item.id),
                    version_id: version_id.clone(),
                })
                .collect();
            self.delete_destroyed(&versions);
            Ok(applied)
        })
    }

    fn compact_due(&self) -> Result<(), StoreError> {
        // PostgreSQL's autovacuum reclaims consumed entries; a range scan steps over dead
        // index tuples without a pass of ours.
        Ok(())
    }

    fn enforces_locks(&self) -> bool {
        true
    }

    fn lock_retries(&self, limit: usize) -> Result<Vec<InteractionId>, StoreError> {
        off_async(|| {
            let mut connection = self.pg.connection()?;
            // Destroyed items need no lock any more.
            connection.execute(
                "DELETE FROM lock_retry r WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.id = r.id)",
                &[],
            )?;
            connection
                .query(
                    "SELECT id FROM lock_retry ORDER BY since, id LIMIT $1",
                    &[&i64::try_from(limit).unwrap_or(i64::MAX)],
                )?
                .iter()
                .map(|row| id_of("lock_retry", row.get(0)))
                .collect()
        })
    }

    fn sync_locks(&self, wants: &[(InteractionId, LockWant)]) -> Result<(u64, u64), StoreError> {
        if wants.is_empty() {
            return Ok((0, 0));
        }
        off_async(|| {
            let ids: Vec<InteractionId> = wants.iter().map(|(id, _)| *id).collect();
            let rows = self.pg.connection()?.query(
                "SELECT id, version_id, lock_until_us, lock_compliance, legal_hold
                 FROM items WHERE id = ANY($1)",
                &[&ids_bytes(&ids)],
            )?;
            let mut have: HashMap<InteractionId, (String, Option<i64>, bool, bool)> =
                HashMap::with_capacity(rows.len());
            for row in &rows {
                have.insert(
                    id_of("items", row.get(0))?,
                    (row.get(1), row.get(2), row.get(3), row.get(4)),
                );
            }
            let now = Utc::now();
            let mut changes = Vec::new();
            let mut recorded: Vec<(InteractionId, Option<i64>, bool, bool)> = Vec::new();
            for (id, want) in wants {
                let Some((version_id, until_us, compliance, held)) = have.remove(id) else {
                    continue; // destroyed meanwhile
                };
                let current = until_us
                    .and_then(DateTime::<Utc>::from_timestamp_micros)
                    .map(|until| (until, compliance));
                let retention = retention_change(current, want.retention, now);
                let legal_hold = (want.legal_hold != held).then_some(want.legal_hold);
                if retention.is_none() && legal_hold.is_none() {
                    continue;
                }
                recorded.push(match retention {
                    Some((r, _)) => (*id, Some(micros(r.until)), r.locked, want.legal_hold),
                    None => (*id, until_us, compliance, want.legal_hold),
                });
                changes.push(LockChange {
                    version: ObjectVersion {
                        key: object_key(*id),
                        version_id,
                    },
                    retention: retention.map(|(r, bypass)| (engine_retention(r), bypass)),
                    legal_hold,
                });
            }
            let results = self.objects.change_locks(&changes);
            let mut done = Vec::with_capacity(recorded.len());
            let mut failed: Vec<InteractionId> = Vec::new();
            for (record, result) in recorded.into_iter().zip(results) {
                match result {
                    Ok(()) => done.push(record),
                    Err(error) => {
                        tracing::warn!(id = %record.0, %error, "cannot change an item's object locks; retried later");
                        failed.push(record.0);
                    }
                }
            }
            let mut connection = self.pg.connection()?;
            let mut transaction = connection.transaction()?;
            // What did not go through waits in `lock_retry` (put last); everything else given
            // here is in step now.
            transaction.execute(
                "INSERT INTO lock_retry (id) SELECT unnest($1::bytea[])
                 ON CONFLICT (id) DO UPDATE SET since = now()",
                &[&ids_bytes(&failed)],
            )?;
            let failed_set: HashSet<InteractionId> = failed.iter().copied().collect();
            let settled: Vec<InteractionId> = ids
                .iter()
                .copied()
                .filter(|id| !failed_set.contains(id))
                .collect();
            transaction.execute(
                "DELETE FROM lock_retry WHERE id = ANY($1)",
                &[&ids_bytes(&settled)],
            )?;
            if !done.is_empty() {
                let (ids, rest): (Vec<InteractionId>, Vec<_>) =
                    done.iter().map(|(id, u, c, h)| (*id, (*u, *c, *h))).unzip();
                transaction.execute(
                    "UPDATE items SET lock_until_us = u.until_us, lock_compliance = u.compliance,
                                      legal_hold = u.held
                     FROM unnest($1::bytea[], $2::bigint[], $3::boolean[], $4::boolean[])
                          AS u(id, until_us, compliance, held)
                     WHERE items.id = u.id",
                    &[
                        &ids_bytes(&ids),
                        &rest.iter().map(|r| r.0).collect::<Vec<_>>(),
                        &rest.iter().map(|r| r.1).collect::<Vec<_>>(),
                        &rest.iter().map(|r| r.2).collect::<Vec<_>>(),
                    ],
                )?;
            }
            transaction.commit()?;
            Ok((done.len() as u64, failed.len() as u64))
        })
    }
}

/// The retention change that brings an object's retention `current` (until, COMPLIANCE?) in
/// step with `want`: never shorter, and COMPLIANCE where a preservation-locked policy now
/// retains the item. The flag is whether to bypass GOVERNANCE (holdfast's permission): to
/// turn a GOVERNANCE retention into a COMPLIANCE one (until the locked policy's promise ends,
/// even if the GOVERNANCE retention ran longer: the rest is holdfast's to enforce, as at
/// ingest). `None`: nothing to change.
fn retention_change(
    current: Option<(DateTime<Utc>, bool)>,
    want: Option<ItemRetention>,
    now: DateTime<Utc>,
) -> Option<(ItemRetention, bool)> {
    let want = want.filter(|w| w.until > now)?;
    match current.filter(|(until, _)| *until > now) {
        None => Some((want, false)),
        // COMPLIANCE is never shortened nor turned into GOVERNANCE.
        Some((until, true)) => (want.locked && want.until > until).then_some((want, false)),
        // Changing the mode needs the bypass (the engine counts it as altering the GOVERNANCE
        // retention), whatever the dates.
        Some((_, false)) if want.locked => Some((want, true)),
        Some((until, false)) => (want.until > until).then_some((want, false)),
    }
}

/// An item as planning sees it, from its row.
fn planned(
    id: InteractionId,
    facts: &[u8],
    location: Option<&str>,
) -> Result<PlannedItem, StoreError> {
    Ok(PlannedItem {
        id,
        facts: ItemFacts::decode(facts).map_err(|error| StoreError::Corrupt {
            column_family: "items",
            reason: format!("facts of {id}: {error}"),
        })?,
        location: location_of(location)?,
    })
}

impl IndexFeed for ClusterStore {
    fn index_queue_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InteractionId)>, StoreError> {
        off_async(|| {
            self.pg
                .connection()?
                .query(
                    "SELECT sequence, id FROM index_feed WHERE sequence > $1
                     ORDER BY sequence LIMIT $2",
                    &[
                        &i64::try_from(after).unwrap_or(i64::MAX),
                        &i64::try_from(limit).unwrap_or(i64::MAX),
                    ],
                )?
                .iter()
                .map(|row| {
                    let sequence: i64 = row.get(0);
                    Ok((sequence as u64, id_of("index_feed", row.get(1))?))
                })
                .collect()
        })
    }

    fn trim_index_queue(&self, sequence: u64) -> Result<(), StoreError> {
        // Every node indexes the whole feed from its own position (kept with its index): an
        // entry goes once every reader seen lately has read it.
        off_async(|| {
            let mut connection = self.pg.connection()?;
            let mut transaction = connection.transaction()?;
            transaction.execute(
                "INSERT INTO feed_readers (reader, position, seen_at) VALUES ($1, $2, now())
                 ON CONFLICT (reader) DO UPDATE
                     SET position = EXCLUDED.position, seen_at = EXCLUDED.seen_at",
                &[&self.node, &i64::try_from(sequence).unwrap_or(i64::MAX)],
            )?;
            trim_feed(&mut transaction)?;
            transaction.commit()?;
            Ok(())
        })
    }

    fn register_feed_reader(&self, position: u64) -> Result<(), StoreError> {
        off_async(|| {
            self.pg.connection()?.execute(
                "INSERT INTO feed_readers (reader, position, seen_at) VALUES ($1, $2, now())
                 ON CONFLICT (reader) DO UPDATE
                     SET position = EXCLUDED.position, seen_at = EXCLUDED.seen_at",
                &[&self.node, &i64::try_from(position).unwrap_or(i64::MAX)],
            )?;
            Ok(())
        })
    }

    fn feed_trimmed_through(&self) -> Result<u64, StoreError> {
        off_async(|| {
            let trimmed: i64 = self
                .pg
                .connection()?
                .query_one("SELECT trimmed FROM index_feed_head", &[])?
                .get(0);
            Ok(u64::try_from(trimmed).unwrap_or(0))
        })
    }

    fn last_index_sequence(&self) -> u64 {
        self.feed_head.load(Ordering::Acquire)
    }
}

impl Dispositions for ClusterStore {
    fn list_dispositions(
        &self,
        mailbox: Option<&MailboxId>,
        after: Option<(i64, InteractionId)>,
        limit: usize,
    ) -> Result<Vec<Disposition>, StoreError> {
        off_async(|| {
            let (after_at, after_id) = match after {
                Some((at, id)) => (at, id.to_bytes().to_vec()),
                None => (i64::MIN, Vec::new()),
            };
            self.pg
                .connection()?
                .query(
                    "SELECT record FROM dispositions
                     WHERE ($1::text IS NULL OR mailbox = $1) AND (purged_us, id) > ($2, $3)
                     ORDER BY purged_us, id LIMIT $4",
                    &[
                        &mailbox.map(MailboxId::as_str),
                        &after_at,
                        &after_id,
                        &i64::try_from(limit).unwrap_or(i64::MAX),
                    ],
                )?
                .iter()
                .map(|row| {
                    serde_json::from_str(row.get(0)).map_err(|error| StoreError::Corrupt {
                        column_family: "dispositions",
                        reason: error.to_string(),
                    })
                })
                .collect()
        })
    }

    fn erasure_pending(
        &self,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(i64, InteractionId)>, StoreError> {
        off_async(|| {
            self.pg
                .connection()?
                .query(
                    "SELECT destroyed_us, id FROM erasure WHERE destroyed_us <= $1
                     ORDER BY destroyed_us, id LIMIT $2",
                    &[&micros(until), &i64::try_from(limit).unwrap_or(i64::MAX)],
                )?
                .iter()
                .map(|row| Ok((row.get(0), id_of("erasure", row.get(1))?)))
                .collect()
        })
    }

    fn erasure_status(&self) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        off_async(|| {
            let row = self
                .pg
                .connection()?
                .query_one("SELECT count(*), min(destroyed_us) FROM erasure", &[])?;
            let (count, oldest): (i64, Option<i64>) = (row.get(0), row.get(1));
            Ok((
                count as u64,
                oldest.and_then(DateTime::from_timestamp_micros),
            ))
        })
    }

    fn erase_from_disk(&self, ids: &[InteractionId]) -> Result<(), StoreError> {
        off_async(|| {
            // The text was in the objects: each destroyed version must be gone from the
            // engine (a version it still refuses to delete keeps the erasure pending).
            let keys: Vec<String> = ids.iter().map(|id| object_key(*id)).collect();
            let marks = self.pg.connection()?.query(
                "SELECT object_key, version_id FROM object_gc
                 WHERE object_key = ANY($1) AND version_id <> ''",
                &[&keys],
            )?;
            let versions: Vec<ObjectVersion> = marks
                .iter()
                .map(|row| ObjectVersion {
                    key: row.get(0),
                    version_id: row.get(1),
                })
                .collect();
            self.delete_destroyed(&versions);
            let left: i64 = self
                .pg
                .connection()?
                .query_one(
                    "SELECT count(*) FROM object_gc WHERE object_key = ANY($1) AND version_id <> ''",
                    &[&keys],
                )?
                .get(0);
            if left > 0 {
                return Err(StoreError::Locked(format!(
                    "{left} destroyed items' objects are not deleted yet"
                )));
            }
            // Thread ids, client keys and annexes were in the rows: vacuum makes the space of
            // the deleted rows reusable and drops their index entries.
            self.pg
                .connection()?
                .batch_execute("VACUUM items, trace_states")?;
            Ok(())
        })
    }

    fn finish_erasure(&self, entries: &[(i64, InteractionId)]) -> Result<(), StoreError> {
        off_async(|| {
            let at: Vec<i64> = entries.iter().map(|(at, _)| *at).collect();
            let ids: Vec<Vec<u8>> = entries
                .iter()
                .map(|(_, id)| id.to_bytes().to_vec())
                .collect();
            self.pg.connection()?.execute(
                "DELETE FROM erasure WHERE (destroyed_us, id) IN
                     (SELECT * FROM unnest($1::bigint[], $2::bytea[]))",
                &[&at, &ids],
            )?;
            Ok(())
        })
    }
}

impl TraceStates for ClusterStore {
    fn get_trace_states(
        &self,
        keys: &[Vec<u8>],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        off_async(|| {
            let mut found: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
            for row in self.pg.connection()?.query(
                "SELECT key, value FROM trace_states WHERE key = ANY($1) AND forget_us > $2",
                &[&keys, &micros(now)],
            )? {
                found.insert(row.get(0), row.get(1));
            }
            Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
        })
    }

    fn write_trace_states(
        &self,
        write: &TraceStateWrite,
    ) -> Result<Vec<InteractionId>, StoreError> {
        off_async(|| {
            let mut connection = self.pg.connection()?;
            let mut transaction = connection.transaction()?;
            let forget = i64::try_from(FORGET_PER_WRITE.max(write.states.len().saturating_mul(2)))
                .unwrap_or(i64::MAX);
            transaction.execute(
                "DELETE FROM trace_states WHERE key IN (
                     SELECT key FROM trace_states WHERE forget_us <= $1
                     ORDER BY forget_us LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&micros(write.now), &forget],
            )?;
            if !write.states.is_empty() {
                let keys: Vec<&[u8]> = write.states.iter().map(|(k, _)| k.as_slice()).collect();
                let values: Vec<&[u8]> = write.states.iter().map(|(_, v)| v.as_slice()).collect();
                transaction.execute(
                    "INSERT INTO trace_states (key, value, forget_us)
                     SELECT k, v, $3 FROM unnest($1::bytea[], $2::bytea[]) AS s(k, v)
                     ON CONFLICT (key) DO UPDATE
                         SET value = EXCLUDED.value, forget_us = EXCLUDED.forget_us",
                    &[&keys, &values, &micros(write.forget_at)],
                )?;
            }
            let mut grown = Vec::new();
            let mut exists: HashMap<InteractionId, i16> = HashMap::new();
            if !write.annexes.is_empty() {
                let ids: Vec<InteractionId> = write.annexes.iter().map(|(id, _)| *id).collect();
                // Locked until commit: a destruction of the same item waits, or went first
                // (and the item gets nothing).
                let mut annexes: HashMap<InteractionId, Annex> = HashMap::new();
                for row in transaction.query(
                    "SELECT id, annex, mailbox FROM items WHERE id = ANY($1) ORDER BY id
                     FOR UPDATE",
                    &[&ids_bytes(&ids)],
                )? {
                    let id = id_of("items", row.get(0))?;
                    exists.insert(id, search_partition(row.get(2)));
                    if let Some(annex) = annex_of(row.get(1))? {
                        annexes.insert(id, annex);
                    }
                }
                for (id, added) in &write.annexes {
                    if !exists.contains_key(id) {
                        continue;
                    }
                    let annex = annexes.entry(*id).or_default();
                    if annex.add(added, write.max_entries) {
                        annex.updated_at = write.now;
                        if !grown.contains(id) {
                            grown.push(*id);
                        }
                    }
                }
                if !grown.is_empty() {
                    let values: Vec<String> = grown
                        .iter()
                        .map(|id| serde_json::to_string(&annexes[id]).expect("annexes serialise"))
                        .collect();
                    transaction.execute(
                        "UPDATE items SET annex = u.annex
                         FROM unnest($1::bytea[], $2::text[]) AS u(id, annex)
                         WHERE items.id = u.id",
                        &[&ids_bytes(&grown), &values],
                    )?;
                }
            }
            let feed: Vec<_> = grown.iter().map(|id| (*id, exists[id])).collect();
            let last = append_feed(&mut transaction, &feed, false)?;
            transaction.commit()?;
            self.advanced_feed(last);
            Ok(grown)
        })
    }
}

impl Snapshots for ClusterStore {
    fn checkpoint(&self, _dir: &std::path::Path) -> Result<Option<AuditRecord>, StoreError> {
        Err(StoreError::Engine(
            "a cluster is backed up by its engines (PostgreSQL base backups with WAL \
             archiving; the bucket's versions under Object Lock), not by holdfast backup"
                .into(),
        ))
    }
}

impl Metadata for ClusterStore {
    fn get_meta(&self, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        off_async(|| self.pg.get_meta(name))
    }
    fn put_meta(&self, name: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        off_async(|| self.pg.put_meta(name, value))
    }
    fn swap_meta(
        &self,
        name: &[u8],
        expected: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        off_async(|| self.pg.swap_meta(name, expected, value))
    }
    fn write_rules(&self, write: &RulesWrite) -> Result<(), StoreError> {
        off_async(|| self.pg.write_rules(write))
    }
    fn audit_intents(&self) -> Result<Vec<AuditIntent>, StoreError> {
        off_async(|| self.pg.audit_intents())
    }
    fn clear_audit_intent(&self, id: ulid::Ulid) -> Result<(), StoreError> {
        off_async(|| self.pg.clear_audit_intent(id))
    }
    fn put_policy(&self, policy: &PolicyRecord) -> Result<(), StoreError> {
        off_async(|| self.pg.put_policy(policy))
    }
    fn delete_policy(&self, id: ulid::Ulid) -> Result<(), StoreError> {
        off_async(|| self.pg.delete_policy(id))
    }
    fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        off_async(|| self.pg.list_policies())
    }
    fn put_hold(&self, hold: &HoldRecord) -> Result<(), StoreError> {
        off_async(|| self.pg.put_hold(hold))
    }
    fn list_holds(&self) -> Result<Vec<HoldRecord>, StoreError> {
        off_async(|| self.pg.list_holds())
    }
    fn put_case(&self, case: &CaseRecord) -> Result<(), StoreError> {
        off_async(|| self.pg.put_case(case))
    }
    fn get_case(&self, id: ulid::Ulid) -> Result<Option<CaseRecord>, StoreError> {
        off_async(|| self.pg.get_case(id))
    }
    fn list_cases(&self) -> Result<Vec<CaseRecord>, StoreError> {
        off_async(|| self.pg.list_cases())
    }
    fn put_token(&self, token_sha256: [u8; 32], record: &TokenRecord) -> Result<(), StoreError> {
        off_async(|| self.pg.put_token(token_sha256, record))
    }
    fn delete_token(&self, token_sha256: [u8; 32]) -> Result<(), StoreError> {
        off_async(|| self.pg.delete_token(token_sha256))
    }
    fn list_tokens(&self) -> Result<Vec<([u8; 32], TokenRecord)>, StoreError> {
        off_async(|| self.pg.list_tokens())
    }
    fn rules_generation(&self) -> Result<u64, StoreError> {
        off_async(|| self.pg.rules_generation())
    }
}

impl AuditTrail for ClusterStore {
    fn last_audit_record(&self) -> Result<Option<AuditRecord>, StoreError> {
        off_async(|| self.pg.last_audit_record())
    }
    fn append_audit_records(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        off_async(|| self.pg.append_audit_records(records))
    }
    fn append_audit_chained(
        &self,
        chain: &mut dyn FnMut(Option<&AuditRecord>) -> Vec<AuditRecord>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        // `chain` need not be Send: PostgreSQL's client is called on this thread; only a
        // caller on an async worker is moved off it (by block_in_place, which keeps the
        // thread).
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.pg.append_audit_chained(chain))
            }
            _ => self.pg.append_audit_chained(chain),
        }
    }
    fn scan_audit_records(
        &self,
        from_sequence: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        off_async(|| self.pg.scan_audit_records(from_sequence, limit))
    }
}

impl Leases for ClusterStore {
    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        off_async(|| self.pg.acquire_lease(name, holder, ttl))
    }
    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        off_async(|| self.pg.release_lease(name, holder))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::conformance::{self, Fixture};
    use crate::store::pg::tests::Postgres;

    /// A fresh database and a fresh bucket.
    pub struct Cluster {
        postgres: Postgres,
        s3: S3Config,
    }

    impl Fixture for Cluster {
        type Store = ClusterStore;

        fn available() -> bool {
            Postgres::available() && crate::store::s3::tests::config().is_some()
        }

        fn new() -> Cluster {
            Cluster {
                postgres: Postgres::new(),
                s3: crate::store::s3::tests::config().unwrap(),
            }
        }

        fn open(&self) -> Arc<ClusterStore> {
            Arc::new(ClusterStore::open(self.postgres.config(), 4, &self.s3, "test-node").unwrap())
        }
    }

    impl Cluster {
        /// The bucket as an administrator holding its credentials sees it, not through
        /// holdfast.
        pub fn bucket(&self) -> ObjectLockStore {
            ObjectLockStore::open(&self.s3).unwrap()
        }

        /// The versions of an item's object in the bucket.
        pub fn versions(&self, id: InteractionId) -> Vec<ObjectVersion> {
            self.bucket().versions_of(&object_key(id)).unwrap()
        }
    }

    conformance::shared_state_cases!(Cluster);
    conformance::item_cases!(Cluster);

    use chrono::TimeDelta;

    use crate::store::conformance::{content, new_item};
    use crate::store::{Disposition, ItemRetention};

    fn items(prefix: &str, n: usize) -> Vec<NewInteraction> {
        (0..n)
            .map(|i| new_item(content(&format!("{prefix}-{i}"), 1, "t")))
            .collect()
    }

    /// The destructions the sweeper would write for user-deleted `planned` items at `now`.
    pub(crate) fn user_deleted_destroys(
        planned: &[Option<PlannedItem>],
        now: DateTime<Utc>,
    ) -> Vec<(PlannedItem, Disposition)> {
        planned
            .iter()
            .flatten()
            .map(|item| {
                let disposition = Disposition {
                    id: item.id,
                    mailbox: item.facts.mailbox.clone(),
                    content_sha256: item.facts.content_sha256.clone(),
                    created_at: item.facts.created_at,
                    moved_at: now,
                    purged_at: now,
                    reason: MoveReason::UserDeleted,
                    policies: Vec::new(),
                };
                (item.clone(), disposition)
            })
            .collect()
    }

    /// A fresh cluster store's fixture, or `None` (saying so) without the engines.
    fn cluster() -> Option<Cluster> {
        Cluster::available().then(Cluster::new)
    }

    fn bucket(fixture: &Cluster) -> ObjectLockStore {
        fixture.bucket()
    }

    /// A lock change the engine refuses does not hold back the others, and the item waits
    /// in the retry list until a sync finds it in step.
    #[test]
    fn a_refused_lock_change_is_kept_for_a_retry() {
        let Some(fixture) = cluster() else { return };
        let store = fixture.open();
        let written = items("retry", 2);
        store.write_interactions(&written).unwrap();
        // The first item's object vanishes behind holdfast's back (no lock kept it).
        let engine = bucket(&fixture);
        for version in fixture.versions(written[0].id) {
            engine.destroy(&version).unwrap();
        }
        let held = LockWant {
            retention: None,
            legal_hold: true,
        };
        let wants = [(written[0].id, held), (written[1].id, held)];
        assert_eq!(store.sync_locks(&wants).unwrap(), (1, 1));
        assert!(engine
            .legal_hold(&fixture.versions(written[1].id)[0])
            .unwrap());
        assert_eq!(store.lock_retries(10).unwrap(), vec![written[0].id]);
        // Asked again: still refused, still listed; in step (nothing wanted): forgotten.
        assert_eq!(store.sync_locks(&wants[..1]).unwrap(), (0, 1));
        let released = LockWant {
            retention: None,
            legal_hold: false,
        };
        assert_eq!(
            store.sync_locks(&[(written[0].id, released)]).unwrap(),
            (0, 0)
        );
        assert!(store.lock_retries(10).unwrap().is_empty());
    }

    #[test]
    fn a_lock_sync_only_lengthens_or_turns_to_compliance() {
        let now = Utc::now();
        let day = |n: i64| now + TimeDelta::days(n);
        let gov = |n| ItemRetention {
            until: day(n),
            locked: false,
        };
        let comp = |n| ItemRetention {
            until: day(n),
            locked: true,
        };
        // Nothing wanted, or wanted only in the past: nothing to do.
        assert_eq!(retention_change(Some((day(5), false)), None, now), None);
        assert_eq!(retention_change(None, Some(gov(-1)), now), None);
        // None yet, or one that has run out: set.
        assert_eq!(
            retention_change(None, Some(gov(3)), now),
            Some((gov(3), false))
        );
        assert_eq!(
            retention_change(Some((day(-2), true)), Some(gov(3)), now),
            Some((gov(3), false))
        );
        // GOVERNANCE: lengthened, never shortened.
        assert_eq!(
            retention_change(Some((day(3), false)), Some(gov(9)), now),
            Some((gov(9), false))
        );
        assert_eq!(
            retention_change(Some((day(9), false)), Some(gov(3)), now),
            None
        );
        // To COMPLIANCE with the bypass, whatever the dates.
        assert_eq!(
            retention_change(Some((day(9), false)), Some(comp(3)), now),
            Some((comp(3), true))
        );
        // COMPLIANCE: lengthened only by a locked policy; never shortened nor GOVERNANCE.
        assert_eq!(
            retention_change(Some((day(3), true)), Some(comp(9)), now),
            Some((comp(9), false))
        );
        assert_eq!(
            retention_change(Some((day(3), true)), Some(gov(9)), now),
            None
        );
        assert_eq!(
            retention_change(Some((day(9), true)), Some(comp(3)), now),
            None
        );
    }

    #[test]
    fn nodes_racing_on_the_same_client_keys_store_each_item_once() {
        let Some(fixture) = cluster() else { return };
        let (a, b) = (fixture.open(), fixture.open());
        // Same keys, different ids (each node assigns its own); half the contents differ.
        let first = items("race", 40);
        let mut second = items("race", 40);
        for item in second.iter_mut().skip(20) {
            item.content.prompt = "other".into();
            *item = NewInteraction::new(item.id, item.received_at, item.content.clone());
        }
        let start = std::sync::Barrier::new(2);
        let (from_a, from_b) = std::thread::scope(|scope| {
            let one = scope.spawn(|| {
                start.wait();
                a.write_interactions(&first).unwrap()
            });
            let two = scope.spawn(|| {
                start.wait();
                b.write_interactions(&second).unwrap()
            });
            (one.join().unwrap(), two.join().unwrap())
        });
        let mut stored = 0;
        for (i, (x, y)) in from_a.iter().zip(&from_b).enumerate() {
            let winner = match (x, y) {
                (WriteOutcome::Created(id), other) | (other, WriteOutcome::Created(id)) => {
                    let expected = if i < 20 {
                        WriteOutcome::Duplicate(*id)
                    } else {
                        WriteOutcome::Conflict(*id)
                    };
                    assert_eq!(*other, expected, "item {i}");
                    *id
                }
                other => panic!("item {i}: nobody stored it: {other:?}"),
            };
            assert!(a.get_interaction(winner).unwrap().is_some());
            stored += 1;
        }
        assert_eq!(stored, 40);
        let (active, _) = a
            .count_mailbox(&crate::domain::MailboxId::parse("alice@contoso.com").unwrap())
            .unwrap();
        assert_eq!(active, 40);
        // The loser's objects have no row: the janitor deletes them, and no stored item's.
        let (deleted, waiting) = a.collect_garbage(Duration::ZERO).unwrap();
        assert_eq!(waiting, 0);
        assert!(deleted <= 40, "{deleted}");
        let winners: Vec<InteractionId> = from_a
            .iter()
            .zip(&from_b)
            .map(|(x, y)| match (x, y) {
                (WriteOutcome::Created(id), _) | (_, WriteOutcome::Created(id)) => *id,
                _ => unreachable!(),
            })
            .collect();
        assert!(a
            .get_interactions(&winners)
            .unwrap()
            .iter()
            .all(Option::is_some));
        let losers: Vec<&NewInteraction> = first
            .iter()
            .chain(&second)
            .filter(|item| !winners.contains(&item.id))
            .collect();
        let engine = bucket(&fixture);
        for loser in losers {
            assert!(engine
                .versions_of(&object_key(loser.id))
                .unwrap()
                .is_empty());
        }
    }

    #[test]
    fn a_sweep_step_decided_before_a_rules_change_or_without_the_lease_writes_nothing() {
        let Some(fixture) = cluster() else { return };
        let (a, b) = (fixture.open(), fixture.open());
        let written = items("fenced", 1);
        a.write_interactions(&written).unwrap();
        let id = written[0].id;
        let moving = |generation: u64, lease: Option<(String, u64)>| SweepWrite {
            moves: a
                .planned_items(&[id])
                .unwrap()
                .into_iter()
                .flatten()
                .collect(),
            rules_generation: Some(generation),
            lease,
            ..SweepWrite::default()
        };
        let decided_at = a.rules_generation().unwrap();
        // Another node places a hold meanwhile: the step writes nothing.
        b.put_hold(&crate::records::HoldRecord {
            id: ulid::Ulid::new(),
            mailboxes: [crate::domain::MailboxId::parse("alice@contoso.com").unwrap()].into(),
            kind: crate::records::HoldKind::Litigation { days: None },
            created_at: Utc::now(),
            created_by: "test".into(),
            released_at: None,
            released_by: None,
        })
        .unwrap();
        assert!(matches!(
            a.apply_sweep(&moving(decided_at, None), Utc::now()),
            Err(StoreError::Fenced(_))
        ));
        let now_at = a.rules_generation().unwrap();
        assert!(now_at > decided_at);
        // Under a lease another node took over: nothing either.
        let minute = Duration::from_secs(60);
        let mine = a
            .acquire_lease("sweeper", "node-a", minute)
            .unwrap()
            .unwrap();
        a.release_lease("sweeper", "node-a").unwrap();
        b.acquire_lease("sweeper", "node-b", minute)
            .unwrap()
            .unwrap();
        assert!(matches!(
            a.apply_sweep(
                &moving(now_at, Some(("node-a".into(), mine.epoch))),
                Utc::now()
            ),
            Err(StoreError::Fenced(_))
        ));
        assert_eq!(
            a.get_interaction(id).unwrap().unwrap().location,
            ItemLocation::Active
        );
        // Current rules and the lease held: the step is written.
        let theirs = b
            .acquire_lease("sweeper", "node-b", minute)
            .unwrap()
            .unwrap();
        let applied = a
            .apply_sweep(
                &moving(now_at, Some(("node-b".into(), theirs.epoch))),
                Utc::now(),
            )
            .unwrap();
        assert_eq!(applied.moved, 1);
    }

    #[test]
    fn retained_content_cannot_be_deleted_with_the_bucket_credentials() {
        let Some(fixture) = cluster() else { return };
        let store = fixture.open();
        let mut written = items("kept", 2);
        let until = Utc::now() + TimeDelta::days(30);
        written[0].retention = Some(ItemRetention {
            until,
            locked: true,
        });
        written[1].retention = Some(ItemRetention {
            until,
            locked: false,
        });
        store.write_interactions(&written).unwrap();
        let engine = bucket(&fixture);
        for item in &written {
            let versions = engine.versions_of(&object_key(item.id)).unwrap();
            assert_eq!(versions.len(), 1);
            assert!(
                matches!(engine.destroy(&versions[0]), Err(StoreError::Locked(_))),
                "the engine let an administrator delete retained content"
            );
            assert_eq!(
                store.get_interaction(item.id).unwrap().unwrap().content,
                item.content
            );
        }
        // A locked policy's retention cannot be shortened even with holdfast's bypass.
        let locked = &engine.versions_of(&object_key(written[0].id)).unwrap()[0];
        assert!(matches!(
            engine.destroy_with(locked, true),
            Err(StoreError::Locked(_))
        ));
    }

    #[test]
    fn a_destruction_deletes_the_object_and_keeps_a_disposition() {
        let Some(fixture) = cluster() else { return };
        let store = fixture.open();
        let written = items("gone", 3);
        store.write_interactions(&written).unwrap();
        let now = Utc::now();
        let ids: Vec<InteractionId> = written.iter().map(|i| i.id).collect();
        store
            .move_ids_to_holds_area(&ids[..2], MoveReason::UserDeleted, now)
            .unwrap();
        let destroys = user_deleted_destroys(&store.planned_items(&ids).unwrap(), now);
        // The ACTIVE one is not where the sweeper thinks (it planned it as moved): skipped.
        let applied = store
            .apply_sweep(
                &SweepWrite {
                    destroys,
                    ..SweepWrite::default()
                },
                now,
            )
            .unwrap();
        assert_eq!(applied.destroyed, 2);
        let got = store.get_interactions(&ids).unwrap();
        assert!(got[0].is_none() && got[1].is_none() && got[2].is_some());
        let engine = bucket(&fixture);
        assert!(engine.versions_of(&object_key(ids[0])).unwrap().is_empty());
        assert_eq!(engine.versions_of(&object_key(ids[2])).unwrap().len(), 1);
        let dispositions = store.list_dispositions(None, None, 10).unwrap();
        let mut disposed: Vec<InteractionId> = dispositions.iter().map(|d| d.id).collect();
        disposed.sort();
        let mut expected = ids[..2].to_vec();
        expected.sort();
        assert_eq!(disposed, expected);
        // Erasure: nothing left in the engine, so it completes.
        let pending = store.erasure_pending(now, 10).unwrap();
        assert_eq!(pending.len(), 2);
        store.erase_from_disk(&ids[..2]).unwrap();
        store.finish_erasure(&pending).unwrap();
        assert_eq!(store.erasure_status().unwrap(), (0, None));
        // The destroyed items' client keys are free again, as in the embedded store.
        let again = store.write_interactions(&written[..1]).unwrap();
        assert!(matches!(again[0], WriteOutcome::Created(_)));
    }
}
