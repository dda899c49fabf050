//! The split catalog of cluster search (`search = "splits"`): which immutable tantivy splits
//! exist for each partition of mailboxes, how far each partition's indexer has read the index
//! feed, and the delete sets (tombstones) that hide superseded documents. Split objects live
//! in the bucket under `splits/<id>` without any lock (they are derived data: a merge or a
//! destruction must be able to delete them); the rows are in PostgreSQL
//! (`pg/0007_splits.sql`).
//!
//! Exactly-once indexing, as Quickwit does it: a split is staged (row), then written
//! (object), then published together with its partition's checkpoint in one transaction that
//! also checks the indexer's lease epoch and the checkpoint it started from. A crash before
//! the publish leaves a staged split that `collect_split_garbage` deletes; the feed entries
//! are read again by the next holder of the lease.

use std::collections::HashMap;
use std::time::Duration;

use super::{id_of, ids_bytes, off_async, ClusterStore};
use crate::domain::{InteractionId, SEARCH_PARTITIONS};
use crate::store::s3::ObjectVersion;
use crate::store::StoreError;

/// A split as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitRow {
    pub id: String,
    pub partition: i16,
    /// The partition's feed entries up to here are in this split or in newer ones.
    pub max_seq: u64,
    pub min_created_us: Option<i64>,
    pub max_created_us: Option<i64>,
    pub num_docs: u64,
    pub bytes: u64,
    /// The version of its object (empty while staged).
    pub version_id: String,
}

/// A lease a catalog change is fenced by: it commits only while `holder` holds `name` at
/// `epoch`.
#[derive(Debug, Clone)]
pub struct SplitLease {
    pub name: String,
    pub holder: String,
    pub epoch: u64,
}

/// One publication of a partition's indexer or merger, committed at once.
#[derive(Debug, Clone)]
pub struct SplitPublish {
    pub lease: SplitLease,
    pub partition: i16,
    /// The checkpoint the work started from: the publish is refused if it moved since.
    pub checkpoint_from: u64,
    /// The new checkpoint (equal to `checkpoint_from` for a merge).
    pub checkpoint_to: u64,
    /// The new split, if any (already staged and written).
    pub split: Option<SplitRow>,
    /// Items whose documents in older splits are superseded (at `checkpoint_to`), with
    /// whether each was destroyed.
    pub tombstones: Vec<(InteractionId, bool)>,
    /// Splits this one replaces (a merge).
    pub retire: Vec<String>,
}

/// What searchers need to know of the catalog now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitHead {
    /// Moves on every publish and retirement.
    pub generation: u64,
    pub bootstrap_at: Option<u64>,
    pub bootstrapped: bool,
}

fn unsigned(table: &'static str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        column_family: table,
        reason: format!("negative value {value}"),
    })
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The catalog as searchers read it (`split_catalog`).
#[derive(Debug, Clone, Default)]
pub struct SplitCatalog {
    pub head: SplitHead,
    pub splits: Vec<SplitRow>,
    /// (partition, item, sequence).
    pub tombstones: Vec<(i16, InteractionId, u64)>,
}

fn head_of(row: &postgres::Row) -> Result<SplitHead, StoreError> {
    Ok(SplitHead {
        generation: unsigned("split_head", row.get(0))?,
        bootstrap_at: row
            .get::<_, Option<i64>>(1)
            .map(|at| unsigned("split_head", at))
            .transpose()?,
        bootstrapped: row.get(2),
    })
}

fn split_key(id: &str) -> String {
    format!("splits/{id}")
}

fn split_row(row: &postgres::Row) -> Result<SplitRow, StoreError> {
    Ok(SplitRow {
        id: row.get(0),
        partition: row.get(1),
        max_seq: unsigned("splits", row.get(2))?,
        min_created_us: row.get(3),
        max_created_us: row.get(4),
        num_docs: unsigned("splits", row.get(5))?,
        bytes: unsigned("splits", row.get(6))?,
        version_id: row.get(7),
    })
}

const SPLIT_COLUMNS: &str =
    "id, partition, max_seq, min_created_us, max_created_us, num_docs, bytes, version_id";

/// Checks in `transaction` that `lease` is still held at its epoch, and keeps it so (FOR
/// SHARE) until the transaction ends.
fn check_lease(
    transaction: &mut postgres::Transaction<'_>,
    lease: &SplitLease,
) -> Result<(), StoreError> {
    let held = transaction.query_opt(
        "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND epoch = $3
             AND expires_at > clock_timestamp() FOR SHARE",
        &[&lease.name, &lease.holder, &signed(lease.epoch)],
    )?;
    if held.is_none() {
        return Err(StoreError::Fenced(format!(
            "this node no longer holds the lease {}",
            lease.name
        )));
    }
    Ok(())
}

impl ClusterStore {
    /// The catalog's head.
    pub fn split_head(&self) -> Result<SplitHead, StoreError> {
        off_async(|| {
            head_of(&self.pg.connection()?.query_one(
                "SELECT generation, bootstrap_at, bootstrapped FROM split_head",
                &[],
            )?)
        })
    }

    /// The last sequence of the index feed (committed: a writer holds the head's row until
    /// its entries commit).
    pub fn committed_feed_head(&self) -> Result<u64, StoreError> {
        off_async(|| {
            let last: i64 = self
                .pg
                .connection()?
                .query_one("SELECT last FROM index_feed_head", &[])?
                .get(0);
            unsigned("index_feed_head", last)
        })
    }

    /// Begins the bootstrap (as the holder of `lease`): records where it starts and gives
    /// every partition its checkpoint there, so that the feed after it is kept and the
    /// partitions' indexers can start. Answers the start; a bootstrap begun before (by a
    /// node that stopped) keeps its start.
    pub fn begin_split_bootstrap(&self, lease: &SplitLease) -> Result<u64, StoreError> {
        off_async(|| {
            let mut connection = self.pg.connection()?;
            let mut transaction = connection.transaction()?;
            check_lease(&mut transaction, lease)?;
            let at: i64 = transaction
                .query_opt(
                    "UPDATE split_head SET bootstrap_at = coalesce(bootstrap_at,
                         (SELECT last FROM index_feed_head))
                     WHERE NOT bootstrapped RETURNING bootstrap_at",
                    &[],
                )?
                .ok_or_else(|| StoreError::Fenced("the splits are bootstrapped already".into()))?
                .get(0);
            let partitions: Vec<i16> = (0..SEARCH_PARTITIONS as i16).collect();
            transaction.execute(
                "INSERT INTO split_checkpoints (partition, sequence)
                 SELECT unnest($1::smallint[]), $2 ON CONFLICT DO NOTHING",
                &[&partitions, &at],
            )?;
            transaction.commit()?;
            unsigned("split_head", at)
        })
    }

    /// Publishes the bootstrap's splits (staged and written) and marks the catalog complete.
    pub fn finish_split_bootstrap(
        &self,
        lease: &SplitLease,
        splits: &[SplitRow],
    ) -> Result<(), StoreError> {
        off_async(|| {
            let mut connection = self.pg.connection()?;
            let mut transaction = connection.transaction()?;
            check_lease(&mut transaction, lease)?;
            for split in splits {
                publish_row(&mut transaction, split)?;
            }
            let finished = transaction.execute(
                "UPDATE split_head SET bootstrapped = true, generation = generation + 1
                 WHERE NOT bootstrapped",
                &[],
            )?;
            if finished != 1 {
                return Err(StoreError::Fenced(
                    "the splits are bootstrapped already".into(),
                ));
            }
            transaction.commit()?;
            Ok(())
        })
    }

    /// Every partition's checkpoint.
    pub fn split_checkpoints(&self) -> Result<HashMap<i16, u64>, StoreError> {
        off_async(|| {
            self.pg
                .connection()?
                .query("SELECT partition, sequence FROM split_checkpoints", &[])?
                .iter()
                .map(|row| Ok((row.get(0), unsigned("split_checkpoints", row.get(1))?)))
                .collect()
        })
    }

    /// Up to `limit` feed entries of `partition` in `(after, through]`, in order: sequence,
    /// item, and whether the entry is the item's ingest.
    pub fn partition_feed(
        &self,
        partition: i16,
        after: u64,
        through: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InteractionId, bool)>, StoreError> {
        off_async(|| {
            self.pg
                .connection()?
                .query(
                    "SELECT sequence, id, fresh FROM index_feed
                     WHERE partition = $1 AND sequence > $2 AND sequence <= $3
                     ORDER BY sequence LIMIT $4",
                    &[
                        &partition,
                        &signed(after),
                        &signed(through),
                        &i64::try_from(limit).unwrap_or(i64::MAX),
                    ],
                )?
                .iter()
                .map(|row| {
                    Ok((
                        unsigned("index_feed", row.get(0))?,
                        id_of("index_feed", row.get(1))?,
                        row.get(2),
                    ))
                })
                .collect()
        })
    }

    /// Which of `ids` have feed entries after `after`: the bootstrap leaves those to the
    /// partitions' indexers.
    pub fn in_feed_after(
        &self,
        ids: &[InteractionId],
        after: u64,
    ) -> Result<std::collections::HashSet<InteractionId>, StoreError> {
        off_async(|| {
            self.pg
                .connection()?
                .query(
                    "SELECT DISTINCT id FROM index_feed
                     WHERE id = ANY($1) AND sequence > $2 AND partition IS NOT NULL",
                    &[&ids_bytes(ids), &signed(after)],
                )?
                .iter()
                .map(|row| id_of("index_feed", row.get(0)))
                .collect()
        })
    }

    /// The catalog as of one moment: its head, every published split and every tombstone.
    pub fn split_catalog(&self) -> Result<SplitCatalog, StoreError> {
        off_async(|| {
            let mut connection = self.pg.connection()?;
            let mut transaction = connection
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let head = transaction.query_one(
                "SELECT generation, bootstrap_at, bootstrapped FROM split_head",
                &[],
            )?;
            let head = head_of(&head)?;
            let splits = transaction
                .query(
                    &format!(
                        "SELECT {SPLIT_COLUMNS} FROM splits WHERE state = 'published'
                         ORDER BY partition, max_seq, id"
                    ),
                    &[],
                )?
                .iter()
                .map(split_row)
                .collect::<Result<_, _>>()?;
            let tombstones = transaction
                .query("SELECT partition, id, sequence FROM split_tombstones", &[])?
                .iter()
                .map(|row| {
                    Ok((
                        row.get(0),
                        id_of("split_tombstones", row.get(1))?,
                        unsigned("split_tombstones", row.get(2))?,
                    ))
                })
                .collect::<Result<_, StoreError>>()?;
            transaction.commit()?;
            Ok(SplitCatalog {
                head,
                splits,
                tombstones,
            })
        })
    }

    /// Partitions with tombstones of destroyed items older than `age`: their splits still
    /// hold destroyed text, which a merge must remove.
    pub fn partitions_to_erase(&self) -> Result<Vec<i16>, StoreError> {
        off_async(|| {
            Ok(self
                .pg
                .connection()?
                .query(
                    "SELECT DISTINCT partition FROM split_tombstones WHERE erase ORDER BY 1",
                    &[],
                )?
                .iter()
                .map(|row| row.get(0))
                .collect())
        })
    }

    /// Every feed entry up to the answer (at most `head`) is in the splits' files as it is
    /// now: no published or retired split holds text of an item destroyed by an entry up to
    /// there.
    pub fn splits_erased_through(&self, head: u64) -> Result<u64, StoreError> {
        let indexed = self.splits_indexed_through(head)?;
        off_async(|| {
            let row = self.pg.connection()?.query_one(
                // A split that may hold a destroyed item's text was built before the
                // destruction: below its feed entry.
                // Nor can a split not published (staged, retired, doomed), nor the bootstrap
                // while it runs, be shown not to hold it.
                "SELECT least(
                     $1::bigint,
                     (SELECT min(s.max_seq) FROM splits s JOIN split_tombstones t
                          ON s.partition = t.partition AND s.max_seq < t.sequence
                      WHERE t.erase AND s.state = 'published'),
                     (SELECT min(max_seq) FROM splits WHERE state <> 'published'),
                     (SELECT bootstrap_at FROM split_head WHERE NOT bootstrapped))",
                &[&signed(indexed)],
            )?;
            row.get::<_, Option<i64>>(0)
                .map_or(Ok(0), |through| unsigned("splits", through.max(0)))
        })
    }

    /// Every feed entry up to the answer (at most `head`) is in the published splits: the
    /// entry before the first one a partition's indexer has not read.
    pub fn splits_indexed_through(&self, head: u64) -> Result<u64, StoreError> {
        off_async(|| {
            let first: Option<i64> = self
                .pg
                .connection()?
                .query_one(
                    "SELECT min((SELECT min(f.sequence) FROM index_feed f
                                 WHERE f.partition = c.partition AND f.sequence > c.sequence
                                   AND f.sequence <= $1))
                     FROM split_checkpoints c",
                    &[&signed(head)],
                )?
                .get(0);
            match first {
                Some(first) => unsigned("index_feed", first - 1),
                None => Ok(head),
            }
        })
    }

    /// The holders of live `split-node/<holder>` leases: the nodes that index splits now.
    pub fn live_split_nodes(&self) -> Result<Vec<String>, StoreError> {
        off_async(|| {
            Ok(self
                .pg
                .connection()?
                .query(
                    "SELECT holder FROM leases WHERE name LIKE 'split-node/%'
                         AND expires_at > clock_timestamp() ORDER BY holder",
                    &[],
                )?
                .iter()
                .map(|row| row.get(0))
                .collect())
        })
    }

    /// The splits named `ids` that are published or retired (a retired split stays
    /// searchable for a search planned before its merge until it is doomed).
    pub fn searchable_splits(&self, ids: &[String]) -> Result<Vec<SplitRow>, StoreError> {
        off_async(|| {
            self.pg
                .connection()?
                .query(
                    &format!(
                        "SELECT {SPLIT_COLUMNS} FROM splits
                         WHERE id = ANY($1) AND state IN ('published', 'retired')"
                    ),
                    &[&ids],
                )?
                .iter()
                .map(split_row)
                .collect()
        })
    }

    /// Saves a search's pinned plan (encoded) as `id`, for any node to answer its later
    /// pages. Deletes plans older than `max_age_seconds`, and `owner`'s oldest beyond
    /// `max_per_owner`.
    pub fn pin_search_plan(
        &self,
        id: u64,
        owner: &str,
        plan: &[u8],
        max_age_seconds: f64,
        max_per_owner: i64,
    ) -> Result<(), StoreError> {
        // Ids are random 64-bit numbers; the column is signed.
        let id = id as i64;
        off_async(|| {
            let mut connection = self.pg.connection()?;
            let mut tx = connection.transaction()?;
            tx.execute(
                "DELETE FROM search_plans
                 WHERE pinned_at < clock_timestamp() - make_interval(secs => $1)",
                &[&max_age_seconds],
            )?;
            tx.execute(
                "DELETE FROM search_plans WHERE id IN (
                     SELECT id FROM search_plans WHERE owner = $1
                     ORDER BY pinned_at DESC OFFSET $2)",
                &[&owner, &(max_per_owner - 1).max(0)],
            )?;
            tx.execute(
                "INSERT INTO search_plans (id, owner, plan) VALUES ($1, $2, $3)",
                &[&id, &owner, &plan],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// A pinned plan (encoded) no older than `max_age_seconds`.
    pub fn search_plan(
        &self,
        id: u64,
        max_age_seconds: f64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let id = id as i64;
        off_async(|| {
            Ok(self
                .pg
                .connection()?
                .query_opt(
                    "SELECT plan FROM search_plans WHERE id = $1
                         AND pinned_at >= clock_timestamp() - make_interval(secs => $2)",
                    &[&id, &max_age_seconds],
                )?
                .map(|row| row.get(0)))
        })
    }

    /// Registers where this run of a node (`holder`, `<node>/<run>`) answers leaf searches,
    /// forgetting the addresses of the node's earlier runs.
    pub fn register_search_node(&self, holder: &str, address: &str) -> Result<(), StoreError> {
        let node = holder.split('/').next().unwrap_or(holder);
        off_async(|| {
            let mut connection = self.pg.connection()?;
            let mut tx = connection.transaction()?;
            tx.execute(
                "DELETE FROM search_nodes WHERE split_part(holder, '/', 1) = $1
                     AND holder <> $2",
                &[&node, &holder],
            )?;
            tx.execute(
                "INSERT INTO search_nodes (holder, address) VALUES ($1, $2)
                 ON CONFLICT (holder) DO UPDATE SET address = excluded.address,
                     registered_at = clock_timestamp()",
                &[&holder, &address],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// The live nodes (holders of live `split-node/<holder>` leases) with the address each
    /// answers leaf searches at, if it registered one.
    pub fn live_search_nodes(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        off_async(|| {
            Ok(self
                .pg
                .connection()?
                .query(
                    "SELECT l.holder, n.address FROM leases l
                         LEFT JOIN search_nodes n ON n.holder = l.holder
                     WHERE l.name LIKE 'split-node/%' AND l.expires_at > clock_timestamp()
                     ORDER BY l.holder",
                    &[],
                )?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect())
        })
    }

    /// Whether no item is stored: a catalog not yet bootstrapped then leaves nothing out.
    pub fn holds_no_item(&self) -> Result<bool, StoreError> {
        off_async(|| {
            Ok(self
                .pg
                .connection()?
                .query_one("SELECT NOT EXISTS (SELECT 1 FROM items)", &[])?
                .get(0))
        })
    }

    /// Keeps staged splits from being collected while their builder still works on them.
    pub fn touch_staged_splits(&self, ids: &[String]) -> Result<(), StoreError> {
        off_async(|| {
            self.pg.connection()?.execute(
                "UPDATE splits SET changed_at = now() WHERE id = ANY($1) AND state = 'staged'",
                &[&ids],
            )?;
            Ok(())
        })
    }

    /// Registers split `id` of `partition` as staged, before its object is written:
    /// `max_seq` as it will be published.
    pub fn stage_split(&self, id: &str, partition: i16, max_seq: u64) -> Result<(), StoreError> {
        off_async(|| {
            self.pg.connection()?.execute(
                "INSERT INTO splits (id, partition, state, max_seq, num_docs, bytes)
                 VALUES ($1, $2, 'staged', $3, 0, 0)",
                &[&id, &partition, &signed(max_seq)],
            )?;
            Ok(())
        })
    }

    /// Writes a split's object (no lock: splits are derived data) and answers its version.
    pub fn put_split_object(&self, id: &str, bytes: Vec<u8>) -> Result<String, StoreError> {
        off_async(|| {
            Ok(self
                .objects
                .put(&split_key(id), bytes, None, false)?
                .version_id)
        })
    }

    /// The bytes of a split's object; `None` once it is gone.
    pub fn get_split_object(&self, split: &SplitRow) -> Result<Option<Vec<u8>>, StoreError> {
        off_async(|| {
            self.objects.get(&ObjectVersion {
                key: split_key(&split.id),
                version_id: split.version_id.clone(),
            })
        })
    }

    /// Publishes the work of a partition's indexer or merger (see `SplitPublish`). Refused
    /// (`Fenced`), writing nothing, when the lease was lost or the checkpoint moved.
    pub fn publish_splits(&self, publish: &SplitPublish) -> Result<(), StoreError> {
        off_async(|| {
            let mut connection = self.pg.connection()?;
            let mut transaction = connection.transaction()?;
            check_lease(&mut transaction, &publish.lease)?;
            let moved = transaction.execute(
                "UPDATE split_checkpoints SET sequence = $3
                 WHERE partition = $1 AND sequence = $2",
                &[
                    &publish.partition,
                    &signed(publish.checkpoint_from),
                    &signed(publish.checkpoint_to),
                ],
            )?;
            if moved != 1 {
                return Err(StoreError::Fenced(format!(
                    "the checkpoint of partition {} moved",
                    publish.partition
                )));
            }
            if let Some(split) = &publish.split {
                publish_row(&mut transaction, split)?;
            }
            if !publish.retire.is_empty() {
                let retired = transaction.execute(
                    "UPDATE splits SET state = 'retired', changed_at = now()
                     WHERE id = ANY($1) AND partition = $2 AND state = 'published'",
                    &[&publish.retire, &publish.partition],
                )?;
                if retired != publish.retire.len() as u64 {
                    return Err(StoreError::Fenced(
                        "a split being merged is no longer published".into(),
                    ));
                }
            }
            if !publish.tombstones.is_empty() {
                let ids: Vec<InteractionId> =
                    publish.tombstones.iter().map(|(id, _)| *id).collect();
                let erase: Vec<bool> = publish.tombstones.iter().map(|(_, e)| *e).collect();
                transaction.execute(
                    "INSERT INTO split_tombstones (partition, id, sequence, erase)
                     SELECT $1, u.id, $2, u.erase FROM unnest($3::bytea[], $4::boolean[])
                         AS u(id, erase)
                     ON CONFLICT DO NOTHING",
                    &[
                        &publish.partition,
                        &signed(publish.checkpoint_to),
                        &ids_bytes(&ids),
                        &erase,
                    ],
                )?;
            }
            // Tombstones at or below every published split's max_seq hide nothing any more,
            // nor those at or below the start of a bootstrap still running (its splits are
            // published later and hold older forms).
            transaction.execute(
                "DELETE FROM split_tombstones WHERE partition = $1 AND sequence <= coalesce(
                     least((SELECT min(max_seq) FROM splits
                            WHERE partition = $1 AND state = 'published'),
                           (SELECT bootstrap_at FROM split_head WHERE NOT bootstrapped)),
                     $2)",
                &[&publish.partition, &signed(publish.checkpoint_to)],
            )?;
            if publish.split.is_some()
                || !publish.retire.is_empty()
                || !publish.tombstones.is_empty()
            {
                transaction.execute("UPDATE split_head SET generation = generation + 1", &[])?;
            }
            transaction.commit()?;
            Ok(())
        })
    }

    /// Deletes the feed entries every reader has read (see `trim_feed`).
    pub fn trim_split_feed(&self) -> Result<(), StoreError> {
        off_async(|| {
            let mut connection = self.pg.connection()?;
            let mut transaction = connection.transaction()?;
            super::trim_feed(&mut transaction)?;
            transaction.commit()?;
            Ok(())
        })
    }

    /// Deletes the objects and rows of splits staged or retired longer than `grace` ago
    /// (staged ones a crashed indexer left; retired ones a merge replaced). Answers how many.
    pub fn collect_split_garbage(&self, grace: Duration) -> Result<u64, StoreError> {
        off_async(|| {
            // Doomed first: a publish of a staged split fails from then on, so no published
            // row ever names a deleted object.
            self.pg.connection()?.execute(
                "UPDATE splits SET state = 'doomed' WHERE state IN ('staged', 'retired')
                     AND changed_at < now() - $1::bigint * interval '1 millisecond'",
                &[&i64::try_from(grace.as_millis()).unwrap_or(i64::MAX)],
            )?;
            let rows = self.pg.connection()?.query(
                "SELECT id FROM splits WHERE state = 'doomed' LIMIT 1000",
                &[],
            )?;
            let mut collected = 0;
            for row in rows {
                let id: String = row.get(0);
                // Every version of its key: a staged split's write may have happened without
                // its version being recorded, and a retried write leaves another.
                let versions = self.objects.versions_of(&split_key(&id))?;
                for version in &versions {
                    self.objects.destroy(version)?;
                }
                self.pg.connection()?.execute(
                    "DELETE FROM splits WHERE id = $1 AND state = 'doomed'",
                    &[&id],
                )?;
                collected += 1;
            }
            Ok(collected)
        })
    }
}

/// Marks a staged split published with what it holds.
fn publish_row(
    transaction: &mut postgres::Transaction<'_>,
    split: &SplitRow,
) -> Result<(), StoreError> {
    let published = transaction.execute(
        "UPDATE splits SET state = 'published', partition = $2, max_seq = $3,
             min_created_us = $4, max_created_us = $5, num_docs = $6, bytes = $7,
             version_id = $8, changed_at = now()
         WHERE id = $1 AND state = 'staged'",
        &[
            &split.id,
            &split.partition,
            &signed(split.max_seq),
            &split.min_created_us,
            &split.max_created_us,
            &signed(split.num_docs),
            &signed(split.bytes),
            &split.version_id,
        ],
    )?;
    if published != 1 {
        return Err(StoreError::Fenced(format!(
            "split {} is not staged (collected as garbage?)",
            split.id
        )));
    }
    Ok(())
}
