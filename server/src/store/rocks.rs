//! RocksDB implementation of `Store`. Every write that acknowledges something to a caller is
//! synced to the write-ahead log first.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use holdfast_retention::{ItemLocation, MoveReason};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction,
    IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};

use super::keys::{self, *};
use super::{
    AuditTrail, Dispositions, IndexFeed, Interactions, ItemFacts, ItemStates, Metadata,
    NewInteraction, PlannedItem, PolicyWrite, RulesWrite, ScannedItem, Snapshots, StoreError,
    SweepApplied, SweepWrite, TraceStateWrite, TraceStates, WriteOutcome, FORGET_PER_WRITE,
};
use super::{Disposition, Lease, Leases};
use crate::config::Compression;
use crate::domain::{
    Annex, HistorySelector, InteractionId, ListCursor, ListQuery, MailboxId, StoredInteraction,
};
use crate::records::{AuditIntent, AuditRecord, CaseRecord, HoldRecord, PolicyRecord, TokenRecord};

/// A raw (key, value) pair of an index column family.
type IndexEntry = (Vec<u8>, Vec<u8>);

/// Items moved per write batch by `move_to_holds_area`, so memory stays bounded.
const MOVE_CHUNK: usize = 10_000;
/// The encoded values of one kind of move, built once per batch.
struct MoveValues {
    location: Vec<u8>,
    reason: Vec<u8>,
    moved_micros: i64,
}

impl MoveValues {
    fn new(reason: MoveReason, now: DateTime<Utc>) -> MoveValues {
        let location = ItemLocation::Active.move_to_holds_area(reason, now);
        MoveValues {
            location: serde_json::to_vec(&location).expect("locations serialise"),
            reason: serde_json::to_vec(&reason).expect("reasons serialise"),
            moved_micros: time_micros(now),
        }
    }
}

pub struct RocksStore {
    pub(super) db: DB,
    sync_write: WriteOptions,
    /// Serialises moves so that two concurrent deletions never move one item twice.
    move_lock: Mutex<()>,
    /// The last index-queue sequence handed out. Held while a write that appends to the
    /// queue is built and committed, so that sequences commit in order.
    index_sequence: Mutex<u64>,
    /// The same, once its write is committed: read without waiting for a write in progress
    /// (the indexer polls it).
    committed_sequence: std::sync::atomic::AtomicU64,
    /// Where the next pass over `trace_forget` starts: every key before it is deleted (keys
    /// are written with a time a day ahead, so none is written behind it), and starting there
    /// skips the deletion markers of the keys already forgotten.
    forget_from: Mutex<Vec<u8>>,
    /// Serialises `write_trace_states`: its pass over forgotten states must not delete a
    /// state another call is writing again.
    trace_lock: Mutex<()>,
    /// Serialises audit appends, so that each checks the head it follows.
    audit_lock: Mutex<()>,
    /// Leases by name: (holder, epoch, expiry). In memory: one process holds the store, so
    /// leases only order its own threads, and a restart frees them all.
    leases: Mutex<std::collections::HashMap<String, (String, u64, std::time::Instant)>>,
    /// Failpoint of the tests: how many more writes of retention rules, metadata and audit
    /// entries succeed before every later one fails as if the process had stopped there.
    #[cfg(test)]
    writes_left: std::sync::atomic::AtomicI64,
}

impl From<rocksdb::Error> for StoreError {
    fn from(error: rocksdb::Error) -> Self {
        let message = error.into_string();
        // RocksDB reports ENOSPC as an IO error with sub-code NoSpace ("No space left on
        // device"), and afterwards, until it has recovered, as its background error.
        if message.contains("No space left on device") || message.contains("NoSpace") {
            StoreError::NoSpace(message)
        } else {
            StoreError::Engine(message)
        }
    }
}

pub(super) fn corrupt(column_family: &'static str, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        column_family,
        reason: reason.to_string(),
    }
}

impl RocksStore {
    /// Opens (creating if needed) the store under `path`, zstd-compressed.
    pub fn open(path: &Path) -> Result<RocksStore, StoreError> {
        RocksStore::open_with(path, Compression::Zstd)
    }

    /// Opens (creating if needed) the store under `path`; `compression` applies to files
    /// written from now on.
    pub fn open_with(path: &Path, compression: Compression) -> Result<RocksStore, StoreError> {
        let compression = match compression {
            Compression::Zstd => DBCompressionType::Zstd,
            Compression::None => DBCompressionType::None,
        };
        let cache = Cache::new_lru_cache(32 << 20);
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.increase_parallelism(2);
        db_options.set_max_background_jobs(2);
        db_options.set_bytes_per_sync(1 << 20);
        // Bound memtable memory across all column families (the server's RSS budget is
        // 300 MB; see BENCHMARKS.md).
        db_options.set_db_write_buffer_size(96 << 20);

        let descriptors = ALL_CFS.iter().map(|&name| {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            let mut options = Options::default();
            options.set_compression_type(compression);
            options.set_bottommost_compression_type(compression);
            match name {
                CF_INTERACTIONS => {
                    // Large values: bigger blocks compress better.
                    table.set_block_size(32 << 10);
                    options.set_write_buffer_size(32 << 20);
                }
                CF_CLIENT_KEYS | CF_LOCATIONS | CF_ANNEXES | CF_TRACE_STATES => {
                    // Every ingest probes `client_keys`, planning probes `locations`, every
                    // read probes `annexes`, and every OTLP export `trace_states`, usually for
                    // a key that does not exist (an ACTIVE item has no location, most items no
                    // annex, a new trace no state).
                    table.set_bloom_filter(10.0, false);
                    options.set_write_buffer_size(16 << 20);
                }
                _ => options.set_write_buffer_size(16 << 20),
            }
            options.set_block_based_table_factory(&table);
            ColumnFamilyDescriptor::new(name, options)
        });
        let db = DB::open_cf_descriptors(&db_options, path, descriptors)?;

        let mut sync_write = WriteOptions::default();
        sync_write.set_sync(true);
        let store = RocksStore {
            db,
            sync_write,
            move_lock: Mutex::new(()),
            index_sequence: Mutex::new(0),
            committed_sequence: std::sync::atomic::AtomicU64::new(0),
            forget_from: Mutex::new(Vec::new()),
            trace_lock: Mutex::new(()),
            audit_lock: Mutex::new(()),
            leases: Mutex::new(std::collections::HashMap::new()),
            #[cfg(test)]
            writes_left: std::sync::atomic::AtomicI64::new(i64::MAX),
        };
        store.check_format_version(path)?;
        let last = store.load_index_sequence()?;
        *store
            .index_sequence
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = last;
        store
            .committed_sequence
            .store(last, std::sync::atomic::Ordering::Release);
        Ok(store)
    }

    /// From now on, `writes` more writes of rules, metadata and audit entries succeed; the
    /// ones after fail (tests stop the "process" at a chosen write with it).
    #[cfg(test)]
    pub(crate) fn fail_after_writes(&self, writes: i64) {
        self.writes_left
            .store(writes, std::sync::atomic::Ordering::SeqCst);
    }

    #[cfg(test)]
    fn failpoint(&self) -> Result<(), StoreError> {
        if self
            .writes_left
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            <= 0
        {
            return Err(StoreError::Engine(
                "failpoint: stopped before this write".into(),
            ));
        }
        Ok(())
    }

    #[cfg(not(test))]
    #[inline]
    fn failpoint(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Overwrites one raw value (tests damage records with it).
    #[cfg(test)]
    pub(crate) fn put_raw(&self, column_family: &'static str, key: &[u8], value: &[u8]) {
        self.db
            .put_cf(self.cf(column_family), key, value)
            .expect("raw write");
    }

    fn check_format_version(&self, path: &Path) -> Result<(), StoreError> {
        let meta = self.cf(CF_META);
        match self.db.get_cf(meta, META_FORMAT_VERSION)? {
            None => {
                let version = FORMAT_VERSION.to_be_bytes();
                self.db
                    .put_cf_opt(meta, META_FORMAT_VERSION, version, &self.sync_write)?;
                Ok(())
            }
            Some(found) if found.as_slice() == FORMAT_VERSION.to_be_bytes() => Ok(()),
            Some(found) if found.as_slice() == FORMAT_VERSION_WITHOUT_ANNEXES.to_be_bytes() => {
                // The new column families were created empty when the store was opened.
                let version = FORMAT_VERSION.to_be_bytes();
                self.db
                    .put_cf_opt(meta, META_FORMAT_VERSION, version, &self.sync_write)?;
                tracing::info!(path = %path.display(), "store upgraded to format version 3");
                Ok(())
            }
            Some(found) if found.as_slice() == FORMAT_VERSION_WITHOUT_FACTS.to_be_bytes() => {
                self.add_facts_and_due_entries()?;
                let version = FORMAT_VERSION.to_be_bytes();
                self.db
                    .put_cf_opt(meta, META_FORMAT_VERSION, version, &self.sync_write)?;
                tracing::info!(path = %path.display(), "store upgraded to format version {FORMAT_VERSION}");
                Ok(())
            }
            Some(found) => Err(StoreError::UnsupportedFormat {
                path: path.display().to_string(),
                found: hex::encode(found),
            }),
        }
    }

    /// Upgrades a version-1 store: every item gets its retention facts and a due entry at its
    /// `created_at` (no action can come earlier), so the first sweeps plan every item once.
    fn add_facts_and_due_entries(&self) -> Result<(), StoreError> {
        let mut after = None;
        loop {
            let items = self.scan_interactions(after, 5_000)?;
            let Some(last) = items.last() else {
                return Ok(());
            };
            after = Some(last.id);
            let mut batch = WriteBatch::default();
            for item in &items {
                let content = &item.content;
                let facts = ItemFacts {
                    mailbox: content.mailbox_id.clone(),
                    thread: content.thread_id.clone(),
                    app: content.app.clone(),
                    client_key: content.client_key.clone(),
                    created_at: content.created_at,
                    content_sha256: hex::encode(item.content_sha256),
                };
                self.put_facts(&mut batch, item.id, &facts);
                batch.put_cf(
                    self.cf(CF_DUE),
                    keys::timed_key(&[], time_micros(content.created_at), item.id),
                    [],
                );
            }
            self.db.write_opt(batch, &self.sync_write)?;
        }
    }

    fn put_facts(&self, batch: &mut WriteBatch, id: InteractionId, facts: &ItemFacts) {
        batch.put_cf(self.cf(CF_FACTS), keys::interaction_key(id), facts.encode());
    }

    fn put_due(&self, batch: &mut WriteBatch, at: DateTime<Utc>, id: InteractionId) {
        batch.put_cf(
            self.cf(CF_DUE),
            keys::timed_key(&[], time_micros(at), id),
            [],
        );
    }

    /// Adds to `batch` the removal of an ACTIVE item's listing keys (`mailbox`, `thread`,
    /// `created` µs) and its move to the holds area as `values` describe, with a due entry at
    /// `due_at` (if given) so that the sweeper plans it.
    fn add_move(
        &self,
        batch: &mut WriteBatch,
        id: InteractionId,
        (mailbox, thread, created): (&MailboxId, &str, i64),
        values: &MoveValues,
        due_at: Option<DateTime<Utc>>,
    ) {
        let mailbox_prefix = keys::mailbox_prefix(mailbox);
        batch.delete_cf(
            self.cf(CF_ACTIVE_BY_MAILBOX),
            keys::timed_key(&mailbox_prefix, created, id),
        );
        if !thread.is_empty() {
            let thread_prefix = keys::thread_prefix(mailbox, thread);
            batch.delete_cf(
                self.cf(CF_ACTIVE_BY_THREAD),
                keys::timed_key(&thread_prefix, created, id),
            );
        }
        batch.put_cf(
            self.cf(CF_LOCATIONS),
            keys::interaction_key(id),
            &values.location,
        );
        batch.put_cf(
            self.cf(CF_HOLDS_AREA),
            keys::timed_key(&mailbox_prefix, values.moved_micros, id),
            &values.reason,
        );
        if let Some(at) = due_at {
            self.put_due(batch, at, id);
        }
    }

    /// Facts of items, each decoded on its own: a damaged record is that item's error.
    fn facts_of(
        &self,
        ids: &[InteractionId],
    ) -> Result<Vec<Result<Option<ItemFacts>, StoreError>>, StoreError> {
        let fact_keys: Vec<[u8; 16]> = ids.iter().map(|id| keys::interaction_key(*id)).collect();
        self.db
            .batched_multi_get_cf(self.cf(CF_FACTS), fact_keys.iter(), false)
            .into_iter()
            .zip(ids)
            .map(|(found, id)| {
                Ok(match found? {
                    None => Ok(None),
                    Some(bytes) => ItemFacts::decode(&bytes)
                        .map(Some)
                        .map_err(|error| corrupt(CF_FACTS, format!("facts of {id}: {error}"))),
                })
            })
            .collect()
    }

    fn count_prefix(&self, column_family: &'static str, prefix: &[u8]) -> u64 {
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(keys::prefix_end(prefix));
        self.db
            .iterator_cf_opt(
                self.cf(column_family),
                options,
                IteratorMode::From(prefix, Direction::Forward),
            )
            .take_while(Result::is_ok)
            .count() as u64
    }

    fn load_index_sequence(&self) -> Result<u64, StoreError> {
        let recorded = match self.db.get_cf(self.cf(CF_META), META_INDEX_SEQUENCE)? {
            None => 0,
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt(CF_META, "index sequence is not 8 bytes"))?,
            ),
        };
        let queued = match self
            .db
            .iterator_cf(self.cf(CF_INDEX_QUEUE), IteratorMode::End)
            .next()
        {
            None => 0,
            Some(entry) => {
                let (key, _) = entry?;
                u64::from_be_bytes(
                    key.as_ref()
                        .try_into()
                        .map_err(|_| corrupt(CF_INDEX_QUEUE, "key is not 8 bytes"))?,
                )
            }
        };
        Ok(recorded.max(queued))
    }

    /// Appends index work for `ids` to `batch`, writes it durably, and only then advances the
    /// sequence. The sequence lock is held throughout, so sequences commit in order.
    fn write_with_index_work(
        &self,
        mut batch: WriteBatch,
        ids: &[InteractionId],
    ) -> Result<(), StoreError> {
        let mut last = self
            .index_sequence
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut sequence = *last;
        let queue = self.cf(CF_INDEX_QUEUE);
        for id in ids {
            sequence += 1;
            batch.put_cf(queue, keys::index_queue_key(sequence), id.to_bytes());
        }
        if !ids.is_empty() {
            batch.put_cf(
                self.cf(CF_META),
                META_INDEX_SEQUENCE,
                sequence.to_be_bytes(),
            );
        }
        self.db.write_opt(batch, &self.sync_write)?;
        *last = sequence;
        self.committed_sequence
            .store(sequence, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    fn locations_of(&self, ids: &[InteractionId]) -> Result<Vec<ItemLocation>, StoreError> {
        self.locations_each(ids)?.into_iter().collect()
    }

    /// Locations of items, each decoded on its own: a damaged record is that item's error.
    fn locations_each(
        &self,
        ids: &[InteractionId],
    ) -> Result<Vec<Result<ItemLocation, StoreError>>, StoreError> {
        let location_keys: Vec<[u8; 16]> =
            ids.iter().map(|id| keys::interaction_key(*id)).collect();
        self.db
            .batched_multi_get_cf(self.cf(CF_LOCATIONS), location_keys.iter(), false)
            .into_iter()
            .zip(ids)
            .map(|(found, id)| {
                Ok(match found? {
                    None => Ok(ItemLocation::Active),
                    Some(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                        corrupt(CF_LOCATIONS, format!("location of {id}: {error}"))
                    }),
                })
            })
            .collect()
    }

    /// Moves where the next pass over `trace_forget` starts, once the write is done.
    fn forgotten_to(&self, key: Option<Vec<u8>>) {
        if let Some(key) = key {
            *self.forget_from.lock().unwrap_or_else(|e| e.into_inner()) = key;
        }
    }

    /// Annexes of items; an item without one (or gone) has `None`.
    fn annexes_of(&self, ids: &[InteractionId]) -> Result<Vec<Option<Annex>>, StoreError> {
        let annex_keys: Vec<[u8; 16]> = ids.iter().map(|id| keys::interaction_key(*id)).collect();
        self.db
            .batched_multi_get_cf(self.cf(CF_ANNEXES), annex_keys.iter(), false)
            .into_iter()
            .zip(ids)
            .map(|(found, id)| match found? {
                None => Ok(None),
                Some(bytes) => serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|error| corrupt(CF_ANNEXES, format!("annex of {id}: {error}"))),
            })
            .collect()
    }

    fn put_json<T: serde::Serialize>(
        &self,
        column_family: &'static str,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        self.failpoint()?;
        let bytes = serde_json::to_vec(value).expect("records serialise");
        self.db
            .put_cf_opt(self.cf(column_family), key, bytes, &self.sync_write)?;
        Ok(())
    }

    fn list_json<T: serde::de::DeserializeOwned>(
        &self,
        column_family: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let mut records = Vec::new();
        for entry in self
            .db
            .iterator_cf(self.cf(column_family), IteratorMode::Start)
        {
            let (_, value) = entry?;
            records.push(
                serde_json::from_slice(&value).map_err(|error| corrupt(column_family, error))?,
            );
        }
        Ok(records)
    }

    fn cf(&self, name: &'static str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is opened at start")
    }

    fn decode_record(
        id: InteractionId,
        bytes: &[u8],
        location: ItemLocation,
        annex: Option<Annex>,
    ) -> Result<StoredInteraction, StoreError> {
        super::decode_record(id, bytes, location, annex)
    }

    fn decode_client_key_value(bytes: &[u8]) -> Result<(InteractionId, [u8; 32]), StoreError> {
        if bytes.len() != 48 {
            return Err(corrupt(CF_CLIENT_KEYS, "value is not 48 bytes"));
        }
        let id = InteractionId::from_bytes(bytes[..16].try_into().expect("16 bytes"));
        let digest = bytes[16..].try_into().expect("32 bytes");
        Ok((id, digest))
    }

    /// Collects up to `limit` index keys under `prefix`, from `resume_after` (exclusive) on,
    /// with time < `before` when given.
    fn scan_index_chunk(
        &self,
        cf: &ColumnFamily,
        prefix: &[u8],
        resume_after: Option<&[u8]>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<IndexEntry>, StoreError> {
        let lower = match resume_after {
            Some(key) => [key, &[0u8]].concat(),
            None => prefix.to_vec(),
        };
        let upper = match before {
            Some(micros) => [prefix, &keys::encode_time(micros)].concat(),
            None => keys::prefix_end(prefix),
        };
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(lower.clone());
        options.set_iterate_upper_bound(upper);
        self.db
            .iterator_cf_opt(cf, options, IteratorMode::From(&lower, Direction::Forward))
            .take(limit)
            .map(|entry| {
                entry
                    .map(|(key, value)| (key.into_vec(), value.into_vec()))
                    .map_err(StoreError::from)
            })
            .collect()
    }
}

/// The key ranges of `family`'s files that hold at least one of the sorted `wanted` keys,
/// overlapping ranges merged.
fn ranges_holding(
    live_files: &[rocksdb::LiveFile],
    family: &str,
    wanted: &[[u8; 16]],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = live_files
        .iter()
        .filter(|file| file.column_family_name == family)
        .filter_map(|file| Some((file.start_key.clone()?, file.end_key.clone()?)))
        .filter(|(start, end)| {
            let first = wanted.partition_point(|key| key.as_slice() < start.as_slice());
            wanted
                .get(first)
                .is_some_and(|key| key.as_slice() <= end.as_slice())
        })
        .collect();
    ranges.sort();
    let mut merged: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => {
                if end > last.1 {
                    last.1 = end;
                }
            }
            _ => merged.push((start, end)),
        }
    }
    merged
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialise")
}

fn time_micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

/// Where an ACTIVE item is listed: mailbox, thread, created_at µs.
fn listed(facts: &ItemFacts) -> (&MailboxId, &str, i64) {
    (&facts.mailbox, &facts.thread, time_micros(facts.created_at))
}

impl Interactions for RocksStore {
    fn write_interactions(
        &self,
        items: &[NewInteraction],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let client_keys_cf = self.cf(CF_CLIENT_KEYS);
        let lookup_keys: Vec<Vec<u8>> = items
            .iter()
            .map(|item| keys::client_key_key(&item.content.mailbox_id, &item.content.client_key))
            .collect();
        let existing = self
            .db
            .batched_multi_get_cf(client_keys_cf, lookup_keys.iter(), false);

        let mut batch = WriteBatch::default();
        let mut in_this_group: HashMap<&[u8], (InteractionId, [u8; 32])> = HashMap::new();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut created_ids = Vec::with_capacity(items.len());
        for ((item, lookup_key), existing) in items.iter().zip(&lookup_keys).zip(existing) {
            let earlier = match in_this_group.get(lookup_key.as_slice()) {
                Some(earlier) => Some(*earlier),
                None => match existing? {
                    Some(bytes) => Some(Self::decode_client_key_value(&bytes)?),
                    None => None,
                },
            };
            if let Some((earlier_id, earlier_digest)) = earlier {
                outcomes.push(if earlier_digest == item.content_sha256 {
                    WriteOutcome::Duplicate(earlier_id)
                } else {
                    WriteOutcome::Conflict(earlier_id)
                });
                continue;
            }
            let content = &item.content;
            let created = time_micros(content.created_at);
            batch.put_cf(
                self.cf(CF_INTERACTIONS),
                keys::interaction_key(item.id),
                &item.record,
            );
            batch.put_cf(
                client_keys_cf,
                lookup_key,
                [&item.id.to_bytes()[..], &item.content_sha256[..]].concat(),
            );
            let mailbox_prefix = keys::mailbox_prefix(&content.mailbox_id);
            batch.put_cf(
                self.cf(CF_ACTIVE_BY_MAILBOX),
                keys::timed_key(&mailbox_prefix, created, item.id),
                content.thread_id.as_bytes(),
            );
            if !content.thread_id.is_empty() {
                let thread_prefix = keys::thread_prefix(&content.mailbox_id, &content.thread_id);
                batch.put_cf(
                    self.cf(CF_ACTIVE_BY_THREAD),
                    keys::timed_key(&thread_prefix, created, item.id),
                    [],
                );
            }
            self.put_facts(&mut batch, item.id, &item.facts());
            if let Some(at) = item.first_check {
                self.put_due(&mut batch, at, item.id);
            }
            in_this_group.insert(lookup_key, (item.id, item.content_sha256));
            outcomes.push(WriteOutcome::Created(item.id));
            created_ids.push(item.id);
        }
        if !batch.is_empty() {
            self.write_with_index_work(batch, &created_ids)?;
        }
        Ok(outcomes)
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
        let (cf, prefix) = if query.thread_id.is_empty() {
            (
                self.cf(CF_ACTIVE_BY_MAILBOX),
                keys::mailbox_prefix(&query.mailbox_id),
            )
        } else {
            (
                self.cf(CF_ACTIVE_BY_THREAD),
                keys::thread_prefix(&query.mailbox_id, &query.thread_id),
            )
        };
        let lower = match query.created_from {
            Some(from) => [&prefix[..], &keys::encode_time(time_micros(from))].concat(),
            None => prefix.clone(),
        };
        // Exclusive upper bound: the cursor's key, else the end of the created range.
        let upper = match (cursor, query.created_to) {
            (Some(cursor), _) => keys::timed_key(&prefix, cursor.created_micros, cursor.id),
            (None, Some(to)) => [&prefix[..], &keys::encode_time(time_micros(to))].concat(),
            (None, None) => keys::prefix_end(&prefix),
        };
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(lower);
        options.set_iterate_upper_bound(upper.clone());
        let mut ids = Vec::with_capacity(limit + 1);
        for entry in
            self.db
                .iterator_cf_opt(cf, options, IteratorMode::From(&upper, Direction::Reverse))
        {
            let (key, _) = entry?;
            if key.as_ref() >= upper.as_slice() {
                continue;
            }
            let (micros, id) = keys::split_timed_key(&key)
                .ok_or_else(|| corrupt("active index", "key too short"))?;
            ids.push(ListCursor {
                created_micros: micros,
                id,
            });
            if ids.len() > limit {
                break;
            }
        }
        let next = if ids.len() > limit {
            ids.truncate(limit);
            ids.last().copied()
        } else {
            None
        };
        let record_keys: Vec<[u8; 16]> = ids
            .iter()
            .map(|entry| keys::interaction_key(entry.id))
            .collect();
        let records =
            self.db
                .batched_multi_get_cf(self.cf(CF_INTERACTIONS), record_keys.iter(), false);
        let page_ids: Vec<InteractionId> = ids.iter().map(|entry| entry.id).collect();
        let annexes = self.annexes_of(&page_ids)?;
        let mut page = Vec::with_capacity(ids.len());
        for ((entry, record), annex) in ids.iter().zip(records).zip(annexes) {
            let bytes = record?.ok_or_else(|| {
                corrupt(
                    CF_INTERACTIONS,
                    format!("index names {} but no record exists", entry.id),
                )
            })?;
            page.push(Self::decode_record(
                entry.id,
                &bytes,
                ItemLocation::Active,
                annex,
            )?);
        }
        Ok((page, next))
    }

    fn scan_interactions(
        &self,
        after: Option<InteractionId>,
        limit: usize,
    ) -> Result<Vec<StoredInteraction>, StoreError> {
        let start = after.map(|id| [&keys::interaction_key(id)[..], &[0u8]].concat());
        let mode = match &start {
            Some(start) => IteratorMode::From(start, Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut records = Vec::new();
        for entry in self
            .db
            .iterator_cf(self.cf(CF_INTERACTIONS), mode)
            .take(limit)
        {
            let (key, value) = entry?;
            let id: [u8; 16] = key
                .as_ref()
                .try_into()
                .map_err(|_| corrupt(CF_INTERACTIONS, "key is not 16 bytes"))?;
            records.push((InteractionId::from_bytes(id), value));
        }
        let ids: Vec<InteractionId> = records.iter().map(|(id, _)| *id).collect();
        let locations = self.locations_of(&ids)?;
        let annexes = self.annexes_of(&ids)?;
        records
            .into_iter()
            .zip(locations)
            .zip(annexes)
            .map(|(((id, bytes), location), annex)| {
                Self::decode_record(id, &bytes, location, annex)
            })
            .collect()
    }

    fn get_interactions(
        &self,
        ids: &[InteractionId],
    ) -> Result<Vec<Option<StoredInteraction>>, StoreError> {
        let record_keys: Vec<[u8; 16]> = ids.iter().map(|id| keys::interaction_key(*id)).collect();
        let records =
            self.db
                .batched_multi_get_cf(self.cf(CF_INTERACTIONS), record_keys.iter(), false);
        let locations = self.locations_of(ids)?;
        let annexes = self.annexes_of(ids)?;
        records
            .into_iter()
            .zip(locations)
            .zip(annexes)
            .zip(ids)
            .map(|(((record, location), annex), id)| match record? {
                None => Ok(None),
                Some(bytes) => Self::decode_record(*id, &bytes, location, annex).map(Some),
            })
            .collect()
    }

    fn count_mailbox(&self, mailbox: &MailboxId) -> Result<(u64, u64), StoreError> {
        let prefix = keys::mailbox_prefix(mailbox);
        Ok((
            self.count_prefix(CF_ACTIVE_BY_MAILBOX, &prefix),
            self.count_prefix(CF_HOLDS_AREA, &prefix),
        ))
    }
}

impl ItemStates for RocksStore {
    fn move_to_holds_area(
        &self,
        selector: &HistorySelector,
        reason: MoveReason,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let _moving = self.move_lock.lock().unwrap_or_else(|e| e.into_inner());
        let (scan_cf, prefix) = if selector.thread_id.is_empty() {
            (
                self.cf(CF_ACTIVE_BY_MAILBOX),
                keys::mailbox_prefix(&selector.mailbox_id),
            )
        } else {
            (
                self.cf(CF_ACTIVE_BY_THREAD),
                keys::thread_prefix(&selector.mailbox_id, &selector.thread_id),
            )
        };
        let values = MoveValues::new(reason, now);
        let before = selector.before.map(time_micros);

        let mut num_moved = 0u64;
        let mut resume_after: Option<Vec<u8>> = None;
        loop {
            let chunk = self.scan_index_chunk(
                scan_cf,
                &prefix,
                resume_after.as_deref(),
                before,
                MOVE_CHUNK,
            )?;
            let Some((last_key, _)) = chunk.last() else {
                break;
            };
            resume_after = Some(last_key.clone());
            let mut batch = WriteBatch::default();
            let mut moved = Vec::with_capacity(chunk.len());
            for (key, value) in &chunk {
                let (created, id) = keys::split_timed_key(key)
                    .ok_or_else(|| corrupt("active index", "key too short"))?;
                let thread = if selector.thread_id.is_empty() {
                    String::from_utf8(value.clone())
                        .map_err(|_| corrupt(CF_ACTIVE_BY_MAILBOX, "thread id is not UTF-8"))?
                } else {
                    selector.thread_id.clone()
                };
                let place = (&selector.mailbox_id, thread.as_str(), created);
                self.add_move(&mut batch, id, place, &values, Some(now));
                moved.push(id);
            }
            self.write_with_index_work(batch, &moved)?;
            num_moved += chunk.len() as u64;
            if chunk.len() < MOVE_CHUNK {
                break;
            }
        }
        Ok(num_moved)
    }

    fn move_ids_to_holds_area(
        &self,
        ids: &[InteractionId],
        reason: MoveReason,
        now: DateTime<Utc>,
    ) -> Result<Vec<InteractionId>, StoreError> {
        let _moving = self.move_lock.lock().unwrap_or_else(|e| e.into_inner());
        let values = MoveValues::new(reason, now);
        let mut moved = Vec::new();
        for chunk in ids.chunks(MOVE_CHUNK) {
            let facts = self
                .facts_of(chunk)?
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
            let locations = self.locations_of(chunk)?;
            let mut batch = WriteBatch::default();
            let mut moved_now = Vec::new();
            for ((id, facts), location) in chunk.iter().zip(facts).zip(locations) {
                if let (Some(facts), ItemLocation::Active) = (facts, location) {
                    self.add_move(&mut batch, *id, listed(&facts), &values, Some(now));
                    moved_now.push(*id);
                }
            }
            if !moved_now.is_empty() {
                self.write_with_index_work(batch, &moved_now)?;
                moved.extend(moved_now);
            }
        }
        Ok(moved)
    }

    fn due_until(
        &self,
        after: Option<(i64, InteractionId)>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(i64, InteractionId)>, StoreError> {
        let mut options = ReadOptions::default();
        let upper = keys::encode_time(time_micros(until).saturating_add(1));
        options.set_iterate_upper_bound(upper.to_vec());
        // Starting after the last entry read skips the deletion markers of the entries a
        // pass has already consumed.
        let lower = after.map(|(micros, id)| {
            let mut key = keys::timed_key(&[], micros, id);
            key.push(0);
            key
        });
        if let Some(lower) = &lower {
            options.set_iterate_lower_bound(lower.clone());
        }
        let mode = match &lower {
            Some(lower) => IteratorMode::From(lower, Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut due = Vec::new();
        for entry in self
            .db
            .iterator_cf_opt(self.cf(CF_DUE), options, mode)
            .take(limit)
        {
            let (key, _) = entry?;
            due.push(keys::split_timed_key(&key).ok_or_else(|| corrupt(CF_DUE, "key too short"))?);
        }
        Ok(due)
    }

    fn planned_items_each(
        &self,
        ids: &[InteractionId],
    ) -> Result<Vec<Result<Option<PlannedItem>, StoreError>>, StoreError> {
        let facts = self.facts_of(ids)?;
        let locations = self.locations_each(ids)?;
        Ok(ids
            .iter()
            .zip(facts)
            .zip(locations)
            .map(|((id, facts), location)| match facts? {
                None => Ok(None),
                Some(facts) => Ok(Some(PlannedItem {
                    id: *id,
                    facts,
                    location: location?,
                })),
            })
            .collect())
    }

    fn scan_planned_items(
        &self,
        after: Option<InteractionId>,
        limit: usize,
    ) -> Result<Vec<ScannedItem>, StoreError> {
        let start = after.map(|id| [&keys::interaction_key(id)[..], &[0u8]].concat());
        let mode = match &start {
            Some(start) => IteratorMode::From(start, Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut found = Vec::new();
        for entry in self.db.iterator_cf(self.cf(CF_FACTS), mode).take(limit) {
            let (key, value) = entry?;
            let id: [u8; 16] = key
                .as_ref()
                .try_into()
                .map_err(|_| corrupt(CF_FACTS, "key is not 16 bytes"))?;
            let id = InteractionId::from_bytes(id);
            let facts = ItemFacts::decode(&value)
                .map_err(|error| corrupt(CF_FACTS, format!("facts of {id}: {error}")));
            found.push((id, facts));
        }
        let ids: Vec<InteractionId> = found.iter().map(|(id, _)| *id).collect();
        let locations = self.locations_each(&ids)?;
        Ok(found
            .into_iter()
            .zip(locations)
            .map(|((id, facts), location)| {
                let facts = facts.map_err(|error| (id, error))?;
                let location = location.map_err(|error| (id, error))?;
                Ok(PlannedItem {
                    id,
                    facts,
                    location,
                })
            })
            .collect())
    }

    fn schedule(&self, entries: &[(DateTime<Utc>, InteractionId)]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for (at, id) in entries {
            self.put_due(&mut batch, *at, *id);
        }
        self.db.write_opt(batch, &self.sync_write)?;
        Ok(())
    }

    fn apply_sweep(
        &self,
        write: &SweepWrite,
        now: DateTime<Utc>,
    ) -> Result<SweepApplied, StoreError> {
        let _moving = self.move_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = WriteBatch::default();
        for (micros, id) in &write.consumed {
            batch.delete_cf(self.cf(CF_DUE), keys::timed_key(&[], *micros, *id));
        }
        for (at, id) in &write.schedule {
            self.put_due(&mut batch, *at, *id);
        }
        // Re-read locations under the move lock: a user deletion may have moved an item since
        // the sweeper looked at it.
        let move_ids: Vec<InteractionId> = write.moves.iter().map(|m| m.id).collect();
        let destroy_ids: Vec<InteractionId> = write.destroys.iter().map(|(d, _)| d.id).collect();
        let move_locations = self.locations_of(&move_ids)?;
        // Facts never change; only the location needs checking (a destroyed item has none).
        let destroy_locations = self.locations_of(&destroy_ids)?;
        let mut changed = Vec::with_capacity(move_ids.len() + destroy_ids.len());
        let expired = MoveValues::new(MoveReason::Expired, now);
        let mut applied = SweepApplied::default();
        for (item, location) in write.moves.iter().zip(move_locations) {
            if location == ItemLocation::Active {
                // The sweeper schedules the moved item's next check itself.
                self.add_move(&mut batch, item.id, listed(&item.facts), &expired, None);
                changed.push(item.id);
                applied.moved += 1;
            }
        }
        for ((item, disposition), location) in write.destroys.iter().zip(destroy_locations) {
            let ItemLocation::HoldsArea { moved_at, .. } = location else {
                continue;
            };
            if location != item.location {
                continue;
            }
            let id = item.id;
            let facts = &item.facts;
            let key = keys::interaction_key(id);
            batch.delete_cf(self.cf(CF_INTERACTIONS), key);
            batch.delete_cf(self.cf(CF_FACTS), key);
            batch.delete_cf(self.cf(CF_LOCATIONS), key);
            batch.delete_cf(self.cf(CF_ANNEXES), key);
            batch.delete_cf(
                self.cf(CF_CLIENT_KEYS),
                keys::client_key_key(&facts.mailbox, &facts.client_key),
            );
            batch.delete_cf(
                self.cf(CF_HOLDS_AREA),
                keys::timed_key(
                    &keys::mailbox_prefix(&facts.mailbox),
                    time_micros(moved_at),
                    id,
                ),
            );
            batch.put_cf(
                self.cf(CF_DISPOSITIONS),
                keys::timed_key(&[], time_micros(disposition.purged_at), id),
                serde_json::to_vec(disposition).expect("dispositions serialise"),
            );
            // Its text is still in files until the eraser has compacted them.
            batch.put_cf(
                self.cf(CF_ERASURE),
                keys::timed_key(&[], time_micros(disposition.purged_at), id),
                [],
            );
            changed.push(id);
            applied.destroyed += 1;
        }
        // The index work (a destroyed id's document is deleted because its record is gone)
        // commits with the store change: neither can happen without the other.
        self.write_with_index_work(batch, &changed)?;
        Ok(applied)
    }

    fn compact_due(&self) -> Result<(), StoreError> {
        self.db
            .compact_range_cf(self.cf(CF_DUE), None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }
}

impl IndexFeed for RocksStore {
    fn index_queue_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InteractionId)>, StoreError> {
        let start = keys::index_queue_key(after.saturating_add(1));
        let mut work = Vec::new();
        for entry in self
            .db
            .iterator_cf(
                self.cf(CF_INDEX_QUEUE),
                IteratorMode::From(&start, Direction::Forward),
            )
            .take(limit)
        {
            let (key, value) = entry?;
            let sequence = u64::from_be_bytes(
                key.as_ref()
                    .try_into()
                    .map_err(|_| corrupt(CF_INDEX_QUEUE, "key is not 8 bytes"))?,
            );
            let id: [u8; 16] = value
                .as_ref()
                .try_into()
                .map_err(|_| corrupt(CF_INDEX_QUEUE, "value is not 16 bytes"))?;
            work.push((sequence, InteractionId::from_bytes(id)));
        }
        Ok(work)
    }

    fn trim_index_queue(&self, sequence: u64) -> Result<(), StoreError> {
        let queue = self.cf(CF_INDEX_QUEUE);
        self.db.delete_range_cf(
            queue,
            keys::index_queue_key(0),
            keys::index_queue_key(sequence.saturating_add(1)),
        )?;
        Ok(())
    }

    fn last_index_sequence(&self) -> u64 {
        self.committed_sequence
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Dispositions for RocksStore {
    fn list_dispositions(
        &self,
        mailbox: Option<&MailboxId>,
        after: Option<(i64, InteractionId)>,
        limit: usize,
    ) -> Result<Vec<Disposition>, StoreError> {
        let start = after.map(|(micros, id)| {
            let mut key = keys::timed_key(&[], micros, id);
            key.push(0);
            key
        });
        let mode = match &start {
            Some(start) => IteratorMode::From(start, Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut found = Vec::new();
        for entry in self.db.iterator_cf(self.cf(CF_DISPOSITIONS), mode) {
            let (key, value) = entry?;
            let record: Disposition = serde_json::from_slice(&value).map_err(|error| {
                corrupt(
                    CF_DISPOSITIONS,
                    format!("at {}: {error}", hex::encode(&key)),
                )
            })?;
            if mailbox.is_none_or(|m| *m == record.mailbox) {
                found.push(record);
                if found.len() >= limit {
                    break;
                }
            }
        }
        Ok(found)
    }

    fn erasure_pending(
        &self,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(i64, InteractionId)>, StoreError> {
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(
            keys::encode_time(time_micros(until).saturating_add(1)).to_vec(),
        );
        let mut pending = Vec::new();
        for entry in self
            .db
            .iterator_cf_opt(self.cf(CF_ERASURE), options, IteratorMode::Start)
            .take(limit)
        {
            let (key, _) = entry?;
            pending.push(
                keys::split_timed_key(&key).ok_or_else(|| corrupt(CF_ERASURE, "key too short"))?,
            );
        }
        Ok(pending)
    }

    fn erasure_status(&self) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        let mut count = 0u64;
        let mut oldest = None;
        for entry in self
            .db
            .iterator_cf(self.cf(CF_ERASURE), IteratorMode::Start)
        {
            let (key, _) = entry?;
            if oldest.is_none() {
                let (micros, _) = keys::split_timed_key(&key)
                    .ok_or_else(|| corrupt(CF_ERASURE, "key too short"))?;
                oldest = DateTime::from_timestamp_micros(micros);
            }
            count += 1;
        }
        Ok((count, oldest))
    }

    fn erase_from_disk(&self, ids: &[InteractionId]) -> Result<(), StoreError> {
        // 1. Every memtable to disk: a destroyed record still in a memtable is dropped by
        //    the flush (its deletion follows it), and once no memtable needs them the
        //    write-ahead log files that hold the original writes are deleted.
        let families: Vec<&ColumnFamily> = ALL_CFS.iter().map(|name| self.cf(name)).collect();
        let mut flush = rocksdb::FlushOptions::default();
        flush.set_wait(true);
        self.db.flush_cfs_opt(&families, &flush)?;
        // 2. The files of `interactions` that may hold a destroyed record, compacted to the
        //    last level, where a deleted value and its deletion marker both disappear.
        let mut wanted: Vec<[u8; 16]> = ids.iter().map(|id| keys::interaction_key(*id)).collect();
        wanted.sort_unstable();
        let live_files = self.db.live_files()?;
        let mut compact = rocksdb::CompactOptions::default();
        compact.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        compact.set_exclusive_manual_compaction(false);
        // The record holds the text; the facts hold the client key and thread id; the annex
        // the names of tools used.
        for family in [CF_INTERACTIONS, CF_FACTS, CF_ANNEXES] {
            for (start, end) in ranges_holding(&live_files, family, &wanted) {
                // `end` is inclusive for RocksDB's manual compaction.
                self.db
                    .compact_range_cf_opt(self.cf(family), Some(start), Some(end), &compact);
            }
        }
        Ok(())
    }

    fn finish_erasure(&self, entries: &[(i64, InteractionId)]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for (micros, id) in entries {
            batch.delete_cf(self.cf(CF_ERASURE), keys::timed_key(&[], *micros, *id));
        }
        self.db.write_opt(batch, &self.sync_write)?;
        Ok(())
    }
}

impl Metadata for RocksStore {
    fn get_meta(&self, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_META), name)?)
    }

    fn put_meta(&self, name: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        self.failpoint()?;
        match value {
            Some(value) => self
                .db
                .put_cf_opt(self.cf(CF_META), name, value, &self.sync_write)?,
            None => self
                .db
                .delete_cf_opt(self.cf(CF_META), name, &self.sync_write)?,
        }
        Ok(())
    }

    fn write_rules(&self, write: &RulesWrite) -> Result<(), StoreError> {
        self.failpoint()?;
        let mut batch = WriteBatch::default();
        for hold in &write.holds {
            batch.put_cf(self.cf(CF_HOLDS), hold.id.to_bytes(), json(hold));
        }
        match &write.policy {
            Some(PolicyWrite::Put(policy)) => {
                batch.put_cf(self.cf(CF_POLICIES), policy.id.to_bytes(), json(policy));
            }
            Some(PolicyWrite::Delete(id)) => batch.delete_cf(self.cf(CF_POLICIES), id.to_bytes()),
            None => {}
        }
        if let Some(job) = &write.replan_job {
            batch.put_cf(self.cf(CF_META), META_REPLAN, job);
        }
        if let Some(intent) = &write.audit_intent {
            let mut intent = intent.clone();
            intent.after_sequence = self.last_audit_record()?.map_or(0, |r| r.sequence);
            batch.put_cf(
                self.cf(CF_META),
                [META_AUDIT_INTENT, &intent.id.to_bytes()[..]].concat(),
                json(&intent),
            );
        }
        self.db.write_opt(batch, &self.sync_write)?;
        Ok(())
    }

    fn audit_intents(&self) -> Result<Vec<AuditIntent>, StoreError> {
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(keys::prefix_end(META_AUDIT_INTENT));
        let mut intents = Vec::new();
        for entry in self.db.iterator_cf_opt(
            self.cf(CF_META),
            options,
            IteratorMode::From(META_AUDIT_INTENT, Direction::Forward),
        ) {
            let (_, value) = entry?;
            intents.push(
                serde_json::from_slice(&value)
                    .map_err(|error| corrupt(CF_META, format!("audit intent: {error}")))?,
            );
        }
        Ok(intents)
    }

    fn clear_audit_intent(&self, id: ulid::Ulid) -> Result<(), StoreError> {
        self.failpoint()?;
        self.db.delete_cf_opt(
            self.cf(CF_META),
            [META_AUDIT_INTENT, &id.to_bytes()[..]].concat(),
            &self.sync_write,
        )?;
        Ok(())
    }

    fn put_policy(&self, policy: &PolicyRecord) -> Result<(), StoreError> {
        self.put_json(CF_POLICIES, &policy.id.to_bytes(), policy)
    }

    fn delete_policy(&self, id: ulid::Ulid) -> Result<(), StoreError> {
        self.failpoint()?;
        self.db
            .delete_cf_opt(self.cf(CF_POLICIES), id.to_bytes(), &self.sync_write)?;
        Ok(())
    }

    fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        self.list_json(CF_POLICIES)
    }

    fn put_hold(&self, hold: &HoldRecord) -> Result<(), StoreError> {
        self.put_json(CF_HOLDS, &hold.id.to_bytes(), hold)
    }

    fn list_holds(&self) -> Result<Vec<HoldRecord>, StoreError> {
        self.list_json(CF_HOLDS)
    }

    fn put_case(&self, case: &CaseRecord) -> Result<(), StoreError> {
        self.put_json(CF_CASES, &case.id.to_bytes(), case)
    }

    fn get_case(&self, id: ulid::Ulid) -> Result<Option<CaseRecord>, StoreError> {
        match self.db.get_cf(self.cf(CF_CASES), id.to_bytes())? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|error| corrupt(CF_CASES, format!("case {id}: {error}"))),
        }
    }

    fn list_cases(&self) -> Result<Vec<CaseRecord>, StoreError> {
        self.list_json(CF_CASES)
    }

    fn put_token(&self, token_sha256: [u8; 32], record: &TokenRecord) -> Result<(), StoreError> {
        self.put_json(CF_TOKENS, &token_sha256, record)
    }

    fn delete_token(&self, token_sha256: [u8; 32]) -> Result<(), StoreError> {
        self.db
            .delete_cf_opt(self.cf(CF_TOKENS), token_sha256, &self.sync_write)?;
        Ok(())
    }

    fn list_tokens(&self) -> Result<Vec<([u8; 32], TokenRecord)>, StoreError> {
        let mut tokens = Vec::new();
        for entry in self.db.iterator_cf(self.cf(CF_TOKENS), IteratorMode::Start) {
            let (key, value) = entry?;
            let hash: [u8; 32] = key
                .as_ref()
                .try_into()
                .map_err(|_| corrupt(CF_TOKENS, "key is not 32 bytes"))?;
            let record =
                serde_json::from_slice(&value).map_err(|error| corrupt(CF_TOKENS, error))?;
            tokens.push((hash, record));
        }
        Ok(tokens)
    }
}

impl AuditTrail for RocksStore {
    fn last_audit_record(&self) -> Result<Option<AuditRecord>, StoreError> {
        let mut iter = self.db.iterator_cf(self.cf(CF_AUDIT), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(entry) => {
                let (_, value) = entry?;
                serde_json::from_slice(&value)
                    .map(Some)
                    .map_err(|error| corrupt(CF_AUDIT, error))
            }
        }
    }

    fn append_audit_records(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.append_audit_chained(&mut |_| records.to_vec())
            .map(drop)
    }

    fn append_audit_chained(
        &self,
        chain: &mut dyn FnMut(Option<&AuditRecord>) -> Vec<AuditRecord>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.failpoint()?;
        let _appending = self.audit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let head = self.last_audit_record()?;
        let records = chain(head.as_ref());
        super::check_audit_chain(head.as_ref(), &records)?;
        let mut batch = WriteBatch::default();
        for record in &records {
            let value = serde_json::to_vec(record).expect("audit records serialise");
            batch.put_cf(self.cf(CF_AUDIT), keys::audit_key(record.sequence), value);
        }
        self.db.write_opt(batch, &self.sync_write)?;
        Ok(records)
    }

    fn scan_audit_records(
        &self,
        from_sequence: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let start = keys::audit_key(from_sequence);
        let mut records = Vec::new();
        for entry in self
            .db
            .iterator_cf(
                self.cf(CF_AUDIT),
                IteratorMode::From(&start, Direction::Forward),
            )
            .take(limit)
        {
            let (key, value) = entry?;
            let record: AuditRecord = serde_json::from_slice(&value).map_err(|error| {
                corrupt(
                    CF_AUDIT,
                    format!("entry at key {}: {error}", hex::encode(&key)),
                )
            })?;
            records.push(record);
        }
        Ok(records)
    }
}

impl TraceStates for RocksStore {
    fn get_trace_states(
        &self,
        keys: &[Vec<u8>],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let now = keys::encode_time(time_micros(now));
        self.db
            .batched_multi_get_cf(self.cf(CF_TRACE_STATES), keys.iter(), false)
            .into_iter()
            .map(|found| {
                Ok(match found? {
                    // The first 8 bytes are when the state is to be forgotten: from then on
                    // it is as good as gone, whether or not a pass has deleted it yet.
                    Some(bytes) if bytes.len() >= 8 => {
                        (bytes[..8] > now[..]).then(|| bytes[8..].to_vec())
                    }
                    Some(_) => return Err(corrupt(CF_TRACE_STATES, "value shorter than 8 bytes")),
                    None => None,
                })
            })
            .collect()
    }

    fn write_trace_states(
        &self,
        write: &TraceStateWrite,
    ) -> Result<Vec<InteractionId>, StoreError> {
        let states = self.cf(CF_TRACE_STATES);
        let forget = self.cf(CF_TRACE_FORGET);
        let _writing = self.trace_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = WriteBatch::default();

        // Forget states whose time has passed (a state written again since has a later time,
        // and stays).
        let forget_from = self
            .forget_from
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(forget_from.clone());
        options.set_iterate_upper_bound(
            keys::encode_time(time_micros(write.now).saturating_add(1)).to_vec(),
        );
        let mut forgotten_to = None;
        for entry in self
            .db
            .iterator_cf_opt(
                forget,
                options,
                IteratorMode::From(&forget_from, Direction::Forward),
            )
            // At least as many as are written, so that forgetting keeps pace.
            .take(FORGET_PER_WRITE.max(write.states.len().saturating_mul(2)))
        {
            let (key, _) = entry?;
            forgotten_to = Some([&key[..], &[0u8]].concat());
            let (at, state_key) = key
                .split_at_checked(8)
                .ok_or_else(|| corrupt(CF_TRACE_FORGET, "key shorter than 8 bytes"))?;
            batch.delete_cf(forget, &key);
            if let Some(value) = self.db.get_pinned_cf(states, state_key)? {
                if value.len() < 8 || value[..8] <= *at {
                    batch.delete_cf(states, state_key);
                }
            }
        }
        let forget_at = keys::encode_time(time_micros(write.forget_at));
        let mut earliest_new: Option<Vec<u8>> = None;
        for (key, state) in &write.states {
            batch.put_cf(states, key, [&forget_at[..], state].concat());
            let forget_key = [&forget_at[..], key].concat();
            if earliest_new.as_ref().is_none_or(|e| forget_key < *e) {
                earliest_new = Some(forget_key.clone());
            }
            batch.put_cf(forget, forget_key, []);
        }
        // The next pass starts after what this one forgot, but never after a key written now.
        let next_from = match (forgotten_to, earliest_new) {
            (Some(after), Some(new)) => Some(after.min(new)),
            (after, None) => after,
            (None, Some(new)) => (new < forget_from).then_some(new),
        };

        if write.annexes.is_empty() {
            self.db.write_opt(batch, &self.sync_write)?;
            self.forgotten_to(next_from);
            return Ok(Vec::new());
        }
        // Annexes only for interactions that exist (their small facts record says so, and
        // goes with them): destruction takes the same lock.
        let _moving = self.move_lock.lock().unwrap_or_else(|e| e.into_inner());
        let ids: Vec<InteractionId> = write.annexes.iter().map(|(id, _)| *id).collect();
        let record_keys: Vec<[u8; 16]> = ids.iter().map(|id| keys::interaction_key(*id)).collect();
        let exists = self
            .db
            .batched_multi_get_cf(self.cf(CF_FACTS), record_keys.iter(), false);
        let mut annexes: HashMap<InteractionId, Annex> = HashMap::new();
        let mut grown = Vec::new();
        for (((id, added), existing), record) in
            write.annexes.iter().zip(self.annexes_of(&ids)?).zip(exists)
        {
            if record?.is_none() {
                continue;
            }
            let annex = annexes
                .entry(*id)
                .or_insert_with(|| existing.unwrap_or_default());
            if annex.add(added, write.max_entries) {
                annex.updated_at = write.now;
                if !grown.contains(id) {
                    grown.push(*id);
                }
            }
        }
        for id in &grown {
            batch.put_cf(
                self.cf(CF_ANNEXES),
                keys::interaction_key(*id),
                json(&annexes[id]),
            );
        }
        self.write_with_index_work(batch, &grown)?;
        self.forgotten_to(next_from);
        Ok(grown)
    }
}

impl Leases for RocksStore {
    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let now = std::time::Instant::now();
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = match leases.get(name) {
            Some((current, epoch, expires)) if *expires > now => {
                if current != holder {
                    return Ok(None);
                }
                *epoch
            }
            Some((_, epoch, _)) => epoch + 1,
            None => 1,
        };
        let too_long = || StoreError::Engine(format!("lease time {ttl:?} is out of range"));
        let expires = now.checked_add(ttl).ok_or_else(too_long)?;
        let expires_at = chrono::TimeDelta::from_std(ttl)
            .ok()
            .and_then(|ttl| Utc::now().checked_add_signed(ttl))
            .ok_or_else(too_long)?;
        leases.insert(name.to_string(), (holder.to_string(), epoch, expires));
        Ok(Some(Lease { epoch, expires_at }))
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let now = std::time::Instant::now();
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((current, _, expires)) = leases.get_mut(name) {
            if current == holder {
                *expires = now;
            }
        }
        Ok(())
    }
}

impl Snapshots for RocksStore {
    fn checkpoint(&self, dir: &Path) -> Result<Option<AuditRecord>, StoreError> {
        self.create_checkpoint(dir)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use ulid::Ulid;

    use super::*;
    use crate::domain::{InteractionContent, Model, Safety};

    fn item(client_key: &str) -> NewInteraction {
        NewInteraction::new(
            InteractionId(Ulid::new()),
            Utc::now(),
            InteractionContent {
                client_key: client_key.into(),
                mailbox_id: MailboxId::parse("old@contoso.com").unwrap(),
                thread_id: "t".into(),
                app: "Word".into(),
                created_at: Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap(),
                prompt: "p".into(),
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

    /// A format-1 directory (no facts, no due entries) is upgraded when opened: every item
    /// gets its facts and a due entry at its `created_at`.
    #[test]
    fn a_format_1_store_is_upgraded_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let items = [item("a"), item("b")];
        {
            let store = RocksStore::open(&path).unwrap();
            store.write_interactions(&items).unwrap();
            // Make it look like format 1.
            for cf in [CF_FACTS, CF_DUE] {
                store
                    .db
                    .delete_range_cf(store.cf(cf), &[0u8][..], &[0xffu8; 32][..])
                    .unwrap();
            }
            store
                .db
                .put_cf(
                    store.cf(CF_META),
                    META_FORMAT_VERSION,
                    FORMAT_VERSION_WITHOUT_FACTS.to_be_bytes(),
                )
                .unwrap();
            assert!(store.planned_items(&[items[0].id]).unwrap()[0].is_none());
        }
        let store = RocksStore::open(&path).unwrap();
        let planned = store.planned_items(&[items[0].id, items[1].id]).unwrap();
        assert_eq!(planned[0].as_ref().unwrap().facts, items[0].facts());
        assert_eq!(planned[1].as_ref().unwrap().facts, items[1].facts());
        let due = store
            .due_until(None, Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap(), 10)
            .unwrap();
        assert_eq!(due.len(), 2);
        assert_eq!(
            store.get_meta(META_FORMAT_VERSION).unwrap().unwrap(),
            FORMAT_VERSION.to_be_bytes()
        );
    }

    fn annex(plugins: &[&str]) -> Annex {
        Annex {
            plugins: plugins
                .iter()
                .map(|name| crate::domain::Plugin {
                    name: name.to_string(),
                    ..Default::default()
                })
                .collect(),
            principals: vec!["backend".into()],
            ..Annex::default()
        }
    }

    fn attach(
        store: &RocksStore,
        annexes: Vec<(InteractionId, Annex)>,
        now: DateTime<Utc>,
    ) -> Vec<InteractionId> {
        store
            .write_trace_states(&TraceStateWrite {
                states: Vec::new(),
                forget_at: now,
                annexes,
                max_entries: 2,
                now,
            })
            .unwrap()
    }

    /// Annexes grow only (within the bound), are read with the item, queue index work, are
    /// never made for an item that does not exist, and are destroyed with the item.
    #[test]
    fn annexes_grow_are_read_back_and_are_destroyed_with_their_item() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(&dir.path().join("store")).unwrap();
        let items = [item("a"), item("b")];
        store.write_interactions(&items).unwrap();
        let (a, b) = (items[0].id, items[1].id);
        let unknown = InteractionId(Ulid::new());
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let queued = store.last_index_sequence();

        let grown = attach(
            &store,
            vec![(a, annex(&["search"])), (unknown, annex(&["x"]))],
            t0,
        );
        assert_eq!(grown, vec![a]);
        assert_eq!(store.last_index_sequence(), queued + 1);
        let read = store.get_interaction(a).unwrap().unwrap().annex.unwrap();
        assert_eq!(read.plugins, annex(&["search"]).plugins);
        assert_eq!(read.updated_at, t0);
        assert!(store.get_interaction(b).unwrap().unwrap().annex.is_none());
        assert!(store.get_interaction(unknown).unwrap().is_none());

        // The same again: nothing grows, nothing is queued; more: added, up to the bound.
        let t1 = t0 + chrono::TimeDelta::seconds(1);
        assert!(attach(&store, vec![(a, annex(&["search"]))], t1).is_empty());
        assert_eq!(store.last_index_sequence(), queued + 1);
        assert_eq!(
            attach(&store, vec![(a, annex(&["mail", "calendar"]))], t1),
            vec![a]
        );
        let read = store.get_interaction(a).unwrap().unwrap().annex.unwrap();
        assert_eq!(read.plugins, annex(&["search", "mail"]).plugins);
        assert_eq!(read.updated_at, t1);
        let listed = store
            .list_active(
                &ListQuery {
                    mailbox_id: items[0].content.mailbox_id.clone(),
                    thread_id: String::new(),
                    created_from: None,
                    created_to: None,
                },
                None,
                10,
            )
            .unwrap()
            .0;
        assert_eq!(listed.iter().filter(|i| i.annex.is_some()).count(), 1);

        // Destroyed: the annex goes with it, and none is made afterwards.
        store
            .move_ids_to_holds_area(&[a], MoveReason::UserDeleted, t1)
            .unwrap();
        let planned = store.planned_items(&[a]).unwrap().pop().flatten().unwrap();
        let disposition = Disposition {
            id: a,
            mailbox: planned.facts.mailbox.clone(),
            content_sha256: planned.facts.content_sha256.clone(),
            created_at: planned.facts.created_at,
            moved_at: t1,
            purged_at: t1,
            reason: MoveReason::UserDeleted,
            policies: Vec::new(),
        };
        let applied = store
            .apply_sweep(
                &SweepWrite {
                    destroys: vec![(planned, disposition)],
                    ..SweepWrite::default()
                },
                t1,
            )
            .unwrap();
        assert_eq!(applied.destroyed, 1);
        assert!(store.annexes_of(&[a]).unwrap()[0].is_none());
        assert!(attach(&store, vec![(a, annex(&["late"]))], t1).is_empty());
        assert!(store.annexes_of(&[a]).unwrap()[0].is_none());
    }

    /// Trace states are read back until their time passes, then forgotten by a later write;
    /// a state written again since keeps its later time.
    #[test]
    fn trace_states_are_forgotten_after_their_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(&dir.path().join("store")).unwrap();
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let hour = chrono::TimeDelta::hours(1);
        let write = |states: Vec<(&str, &str)>, forget_at, now| {
            store
                .write_trace_states(&TraceStateWrite {
                    states: states
                        .into_iter()
                        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                        .collect(),
                    forget_at,
                    annexes: Vec::new(),
                    max_entries: 10,
                    now,
                })
                .unwrap()
        };
        let read_at = |key: &str, now| {
            store
                .get_trace_states(&[key.as_bytes().to_vec()], now)
                .unwrap()
                .pop()
                .flatten()
                .map(|v| String::from_utf8(v).unwrap())
        };
        // Read as of t0, before any state's time: what is still stored.
        let stored = |key: &str| read_at(key, t0);
        write(vec![("a", "1"), ("b", "1")], t0 + hour, t0);
        write(vec![("b", "2")], t0 + hour * 3, t0 + hour / 2);
        assert_eq!(stored("a").as_deref(), Some("1"));
        assert_eq!(stored("b").as_deref(), Some("2"));
        assert_eq!(stored("c"), None);
        // From its time on, a state reads as gone, even before a write deletes it.
        assert_eq!(read_at("a", t0 + hour), None);
        assert_eq!(read_at("b", t0 + hour).as_deref(), Some("2"));
        // A write past a's time (and b's first): a is deleted, b is not.
        write(vec![], t0 + hour * 5, t0 + hour * 2);
        assert_eq!(stored("a"), None);
        assert_eq!(stored("b").as_deref(), Some("2"));
        write(vec![], t0 + hour * 5, t0 + hour * 4);
        assert_eq!(stored("b"), None);
        // A state whose time is behind what was already forgotten is still forgotten.
        write(vec![("c", "1")], t0 + hour, t0 + hour * 4);
        assert_eq!(stored("c").as_deref(), Some("1"));
        write(vec![], t0 + hour * 9, t0 + hour * 5);
        assert_eq!(stored("c"), None);

        // Forgetting keeps pace with writing, however many states one write brings.
        let many = |prefix: &str| -> Vec<(String, &str)> {
            (0..FORGET_PER_WRITE * 2)
                .map(|i| (format!("{prefix}{i}"), "1"))
                .collect()
        };
        let first = many("x");
        write(
            first.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
            t0 + hour * 10,
            t0 + hour * 6,
        );
        let second = many("y");
        write(
            second.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
            t0 + hour * 20,
            t0 + hour * 11,
        );
        assert!(first.iter().all(|(k, _)| stored(k).is_none()));
        assert!(second.iter().all(|(k, _)| stored(k).is_some()));
    }
}
