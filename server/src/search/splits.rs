//! Cluster search in splits (`[cluster] search = "splits"`): the index is not kept whole on
//! every node but built once, per search partition (a hash of the mailbox), into immutable
//! tantivy **splits** in the bucket, registered in PostgreSQL with the partition's feed
//! checkpoint in one transaction (`store::cluster::splits`).
//!
//! - **Indexing.** Each partition has one indexer at a time: the node holding its lease
//!   `split-index-<p>`. It reads the partition's feed entries after its checkpoint, builds a
//!   split of the items' current forms, writes it to the bucket and publishes it. Items that
//!   had an older form (moved, annexed, destroyed) get a **tombstone** at the new checkpoint:
//!   their documents in older splits are dead.
//! - **Merging.** A partition with many splits, or with tombstones of destroyed items, is
//!   merged by its indexer into one split without the dead documents: destroyed text leaves
//!   the splits' files, and the sweeper's erasure waits for that (`erased_through`).
//! - **Searching.** Any node opens a **view** of every published split: the splits' segment
//!   files from a local cache (downloaded once, immutable), with the tombstones written as
//!   tantivy delete bitsets, under one `meta.json`. A view is an ordinary tantivy `Searcher`,
//!   so search, counts, exports and case holds run on it unchanged.
//! - **Bootstrap.** A cluster that turns splits on indexes every stored item once (lease
//!   `split-bootstrap`); searches answer UNAVAILABLE until it is published.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tantivy::collector::DocSetCollector;
use tantivy::directory::{Directory, ManagedDirectory, MmapDirectory, TerminatingWrite};
use tantivy::index::{SegmentComponent, SegmentId};
use tantivy::query::TermSetQuery;
use tantivy::{Index, IndexMeta, IndexWriter, ReloadPolicy, Searcher, SegmentMeta, Term};
use tantivy_common::BitSet;
use tokio_util::sync::CancellationToken;

use super::id_pages::IdPages;
use super::index::{register_tokenizer, IndexError, IndexProgress, SearcherSource};
use super::kql;
use super::schema::{self, Fields, SCHEMA_VERSION};
use super::searcher::{execute_ranked, merge, Results, Sort};
use crate::domain::{
    search_partition, InteractionId, MailboxId, StoredInteraction, SEARCH_PARTITIONS,
};
use crate::store::cluster::splits::{SplitCatalog, SplitLease, SplitPublish, SplitRow};
use crate::store::cluster::ClusterStore;
use crate::store::{Interactions, Leases, StoreError};

/// The first bytes of a split object.
const MAGIC: &[u8; 8] = b"HFSPLIT1";
/// Feed entries of a partition indexed into one split at most.
const FEED_CHUNK: usize = 5_000;
/// Items read from the store at once (their content is in the bucket).
const LOAD_CHUNK: usize = 500;
/// Items per split built by the bootstrap.
const BOOTSTRAP_SPLIT: usize = 10_000;
/// Memory of a split builder's or merger's writer.
const WRITER_MEMORY: usize = 50 << 20;
/// Published splits of a partition at which its indexer merges them.
const MERGE_AT: usize = 8;
/// How long a lease of this worker lasts; it is renewed at half of it, and every
/// `HEARTBEAT` during long work.
const LEASE_TTL: Duration = Duration::from_secs(30);
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How often a partition without a lease here is tried again.
const LEASE_RETRY: Duration = Duration::from_secs(5);
/// Pause between steps of the worker.
const STEP_PAUSE: Duration = Duration::from_millis(200);
/// A partition without new entries moves its checkpoint at most this often (so that the
/// feed can be trimmed behind it).
const IDLE_ADVANCE: Duration = Duration::from_secs(5);
/// How long a staged or retired split's object stays: longer than any indexer takes from
/// staging to publishing, and than any node takes to download a split it has just listed.
const SPLIT_GRACE: Duration = Duration::from_secs(120);
/// How long one step of the worker spends downloading the splits of its partitions at most
/// (the step after it indexes again).
const PREFETCH_BUDGET: Duration = Duration::from_secs(2);
/// How long a split whose prefetch failed waits before it is tried again.
const PREFETCH_RETRY: Duration = Duration::from_secs(60);
/// How long a split of a partition another node indexes stays in the cache unused.
const FOREIGN_IDLE: Duration = Duration::from_secs(600);
/// How often the garbage of the catalog is collected, the feed trimmed and the local cache
/// trimmed to the published splits.
const HOUSEKEEPING: Duration = Duration::from_secs(10);

fn index_error(error: impl std::fmt::Display) -> IndexError {
    IndexError::Splits(error.to_string())
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `name` may be a file of a split: plain tantivy file names only, so that a damaged
/// object cannot write outside its directory.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// A split's files as one object: the magic, the schema version, the number of files, then
/// each file's name and bytes, with lengths.
fn pack(dir: &Path, files: &[String]) -> Result<Vec<u8>, IndexError> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
    out.extend_from_slice(&(files.len() as u32).to_le_bytes());
    for name in files {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(io_error(&path))?;
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

/// Writes the files of a split object into `dir`; a damaged object is an error.
fn unpack(bytes: &[u8], dir: &Path) -> Result<(), IndexError> {
    let damaged = |what: &str| IndexError::Splits(format!("split object is damaged: {what}"));
    let mut rest = bytes;
    let mut take = |n: usize| -> Result<&[u8], IndexError> {
        if rest.len() < n {
            return Err(damaged("it ends early"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    if take(8)? != MAGIC {
        return Err(damaged("not a split"));
    }
    let version = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
    if version != SCHEMA_VERSION {
        return Err(IndexError::Splits(format!(
            "split of index schema {version}, this node reads {SCHEMA_VERSION}"
        )));
    }
    let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    for _ in 0..count {
        let length = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
        let name = std::str::from_utf8(take(length)?)
            .ok()
            .filter(|name| plain_name(name))
            .ok_or_else(|| damaged("a file name"))?
            .to_string();
        let length = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        let length = usize::try_from(length).map_err(|_| damaged("a file length"))?;
        let path = dir.join(&name);
        std::fs::write(&path, take(length)?).map_err(io_error(&path))?;
    }
    if !rest.is_empty() {
        return Err(damaged("bytes after its last file"));
    }
    Ok(())
}

/// The files of `metas`' segments that exist in `dir` (a segment without deletes lists a
/// delete file it does not have).
fn segment_files(dir: &Path, metas: &[SegmentMeta]) -> Vec<String> {
    let mut files: Vec<String> = metas
        .iter()
        .flat_map(|meta| meta.list_files())
        .filter_map(|path| path.to_str().map(str::to_string))
        .filter(|name| dir.join(name).exists())
        .collect();
    files.sort();
    files.dedup();
    files
}

/// Builds a split of `items` in `dir` (new), as one commit.
fn build(dir: &Path, fields: &Fields, items: &[StoredInteraction]) -> Result<Index, IndexError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let (schema, _) = schema::schema();
    let index = Index::create_in_dir(dir, schema)?;
    register_tokenizer(&index);
    let mut writer: IndexWriter = index.writer_with_num_threads(1, WRITER_MEMORY)?;
    for item in items {
        writer.add_document(schema::document(fields, item))?;
    }
    writer.commit()?;
    writer.wait_merging_threads()?;
    Ok(index)
}

/// A split in the local cache, opened.
struct Cached {
    dir: PathBuf,
    /// When a search or a merge last asked for it (`None`: never; only fetched ahead).
    used: Mutex<Option<Instant>>,
    metas: Vec<SegmentMeta>,
    /// The split alone, to find the documents of tombstoned items.
    searcher: Searcher,
}

impl Cached {
    fn open(dir: PathBuf) -> Result<Cached, IndexError> {
        let index = Index::open_in_dir(&dir)?;
        register_tokenizer(&index);
        let metas = index.searchable_segment_metas()?;
        let searcher = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?
            .searcher();
        Ok(Cached {
            dir,
            used: Mutex::new(None),
            metas,
            searcher,
        })
    }

    /// The documents of `ids` in this split, by segment.
    fn docs_of(
        &self,
        fields: &Fields,
        ids: &[InteractionId],
    ) -> Result<HashMap<SegmentId, Vec<u32>>, IndexError> {
        let mut by_segment: HashMap<SegmentId, Vec<u32>> = HashMap::new();
        if ids.is_empty() {
            return Ok(by_segment);
        }
        let searcher = &self.searcher;
        let query = TermSetQuery::new(
            ids.iter()
                .map(|id| Term::from_field_text(fields.id, &id.to_string())),
        );
        for address in searcher.search(&query, &DocSetCollector)? {
            let segment = searcher.segment_reader(address.segment_ord).segment_id();
            by_segment.entry(segment).or_default().push(address.doc_id);
        }
        Ok(by_segment)
    }
}

/// The `meta.json` of an index of `segments`.
fn meta_json(segments: Vec<SegmentMeta>) -> Result<Vec<u8>, IndexError> {
    let (schema, _) = schema::schema();
    let meta = IndexMeta {
        index_settings: Default::default(),
        segments,
        schema,
        opstamp: 1,
        payload: None,
    };
    serde_json::to_vec(&meta).map_err(index_error)
}

/// Composes, in `dir` (new), an index of `parts`' segments with the documents named dead
/// per part deleted, and opens it.
fn compose(
    dir: &Path,
    fields: &Fields,
    parts: &[(&Cached, Vec<InteractionId>)],
) -> Result<Index, IndexError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let managed = ManagedDirectory::wrap(Box::new(MmapDirectory::open(dir).map_err(index_error)?))?;
    let mut segments = Vec::new();
    for (cached, dead) in parts {
        let dead = cached.docs_of(fields, dead)?;
        for name in segment_files(&cached.dir, &cached.metas) {
            let (from, to) = (cached.dir.join(&name), dir.join(&name));
            if to.exists() {
                // Never overwrite: that file belongs to another split's segment.
                return Err(IndexError::Splits(format!(
                    "two splits hold the segment file {name}"
                )));
            }
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).map_err(io_error(&from))?;
            }
        }
        for meta in &cached.metas {
            let Some(docs) = dead.get(&meta.id()).filter(|docs| !docs.is_empty()) else {
                segments.push(meta.clone());
                continue;
            };
            let mut alive = BitSet::with_max_value_and_full(meta.max_doc());
            for doc in docs {
                alive.remove(*doc);
            }
            let deleted = meta.max_doc() - alive.len() as u32;
            let meta = meta.clone().with_delete_meta(deleted, 1);
            let path = meta.relative_path(SegmentComponent::Delete);
            let mut file = managed.open_write(&path).map_err(index_error)?;
            alive.serialize(&mut file).map_err(io_error(dir))?;
            file.flush().map_err(io_error(dir))?;
            file.terminate().map_err(io_error(dir))?;
            segments.push(meta);
        }
    }
    managed
        .atomic_write(Path::new("meta.json"), &meta_json(segments)?)
        .map_err(io_error(dir))?;
    let index = Index::open_in_dir(dir)?;
    register_tokenizer(&index);
    Ok(index)
}

/// Bounds of the creation time of every item `query` can match: `[from, to)` in µs, `None`
/// where unbounded.
fn created_bounds(query: &kql::Query) -> (Option<i64>, Option<i64>) {
    use kql::Query;
    let tighter = |a: Option<i64>, b: Option<i64>, pick: fn(i64, i64) -> i64| match (a, b) {
        (Some(a), Some(b)) => Some(pick(a, b)),
        (a, b) => a.or(b),
    };
    match query {
        Query::Created { from, to } => (*from, *to),
        Query::And(parts) => parts.iter().map(created_bounds).fold(
            (None, None),
            |(from, to), (part_from, part_to)| {
                (
                    tighter(from, part_from, i64::max),
                    tighter(to, part_to, i64::min),
                )
            },
        ),
        Query::Or(parts) if !parts.is_empty() => {
            let bounds: Vec<_> = parts.iter().map(created_bounds).collect();
            // Bounded on a side only if every alternative is.
            let from = bounds
                .iter()
                .map(|(from, _)| *from)
                .collect::<Option<Vec<i64>>>()
                .and_then(|froms| froms.into_iter().min());
            let to = bounds
                .iter()
                .map(|(_, to)| *to)
                .collect::<Option<Vec<i64>>>()
                .and_then(|tos| tos.into_iter().max());
            (from, to)
        }
        _ => (None, None),
    }
}

/// A view: one searcher over every published split of a catalog generation.
struct View {
    generation: u64,
    searcher: Searcher,
}

/// A view of one partition's splits for leaf searches (`SplitSearch::leaf`), with, per
/// segment of its searcher, the split it comes from and its place in that split: the tie
/// order of hits, the same whichever node searches the splits.
struct LeafView {
    searcher: Searcher,
    ties: Vec<(String, u64)>,
    opened: Instant,
}

/// Leaf views kept open at most (each keeps its splits' files open).
const LEAF_VIEWS: usize = 64;

/// What a leaf view is of: the splits (sorted ids) and a digest of the tombstones applied.
type LeafKey = (Vec<String>, [u8; 32]);

/// What a search reads (`SplitSearch::plan`): splits, and the tombstones of their
/// partitions as they were when it was planned. Pinned for paging.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub splits: Vec<SplitRow>,
    /// (partition, item, sequence).
    pub dead: Vec<(i16, InteractionId, u64)>,
}

impl Plan {
    /// The part of the plan of `partitions`.
    pub fn of_partitions(&self, partitions: &HashSet<i16>) -> Plan {
        Plan {
            splits: self
                .splits
                .iter()
                .filter(|split| partitions.contains(&split.partition))
                .cloned()
                .collect(),
            dead: self
                .dead
                .iter()
                .filter(|(partition, _, _)| partitions.contains(partition))
                .copied()
                .collect(),
        }
    }

    pub fn num_docs(&self) -> u64 {
        self.splits.iter().map(|split| split.num_docs).sum()
    }
}

impl SearcherSource for SplitSearch {
    fn searcher(&self) -> Result<Searcher, IndexError> {
        self.current_view()
    }
}

/// A page of matching ids (`SplitSearch::leaf_ids`, `FanOut::ids`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdPage {
    /// The smallest matching ids asked for, in order.
    pub ids: Vec<InteractionId>,
    /// How many match after the id asked for, when asked.
    pub count: u64,
    /// With `among`: which of those ids are in the splits at all (whatever the query).
    pub present: Vec<InteractionId>,
}

/// Searching and building splits on one node.
pub struct SplitSearch {
    store: Arc<ClusterStore>,
    /// The local cache: `cache/<split>` per split, `work/` for views and builds.
    dir: PathBuf,
    fields: Fields,
    view: Mutex<Option<View>>,
    leaf_views: Mutex<HashMap<LeafKey, Arc<LeafView>>>,
    /// The catalog last read, reused while its generation is current.
    catalog: Mutex<Option<Arc<SplitCatalog>>>,
    cache: Mutex<HashMap<String, Arc<Cached>>>,
    /// One composition at a time.
    composing: Mutex<()>,
}

impl SplitSearch {
    /// Opens the cache under `dir`; what it held before is of no use (it is rebuilt from the
    /// bucket as needed).
    pub fn open(store: Arc<ClusterStore>, dir: &Path) -> Result<Arc<SplitSearch>, IndexError> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io_error(dir))?;
        }
        for sub in ["cache", "work"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io_error(&path))?;
        }
        let (_, fields) = schema::schema();
        Ok(Arc::new(SplitSearch {
            store,
            dir: dir.to_path_buf(),
            fields,
            view: Mutex::new(None),
            leaf_views: Mutex::new(HashMap::new()),
            catalog: Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            composing: Mutex::new(()),
        }))
    }

    pub(crate) fn store(&self) -> &Arc<ClusterStore> {
        &self.store
    }

    fn work_dir(&self) -> PathBuf {
        self.dir
            .join("work")
            .join(ulid::Ulid::new().to_string().to_lowercase())
    }

    /// A searcher over every split published now, with every tombstone applied.
    pub fn searcher(&self) -> Result<Searcher, IndexError> {
        self.current_view()
    }

    fn current_view(&self) -> Result<Searcher, IndexError> {
        let generation = self.store.split_head()?.generation;
        let current = |view: &Option<View>| {
            view.as_ref()
                .filter(|view| view.generation == generation)
                .map(|view| view.searcher.clone())
        };
        if let Some(searcher) = current(&self.view.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(searcher);
        }
        let _one = self.composing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(searcher) = current(&self.view.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(searcher);
        }
        let catalog = self.store.split_catalog()?;
        let searcher = self.open_view(&catalog)?;
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = Some(View {
            generation: catalog.head.generation,
            searcher: searcher.clone(),
        });
        Ok(searcher)
    }

    /// The catalog now (read again only when its generation moved).
    fn catalog_now(&self) -> Result<Arc<SplitCatalog>, IndexError> {
        self.catalog_at(self.store.split_head()?.generation)
    }

    /// The catalog as of `generation` or later (read again only when the one kept is older).
    fn catalog_at(&self, generation: u64) -> Result<Arc<SplitCatalog>, IndexError> {
        if let Some(catalog) = self
            .catalog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|catalog| catalog.head.generation >= generation)
        {
            return Ok(Arc::clone(catalog));
        }
        let catalog = Arc::new(self.store.split_catalog()?);
        *self.catalog.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&catalog));
        Ok(catalog)
    }

    /// The published splits a search of `query` over `mailboxes` reads: those of their
    /// partitions holding items created when the query can match.
    /// The plan is a snapshot: its splits with the tombstones of now, so that every page
    /// of a search sees the same documents dead, whatever is published or merged meanwhile.
    pub fn plan(&self, mailboxes: &[MailboxId], query: &kql::Query) -> Result<Plan, IndexError> {
        let partitions: HashSet<i16> = mailboxes
            .iter()
            .map(|mailbox| search_partition(mailbox.as_str()))
            .collect();
        let (from, to) = created_bounds(query);
        let catalog = self.catalog_now()?;
        let splits: Vec<SplitRow> = catalog
            .splits
            .iter()
            .filter(|split| partitions.contains(&split.partition))
            .filter(|split| {
                from.is_none_or(|from| split.max_created_us.is_none_or(|max| max >= from))
                    && to.is_none_or(|to| split.min_created_us.is_none_or(|min| min < to))
            })
            .cloned()
            .collect();
        // The tombstones any planned split is older than.
        let mut oldest: HashMap<i16, u64> = HashMap::new();
        for split in &splits {
            let entry = oldest.entry(split.partition).or_insert(split.max_seq);
            *entry = (*entry).min(split.max_seq);
        }
        let dead = catalog
            .tombstones
            .iter()
            .filter(|(partition, _, sequence)| {
                oldest
                    .get(partition)
                    .is_some_and(|oldest| sequence > oldest)
            })
            .copied()
            .collect();
        Ok(Plan { splits, dead })
    }

    /// The published or recently retired splits named `ids`, as the catalog has them: a
    /// leaf search asked for by another node reads only those (`SplitGone` for any other).
    pub fn named_splits(&self, ids: &[String]) -> Result<Vec<SplitRow>, IndexError> {
        let rows = self.store.searchable_splits(ids)?;
        let known: HashSet<&str> = rows.iter().map(|row| row.id.as_str()).collect();
        if let Some(missing) = ids.iter().find(|id| !known.contains(id.as_str())) {
            return Err(IndexError::SplitGone(missing.clone()));
        }
        Ok(rows)
    }

    /// A leaf search: the best `top` hits of `query` over `mailboxes` in `splits` (any
    /// partitions), with the exact total and counts, each partition's splits searched as
    /// one view with the tombstones of the catalog now applied.
    pub fn leaf(
        &self,
        plan: &Plan,
        query: &kql::Query,
        mailboxes: &[MailboxId],
        sort: Sort,
        top: usize,
    ) -> Result<Results, IndexError> {
        let views = self.partition_views(plan)?;
        let mut parts = Vec::with_capacity(views.len());
        for view in views {
            // Never more room for hits than the view has documents.
            let top = top.min(view.searcher.num_docs() as usize);
            let results = execute_ranked(
                &view.searcher,
                &self.fields,
                query,
                mailboxes,
                sort,
                0,
                top,
                |address| {
                    let (split, first) = &view.ties[address.segment_ord as usize];
                    (split.clone(), first + u64::from(address.doc_id))
                },
            )
            .map_err(IndexError::Query)?;
            parts.push(results);
        }
        metrics::counter!("holdfast_split_leaf_searches_total").increment(1);
        Ok(merge(parts, sort, 0, top))
    }

    /// A leaf's share of walking every match (exports, purges, case holds): the `limit`
    /// smallest ids of `query` over `mailboxes` in the plan's splits greater than `after`
    /// (and among `among`, when given), in order, and (with `count`) how many match after
    /// `after`.
    #[allow(clippy::too_many_arguments)]
    pub fn leaf_ids(
        &self,
        plan: &Plan,
        query: &kql::Query,
        mailboxes: &[MailboxId],
        among: Option<&[InteractionId]>,
        after: Option<InteractionId>,
        limit: usize,
        count: bool,
    ) -> Result<IdPage, IndexError> {
        let mut page = IdPage::default();
        if among.is_some_and(|among| among.is_empty()) {
            return Ok(page);
        }
        for view in self.partition_views(plan)? {
            let pages =
                IdPages::among(view.searcher.clone(), &self.fields, query, mailboxes, among)
                    .map_err(IndexError::Query)?;
            if limit > 0 {
                page.ids
                    .extend(pages.page(after, limit).map_err(IndexError::Query)?);
            }
            if count {
                page.count += pages.count(after).map_err(IndexError::Query)?;
            }
            if let Some(among) = among {
                let everything = kql::Query::And(Vec::new());
                let present = IdPages::among(
                    view.searcher.clone(),
                    &self.fields,
                    &everything,
                    mailboxes,
                    Some(among),
                )
                .map_err(IndexError::Query)?;
                page.present
                    .extend(present.page(None, among.len()).map_err(IndexError::Query)?);
            }
        }
        // Partitions hold different items: the smallest overall are among each one's.
        page.ids.sort();
        page.ids.dedup();
        page.ids.truncate(limit);
        page.present.sort();
        page.present.dedup();
        metrics::counter!("holdfast_split_leaf_id_pages_total").increment(1);
        Ok(page)
    }

    /// One view per partition of the plan: its splits (by id) with its tombstones.
    fn partition_views(&self, plan: &Plan) -> Result<Vec<Arc<LeafView>>, IndexError> {
        let mut by_partition: std::collections::BTreeMap<i16, Vec<&SplitRow>> = Default::default();
        for split in &plan.splits {
            by_partition.entry(split.partition).or_default().push(split);
        }
        let mut views = Vec::with_capacity(by_partition.len());
        for (partition, mut rows) in by_partition {
            rows.sort_by(|a, b| a.id.cmp(&b.id));
            rows.dedup_by(|a, b| a.id == b.id);
            let mut dead: Vec<(InteractionId, u64)> = plan
                .dead
                .iter()
                .filter(|(p, _, _)| *p == partition)
                .map(|(_, id, sequence)| (*id, *sequence))
                .collect();
            dead.sort();
            dead.dedup();
            views.push(self.leaf_view(&rows, &dead)?);
        }
        Ok(views)
    }

    /// The view of `rows` (one partition's, sorted by id) with the tombstones `dead` (of
    /// that partition, sorted).
    fn leaf_view(
        &self,
        rows: &[&SplitRow],
        dead: &[(InteractionId, u64)],
    ) -> Result<Arc<LeafView>, IndexError> {
        let digest = {
            use sha2::Digest as _;
            let mut hasher = sha2::Sha256::new();
            for (id, sequence) in dead {
                hasher.update(id.0.to_bytes());
                hasher.update(sequence.to_be_bytes());
            }
            hasher.finalize().into()
        };
        let key: LeafKey = (rows.iter().map(|split| split.id.clone()).collect(), digest);
        if let Some(view) = self
            .leaf_views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Arc::clone(view));
        }
        let mut parts = Vec::with_capacity(rows.len());
        for split in rows {
            let cached = self.cached(split)?;
            let dead: Vec<InteractionId> = dead
                .iter()
                .filter(|(_, sequence)| *sequence > split.max_seq)
                .map(|(id, _)| *id)
                .collect();
            parts.push((cached, dead));
        }
        let searcher = self.open_composed(&parts)?;
        // Each segment's split, and where its documents start in that split's order.
        let mut of_segment: HashMap<SegmentId, (String, u64)> = HashMap::new();
        for (split, (cached, _)) in rows.iter().zip(&parts) {
            for (number, meta) in cached.metas.iter().enumerate() {
                of_segment.insert(meta.id(), (split.id.clone(), (number as u64) << 32));
            }
        }
        let ties = searcher
            .segment_readers()
            .iter()
            .map(|reader| {
                of_segment
                    .get(&reader.segment_id())
                    .cloned()
                    .ok_or_else(|| {
                        IndexError::Splits("a leaf view holds a segment of no split".into())
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let view = Arc::new(LeafView {
            searcher,
            ties,
            opened: Instant::now(),
        });
        let mut views = self.leaf_views.lock().unwrap_or_else(|e| e.into_inner());
        if views.len() >= LEAF_VIEWS {
            if let Some(oldest) = views
                .iter()
                .min_by_key(|(_, view)| view.opened)
                .map(|(key, _)| key.clone())
            {
                views.remove(&oldest);
            }
        }
        views.insert(key, Arc::clone(&view));
        Ok(view)
    }

    /// The split, from the local cache or downloaded into it, for a search or a merge.
    fn cached(&self, split: &SplitRow) -> Result<Arc<Cached>, IndexError> {
        let cached = self.fetch(split)?;
        *cached.used.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(cached)
    }

    fn is_cached(&self, id: &str) -> bool {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    /// The split, from the local cache or downloaded into it.
    fn fetch(&self, split: &SplitRow) -> Result<Arc<Cached>, IndexError> {
        if let Some(cached) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&split.id)
        {
            return Ok(Arc::clone(cached));
        }
        // Ids name directories: only what an indexer writes (a ULID) is taken.
        if ulid::Ulid::from_string(&split.id).is_err() || split.id.len() != 26 {
            return Err(IndexError::Splits(format!(
                "the catalog names a split with an invalid id {:?}",
                split.id
            )));
        }
        let bytes = self
            .store
            .get_split_object(split)?
            .ok_or_else(|| IndexError::SplitGone(split.id.clone()))?;
        let staging = self.work_dir();
        if let Err(error) = unpack(&bytes, &staging) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
        let cached = self.install(&split.id, staging)?;
        metrics::counter!("holdfast_split_downloads_total").increment(1);
        Ok(cached)
    }

    /// Moves a split's files (in `staging`, a work directory) into the cache as split `id`,
    /// unless another thread put it there first.
    fn install(&self, id: &str, staging: PathBuf) -> Result<Arc<Cached>, IndexError> {
        let dir = self.dir.join("cache").join(id);
        // Under the cache's lock, so that `trim_cache` never sees the directory without its
        // entry.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = cache.get(id) {
            let _ = std::fs::remove_dir_all(&staging);
            return Ok(Arc::clone(cached));
        }
        let installed = (|| {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io_error(&dir))?;
            }
            std::fs::rename(&staging, &dir).map_err(io_error(&dir))?;
            Cached::open(dir.clone())
        })();
        match installed {
            Ok(cached) => {
                let cached = Arc::new(cached);
                cache.insert(id.to_string(), Arc::clone(&cached));
                Ok(cached)
            }
            Err(error) => {
                let _ = std::fs::remove_dir_all(&staging);
                let _ = std::fs::remove_dir_all(&dir);
                Err(error)
            }
        }
    }

    /// Puts a split this node has just built and written (`files` in `dir`) into the local
    /// cache by linking its files, so that searching it downloads nothing. Best effort: a
    /// split not adopted is downloaded when first needed.
    fn adopt(&self, id: &str, dir: &Path, files: &[String]) {
        let staging = self.work_dir();
        let adopted = (|| {
            std::fs::create_dir_all(&staging).map_err(io_error(&staging))?;
            for name in files {
                let (from, to) = (dir.join(name), staging.join(name));
                if std::fs::hard_link(&from, &to).is_err() {
                    std::fs::copy(&from, &to).map_err(io_error(&from))?;
                }
            }
            self.install(id, staging.clone())
        })();
        match adopted {
            Ok(_) => metrics::counter!("holdfast_split_adopted_total").increment(1),
            Err(error) => {
                let _ = std::fs::remove_dir_all(&staging);
                tracing::warn!(%error, "search splits: a split built here was not cached");
            }
        }
    }

    /// Downloads `splits` into the local cache (those of the partitions this node indexes,
    /// and so is asked to search, that it lacks) until `budget` has passed: the first
    /// search after a restart, a move of partitions or another node's merge then waits for
    /// no download. Answers the ids that failed (a damaged object, a newer schema).
    fn prefetch(&self, splits: &[SplitRow], budget: Duration) -> Vec<String> {
        let started = Instant::now();
        let mut failed = Vec::new();
        for split in splits {
            if started.elapsed() >= budget {
                break;
            }
            match self.fetch(split) {
                Ok(_) => metrics::counter!("holdfast_split_prefetches_total").increment(1),
                // Merged away since the catalog was read: nothing to fetch.
                Err(IndexError::SplitGone(_)) => {}
                Err(error) => {
                    tracing::warn!(%error, split = %split.id, "search splits: a prefetch failed");
                    metrics::counter!("holdfast_split_prefetch_failures_total").increment(1);
                    failed.push(split.id.clone());
                }
            }
        }
        failed
    }

    /// Opens a view of `catalog`: its published splits with their delete sets.
    fn open_view(&self, catalog: &SplitCatalog) -> Result<Searcher, IndexError> {
        let mut dead_by_partition: HashMap<i16, Vec<(InteractionId, u64)>> = HashMap::new();
        for (partition, id, sequence) in &catalog.tombstones {
            dead_by_partition
                .entry(*partition)
                .or_default()
                .push((*id, *sequence));
        }
        let mut parts = Vec::new();
        for split in &catalog.splits {
            let cached = self.cached(split)?;
            let dead: Vec<InteractionId> = dead_by_partition
                .get(&split.partition)
                .into_iter()
                .flatten()
                .filter(|(_, sequence)| *sequence > split.max_seq)
                .map(|(id, _)| *id)
                .collect();
            parts.push((cached, dead));
        }
        self.open_composed(&parts)
    }

    /// Composes a view of `parts` (splits with their dead items) in a new work directory
    /// and opens it.
    fn open_composed(
        &self,
        parts: &[(Arc<Cached>, Vec<InteractionId>)],
    ) -> Result<Searcher, IndexError> {
        let borrowed: Vec<(&Cached, Vec<InteractionId>)> = parts
            .iter()
            .map(|(cached, dead)| (cached.as_ref(), dead.clone()))
            .collect();
        let dir = self.work_dir();
        let opened = compose(&dir, &self.fields, &borrowed).and_then(|index| {
            Ok(index
                .reader_builder()
                .reload_policy(ReloadPolicy::Manual)
                .try_into()?
                .searcher())
        });
        // The searcher holds every file open: the view's names are no longer needed (and
        // what a merge erased is gone from disk once the last searcher goes).
        let _ = std::fs::remove_dir_all(&dir);
        opened
    }

    /// Drops from the local cache every split no longer `published`, and those not in `keep`
    /// (another node's partitions, read here when that node did not answer) once unused for
    /// `FOREIGN_IDLE`, at once if no search or merge ever used them; searchers still reading
    /// one keep its files open until they go. Drops the view if it is older than
    /// `generation` (it may hold merged-away files open), and leaf views of splits no longer
    /// published.
    fn trim_cache(&self, published: &HashSet<String>, keep: &HashSet<String>, generation: u64) {
        {
            let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
            if view.as_ref().is_some_and(|v| v.generation != generation) {
                *view = None;
            }
        }
        // Leaf views of splits merged away go too: a page pinned on them composes them again
        // from the bucket while they are there.
        self.leaf_views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(ids, _), _| ids.iter().all(|id| published.contains(id)));
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = cache
            .iter()
            .filter(|(id, cached)| {
                !published.contains(*id)
                    || (!keep.contains(*id)
                        && cached
                            .used
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .is_none_or(|at| at.elapsed() >= FOREIGN_IDLE))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            cache.remove(&id);
            let _ = std::fs::remove_dir_all(self.dir.join("cache").join(&id));
        }
    }

    /// Builds, writes and stages a split of `items` for `partition`; answers its row (to
    /// publish). With `keep`, the split also goes into the local cache.
    fn write_split(
        &self,
        partition: i16,
        max_seq: u64,
        items: &[StoredInteraction],
        keep: bool,
    ) -> Result<SplitRow, IndexError> {
        let dir = self.work_dir();
        let result = (|| {
            let index = build(&dir, &self.fields, items)?;
            let metas = index.searchable_segment_metas()?;
            self.stage_and_write(
                partition,
                max_seq,
                &dir,
                &metas,
                items
                    .iter()
                    .map(|i| i.content.created_at.timestamp_micros()),
                keep,
            )
        })();
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    fn stage_and_write(
        &self,
        partition: i16,
        max_seq: u64,
        dir: &Path,
        metas: &[SegmentMeta],
        created: impl Iterator<Item = i64>,
        keep: bool,
    ) -> Result<SplitRow, IndexError> {
        let mut files = segment_files(dir, metas);
        files.push("meta.json".into());
        let bytes = pack(dir, &files)?;
        let (min_created_us, max_created_us) = created.fold((None, None), |(lo, hi), at| {
            (
                Some(lo.map_or(at, |lo: i64| lo.min(at))),
                Some(hi.map_or(at, |hi: i64| hi.max(at))),
            )
        });
        let id = ulid::Ulid::new().to_string().to_lowercase();
        let size = bytes.len() as u64;
        self.store.stage_split(&id, partition, max_seq)?;
        let version_id = self.store.put_split_object(&id, bytes)?;
        // A node searches the partitions it indexes: their splits are cached from here (not
        // the bootstrap's, built for every partition). If the publish fails, the next
        // housekeeping drops it from the cache.
        if keep {
            self.adopt(&id, dir, &files);
        }
        Ok(SplitRow {
            id,
            partition,
            max_seq,
            min_created_us,
            max_created_us,
            num_docs: metas.iter().map(|m| u64::from(m.num_docs())).sum(),
            bytes: size,
            version_id,
        })
    }

    /// Indexes the feed entries of `partition` after `from` (up to `head`) into one split
    /// and publishes it. Answers whether it published anything.
    fn index_partition(
        &self,
        lease: &SplitLease,
        partition: i16,
        from: u64,
        head: u64,
        idle_advance: bool,
    ) -> Result<bool, IndexError> {
        if head <= from {
            return Ok(false);
        }
        let entries = self
            .store
            .partition_feed(partition, from, head, FEED_CHUNK)?;
        let to = if entries.len() == FEED_CHUNK {
            entries.last().map_or(head, |(sequence, _, _)| *sequence)
        } else {
            head
        };
        if entries.is_empty() && !idle_advance {
            return Ok(false);
        }
        let mut ids = Vec::new();
        let mut seen = HashSet::new();
        let mut superseded = HashSet::new();
        for (_, id, fresh) in &entries {
            if seen.insert(*id) {
                ids.push(*id);
            }
            if !fresh {
                superseded.insert(*id);
            }
        }
        let mut items = Vec::with_capacity(ids.len());
        let mut destroyed = HashSet::new();
        for chunk in ids.chunks(LOAD_CHUNK) {
            for (id, item) in chunk.iter().zip(self.store.get_interactions(chunk)?) {
                match item {
                    Some(item) => items.push(item),
                    None => {
                        destroyed.insert(*id);
                    }
                }
            }
        }
        let split = if items.is_empty() {
            None
        } else {
            Some(self.write_split(partition, to, &items, true)?)
        };
        let tombstones = ids
            .iter()
            .filter(|id| superseded.contains(id) || destroyed.contains(id))
            .map(|id| (*id, destroyed.contains(id)))
            .collect();
        self.store.publish_splits(&SplitPublish {
            lease: lease.clone(),
            partition,
            checkpoint_from: from,
            checkpoint_to: to,
            split,
            tombstones,
            retire: Vec::new(),
        })?;
        if !entries.is_empty() {
            metrics::counter!("holdfast_split_entries_indexed_total")
                .increment(entries.len() as u64);
        }
        Ok(true)
    }

    /// Merges every published split of `partition` into one without its dead documents,
    /// and publishes it in their place.
    fn merge_partition(
        &self,
        lease: &SplitLease,
        partition: i16,
        checkpoint: u64,
        catalog: &SplitCatalog,
    ) -> Result<(), IndexError> {
        let inputs: Vec<&SplitRow> = catalog
            .splits
            .iter()
            .filter(|split| split.partition == partition)
            .collect();
        let mut parts = Vec::new();
        for split in &inputs {
            let dead: Vec<InteractionId> = catalog
                .tombstones
                .iter()
                .filter(|(p, _, sequence)| *p == partition && *sequence > split.max_seq)
                .map(|(_, id, _)| *id)
                .collect();
            parts.push((self.cached(split)?, dead));
        }
        let borrowed: Vec<(&Cached, Vec<InteractionId>)> = parts
            .iter()
            .map(|(cached, dead)| (cached.as_ref(), dead.clone()))
            .collect();
        let dir = self.work_dir();
        let result = (|| {
            let index = compose(&dir, &self.fields, &borrowed)?;
            let segments = index.searchable_segment_ids()?;
            let mut writer: IndexWriter = index.writer_with_num_threads(1, WRITER_MEMORY)?;
            let merged = if segments.is_empty() {
                None
            } else {
                writer.merge(&segments).wait()?
            };
            writer.wait_merging_threads()?;
            let split = match merged.filter(|meta| meta.num_docs() > 0) {
                None => None,
                Some(meta) => {
                    // Only the merged segment: whatever the writer left in the view's
                    // meta.json.
                    let path = dir.join("meta.json");
                    std::fs::write(&path, meta_json(vec![meta.clone()])?)
                        .map_err(io_error(&path))?;
                    let created = inputs
                        .iter()
                        .flat_map(|s| s.min_created_us.into_iter().chain(s.max_created_us));
                    Some(self.stage_and_write(
                        partition,
                        checkpoint,
                        &dir,
                        &[meta],
                        created,
                        true,
                    )?)
                }
            };
            self.store.publish_splits(&SplitPublish {
                lease: lease.clone(),
                partition,
                checkpoint_from: checkpoint,
                checkpoint_to: checkpoint,
                split,
                tombstones: Vec::new(),
                retire: inputs.iter().map(|s| s.id.clone()).collect(),
            })?;
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(&dir);
        metrics::counter!("holdfast_split_merges_total").increment(1);
        result
    }

    /// Indexes every stored item once (see the module), as the holder of `lease`.
    fn bootstrap(&self, lease: &SplitLease) -> Result<(), IndexError> {
        let at = self.store.begin_split_bootstrap(lease)?;
        tracing::info!(feed = at, "building the search splits of every stored item");
        let mut pending: HashMap<i16, Vec<StoredInteraction>> = HashMap::new();
        let mut written = Vec::new();
        let mut after = None;
        loop {
            let chunk = self.store.scan_interactions(after, LOAD_CHUNK)?;
            let Some(last) = chunk.last() else { break };
            after = Some(last.id);
            let ids: Vec<InteractionId> = chunk.iter().map(|item| item.id).collect();
            // Items with entries after the start are the partitions' indexers' to index.
            let later = self.store.in_feed_after(&ids, at)?;
            for item in chunk.into_iter().filter(|item| !later.contains(&item.id)) {
                let partition = crate::domain::search_partition(item.content.mailbox_id.as_str());
                let items = pending.entry(partition).or_default();
                items.push(item);
                if items.len() >= BOOTSTRAP_SPLIT {
                    let items = std::mem::take(items);
                    written.push(self.write_split(partition, at, &items, false)?);
                }
            }
            // Renewed as it goes: a long bootstrap keeps its lease, and its staged splits
            // are not taken for a crashed builder's.
            self.renew(lease)?;
            let staged: Vec<String> = written.iter().map(|s: &SplitRow| s.id.clone()).collect();
            self.store.touch_staged_splits(&staged)?;
        }
        for (partition, items) in pending {
            if !items.is_empty() {
                written.push(self.write_split(partition, at, &items, false)?);
                let staged: Vec<String> = written.iter().map(|s| s.id.clone()).collect();
                self.store.touch_staged_splits(&staged)?;
            }
        }
        self.store.finish_split_bootstrap(lease, &written)?;
        tracing::info!(
            splits = written.len(),
            "search splits of every stored item published"
        );
        Ok(())
    }

    /// Runs `work` while a thread renews `leases` every `HEARTBEAT`, so that work longer
    /// than a lease is not fenced for its length alone. (A lease lost meanwhile still fences
    /// the work's publish.)
    fn with_heartbeat<T>(
        &self,
        leases: &[&SplitLease],
        work: impl FnOnce() -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        // The sender is dropped when `work` ends, even by a panic: the heartbeat wakes at
        // once and the scope (which waits for it) ends.
        let (done, ended) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    ended.recv_timeout(HEARTBEAT)
                {
                    for lease in leases {
                        if let Err(error) = self.renew(lease) {
                            tracing::info!(lease = %lease.name, %error, "search splits: a lease was not renewed");
                        }
                    }
                }
            });
            let _done = done;
            work()
        })
    }

    fn renew(&self, lease: &SplitLease) -> Result<(), IndexError> {
        match self
            .store
            .acquire_lease(&lease.name, &lease.holder, LEASE_TTL)?
        {
            Some(held) if held.epoch == lease.epoch => Ok(()),
            _ => Err(IndexError::Store(StoreError::Fenced(format!(
                "this node no longer holds the lease {}",
                lease.name
            )))),
        }
    }
}

/// The background work of splits on one node: the bootstrap, the indexers and mergers of
/// the partitions whose leases it holds, garbage collection, and the progress figures that
/// ingest back-pressure and erasure read.
pub struct SplitWorker {
    search: Arc<SplitSearch>,
    progress: Arc<IndexProgress>,
    holder: String,
    /// Leases held, by partition, with when they were taken or renewed.
    held: HashMap<i16, (SplitLease, Instant)>,
    tried: HashMap<i16, Instant>,
    advanced: HashMap<i16, Instant>,
    housekept: Option<Instant>,
    /// This node's presence lease, and when it last renewed it.
    present: Option<(SplitLease, Instant)>,
    /// Splits whose prefetch failed, with when: tried again after `PREFETCH_RETRY`.
    prefetch_failed: HashMap<String, Instant>,
    /// Consecutive failures of each partition's work here.
    failures: HashMap<i16, u32>,
    /// Until when this node stands back (see `settle`).
    sick_until: Option<Instant>,
}

/// Consecutive failures of one partition's work (not a lost lease) after which a node stands
/// back from every partition for `STAND_BACK`: whatever fails here (a full disk, a broken
/// cache) must not keep its partitions, and with them the cluster's back-pressure, stuck.
const FAILURES_TO_STAND_BACK: u32 = 5;
const STAND_BACK: Duration = Duration::from_secs(300);

/// Runs `work`, a panic (a damaged split) becoming an error.
fn catch<T>(work: impl FnOnce() -> Result<T, IndexError>) -> Result<T, IndexError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
        .unwrap_or_else(|_| Err(IndexError::Panicked("search splits".into())))
}

/// The node that indexes `partition` among the `live` ones: the highest hash of (partition,
/// node). `None` when no node is live.
pub(crate) fn rendezvous_owner(partition: i16, live: &[String]) -> Option<&str> {
    live.iter()
        .max_by_key(|holder| crate::domain::mailbox_key(&format!("{partition}/{holder}")))
        .map(String::as_str)
}

impl SplitWorker {
    pub fn new(
        search: Arc<SplitSearch>,
        progress: Arc<IndexProgress>,
        holder: &str,
    ) -> SplitWorker {
        SplitWorker {
            search,
            progress,
            holder: holder.to_string(),
            held: HashMap::new(),
            tried: HashMap::new(),
            advanced: HashMap::new(),
            housekept: None,
            present: None,
            prefetch_failed: HashMap::new(),
            failures: HashMap::new(),
            sick_until: None,
        }
    }

    /// Runs steps until `shutdown`, then gives its leases up.
    pub fn run(mut self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            // A panic (a damaged split) fails the step, never the worker.
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step()));
            let failed = match step {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some("a step panicked".to_string()),
            };
            if let Some(error) = failed {
                tracing::warn!(%error, "search splits: a step failed; retrying");
                metrics::counter!("holdfast_split_step_failures_total").increment(1);
                std::thread::sleep(Duration::from_secs(1));
            }
            std::thread::sleep(STEP_PAUSE);
        }
        let store = &self.search.store;
        for (lease, _) in self.held.values() {
            let _ = store.release_lease(&lease.name, &self.holder);
        }
        let _ = store.release_lease(&format!("split-node/{}", self.holder), &self.holder);
    }

    fn lease(&mut self, name: &str) -> Result<Option<SplitLease>, IndexError> {
        Ok(self
            .search
            .store
            .acquire_lease(name, &self.holder, LEASE_TTL)?
            .map(|lease| SplitLease {
                name: name.to_string(),
                holder: self.holder.clone(),
                epoch: lease.epoch,
            }))
    }

    /// The partitions whose leases this node holds now. Partitions are placed on the live
    /// nodes (those renewing a `split-node/<holder>` lease) by rendezvous hashing: a node
    /// takes the partitions it ranks first for and gives up the others, so that a node
    /// joining or leaving moves only its own share.
    fn partitions(&mut self) -> Result<Vec<(i16, SplitLease)>, IndexError> {
        let now = Instant::now();
        if self.sick_until.is_some_and(|until| now < until) {
            // Standing back: not live, so the others take every partition.
            let store = &self.search.store;
            store.release_lease(&format!("split-node/{}", self.holder), &self.holder)?;
            self.present = None;
            for (lease, _) in std::mem::take(&mut self.held).into_values() {
                store.release_lease(&lease.name, &self.holder)?;
            }
            return Ok(Vec::new());
        }
        if self
            .present
            .as_ref()
            .is_none_or(|(_, at)| now.duration_since(*at) >= LEASE_TTL / 2)
        {
            let name = format!("split-node/{}", self.holder);
            if let Some(lease) = self.lease(&name)? {
                self.present = Some((lease, now));
            }
        }
        let live = self.search.store.live_split_nodes()?;
        for partition in 0..SEARCH_PARTITIONS as i16 {
            let mine = rendezvous_owner(partition, &live).is_none_or(|owner| owner == self.holder);
            if !mine {
                if let Some((lease, _)) = self.held.remove(&partition) {
                    tracing::info!(
                        partition,
                        "search splits: a partition moves to another node"
                    );
                    self.search.store.release_lease(&lease.name, &self.holder)?;
                }
                continue;
            }
            let due = match self.held.get(&partition) {
                Some((_, at)) => now.duration_since(*at) >= LEASE_TTL / 2,
                None => self
                    .tried
                    .get(&partition)
                    .is_none_or(|at| now.duration_since(*at) >= LEASE_RETRY),
            };
            if !due {
                continue;
            }
            self.tried.insert(partition, now);
            let name = format!("split-index-{partition}");
            match self.lease(&name)? {
                Some(lease) => {
                    self.held.insert(partition, (lease, now));
                }
                None => {
                    self.held.remove(&partition);
                }
            }
        }
        let mut held: Vec<(i16, SplitLease)> = self
            .held
            .iter()
            .map(|(partition, (lease, _))| (*partition, lease.clone()))
            .collect();
        held.sort_by_key(|(partition, _)| *partition);
        Ok(held)
    }

    /// One step: see `SplitWorker`. A partition whose work fails does not hold the others
    /// back; the first failure is answered after the progress figures are updated.
    pub fn step(&mut self) -> Result<(), IndexError> {
        let mut failure = None;
        let work = self.work(&mut failure);
        let progress = self.update_progress();
        work.and(progress)?;
        failure.map_or(Ok(()), Err)
    }

    fn work(&mut self, failure: &mut Option<IndexError>) -> Result<(), IndexError> {
        let store = Arc::clone(&self.search.store);
        let head = store.split_head()?;
        if !head.bootstrapped {
            if let Some(lease) = self.lease("split-bootstrap")? {
                let search = Arc::clone(&self.search);
                let bootstrapped =
                    catch(|| search.with_heartbeat(&[&lease], || search.bootstrap(&lease)));
                if let Err(error) = bootstrapped {
                    // Another node may try while this one waits.
                    let _ = store.release_lease(&lease.name, &self.holder);
                    return Err(error);
                }
            }
        }
        let head = store.split_head()?;
        if head.bootstrap_at.is_none() {
            return Ok(());
        }
        let checkpoints = store.split_checkpoints()?;
        let feed_head = store.committed_feed_head()?;
        let now = Instant::now();
        for (partition, lease) in self.partitions()? {
            let Some(&from) = checkpoints.get(&partition) else {
                continue;
            };
            let idle = self
                .advanced
                .get(&partition)
                .is_none_or(|at| now.duration_since(*at) >= IDLE_ADVANCE);
            let search = Arc::clone(&self.search);
            let indexed = catch(|| {
                search.with_heartbeat(&[&lease], || {
                    search.index_partition(&lease, partition, from, feed_head, idle)
                })
            });
            if let Ok(true) = indexed {
                self.advanced.insert(partition, now);
            }
            self.settle(partition, indexed.map(|_| ()), failure);
        }
        // Merges: many splits, or destroyed text to erase. None while the bootstrap runs:
        // its splits, published later, need the tombstones a merge would clear.
        let held: Vec<(i16, SplitLease)> = self
            .held
            .iter()
            .map(|(partition, (lease, _))| (*partition, lease.clone()))
            .collect();
        if !held.is_empty() && head.bootstrapped {
            let to_erase: HashSet<i16> = store.partitions_to_erase()?.into_iter().collect();
            let catalog = store.split_catalog()?;
            let checkpoints = store.split_checkpoints()?;
            for (partition, lease) in held {
                let count = catalog
                    .splits
                    .iter()
                    .filter(|split| split.partition == partition)
                    .count();
                if count < MERGE_AT && !to_erase.contains(&partition) {
                    continue;
                }
                let Some(&checkpoint) = checkpoints.get(&partition) else {
                    continue;
                };
                let search = Arc::clone(&self.search);
                let merged = catch(|| {
                    search.with_heartbeat(&[&lease], || {
                        search.merge_partition(&lease, partition, checkpoint, &catalog)
                    })
                });
                self.settle(partition, merged, failure);
            }
        }
        if self
            .housekept
            .is_none_or(|at| now.duration_since(at) >= HOUSEKEEPING)
        {
            self.housekept = Some(now);
            let catalog = store.split_catalog()?;
            let published = catalog.splits.iter().map(|s| s.id.clone()).collect();
            // The splits of the partitions this node indexes, and so searches.
            let keep = catalog
                .splits
                .iter()
                .filter(|s| self.held.contains_key(&s.partition))
                .map(|s| s.id.clone())
                .collect();
            self.search
                .trim_cache(&published, &keep, catalog.head.generation);
            if let Some(lease) = self.lease("split-janitor")? {
                let collected = store
                    .trim_split_feed()
                    .and_then(|()| store.collect_split_garbage(SPLIT_GRACE));
                if let Err(error) = collected {
                    let _ = store.release_lease(&lease.name, &self.holder);
                    return Err(error.into());
                }
            }
        }
        if head.bootstrapped && !self.held.is_empty() {
            self.prefetch_held(head.generation);
        }
        Ok(())
    }

    /// Fetches ahead the splits of the partitions this node holds that its cache lacks
    /// (see `SplitSearch::prefetch`), renewing its leases meanwhile. Never fails the step:
    /// a split that cannot be fetched is left for `PREFETCH_RETRY` (a search that needs it
    /// downloads it, or answers why not).
    fn prefetch_held(&mut self, generation: u64) {
        let catalog = match self.search.catalog_at(generation) {
            Ok(catalog) => catalog,
            Err(error) => {
                tracing::warn!(%error, "search splits: no catalog to prefetch from");
                return;
            }
        };
        let now = Instant::now();
        self.prefetch_failed
            .retain(|_, at| now.duration_since(*at) < PREFETCH_RETRY);
        let missing: Vec<SplitRow> = catalog
            .splits
            .iter()
            .filter(|s| self.held.contains_key(&s.partition))
            .filter(|s| !self.prefetch_failed.contains_key(&s.id) && !self.search.is_cached(&s.id))
            .cloned()
            .collect();
        if missing.is_empty() {
            return;
        }
        let leases: Vec<SplitLease> = self
            .held
            .values()
            .chain(&self.present)
            .map(|(lease, _)| lease.clone())
            .collect();
        let leases: Vec<&SplitLease> = leases.iter().collect();
        let search = Arc::clone(&self.search);
        let failed = catch(|| {
            search.with_heartbeat(&leases, || Ok(search.prefetch(&missing, PREFETCH_BUDGET)))
        })
        // A panic (a damaged split): none of these is tried again for a while.
        .unwrap_or_else(|_| missing.iter().map(|s| s.id.clone()).collect());
        for id in failed {
            self.prefetch_failed.insert(id, now);
        }
    }

    /// What a partition's work came to: a lost lease gives the partition up; another
    /// failure is kept (the first) for the step's answer.
    fn settle(
        &mut self,
        partition: i16,
        result: Result<(), IndexError>,
        failure: &mut Option<IndexError>,
    ) {
        match result {
            Ok(()) => {
                self.failures.remove(&partition);
            }
            Err(IndexError::Store(StoreError::Fenced(reason))) => {
                tracing::info!(partition, %reason, "search splits: gave a partition up");
                self.held.remove(&partition);
            }
            Err(error) => {
                tracing::warn!(partition, %error, "search splits: a partition's work failed");
                failure.get_or_insert(error);
                let failures = self.failures.entry(partition).or_insert(0);
                *failures += 1;
                if *failures >= FAILURES_TO_STAND_BACK {
                    tracing::error!(
                        partition,
                        "search splits: this node's work keeps failing; it stands back from \
                         every partition for 5 minutes"
                    );
                    self.failures.clear();
                    self.sick_until = Some(Instant::now() + STAND_BACK);
                }
            }
        }
    }

    /// The figures ingest back-pressure, searches and erasure read.
    fn update_progress(&self) -> Result<(), IndexError> {
        let store = &self.search.store;
        let head = store.split_head()?;
        let feed_head = store.committed_feed_head()?;
        if head.bootstrap_at.is_some() {
            let committed = store.splits_indexed_through(feed_head)?;
            self.progress.committed.store(committed, Ordering::Release);
            self.progress
                .erased_through
                .store(store.splits_erased_through(feed_head)?, Ordering::Release);
        }
        let partial = !head.bootstrapped && !store.holds_no_item()?;
        self.progress.rebuilding.store(partial, Ordering::Release);
        Ok(())
    }
}

/// Opens cluster search in splits under `dir` (a cache) and starts this node's worker as
/// `holder` (unique in the cluster): the `SearchIndex` every search reads.
pub fn start(
    dir: &Path,
    store: Arc<ClusterStore>,
    settings: super::index::IndexSettings,
    holder: &str,
    shutdown: CancellationToken,
) -> Result<Started, IndexError> {
    let search = SplitSearch::open(store.clone(), dir)?;
    store.forget_feed_reader()?;
    let (schema, fields) = schema::schema();
    let empty = Index::create_in_ram(schema);
    let reader = empty.reader()?;
    let progress = Arc::new(IndexProgress::default());
    // Searches answer UNAVAILABLE until the bootstrap is published, unless there is nothing
    // it could leave out.
    let head = store.split_head()?;
    let partial = !head.bootstrapped && !store.holds_no_item()?;
    progress.rebuilding.store(partial, Ordering::Release);
    if head.bootstrap_at.is_some() {
        let committed = store.splits_indexed_through(store.committed_feed_head()?)?;
        progress.committed.store(committed, Ordering::Release);
    }
    let index = Arc::new(super::index::SearchIndex {
        index: empty,
        reader,
        fields,
        progress: Arc::clone(&progress),
        settings,
        splits: Some(Arc::clone(&search) as Arc<dyn SearcherSource>),
    });
    let worker = SplitWorker::new(Arc::clone(&search), progress, holder);
    let handle = std::thread::Builder::new()
        .name("holdfast-splits".into())
        .spawn(move || worker.run(shutdown))
        .map_err(|source| IndexError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    Ok((index, super::index::IndexerThread::new(handle), search))
}

/// What `start` opened: the index searches read, the worker, and this node's split search
/// (for leaf searches).
pub type Started = (
    Arc<super::index::SearchIndex>,
    super::index::IndexerThread,
    Arc<SplitSearch>,
);

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use holdfast_retention::MoveReason;

    use super::*;
    use crate::domain::MailboxId;
    use crate::search::kql;
    use crate::search::searcher::{execute, Sort};
    use crate::store::cluster::tests::Cluster;
    use crate::store::conformance::{content, new_item, Fixture};
    use crate::store::{ItemStates, NewInteraction, SweepWrite};

    fn item(mailbox: &str, key: &str, prompt: &str) -> NewInteraction {
        let mut content = content(key, 1, "t");
        content.mailbox_id = MailboxId::parse(mailbox).unwrap();
        content.prompt = prompt.into();
        new_item(content)
    }

    fn mailboxes() -> Vec<MailboxId> {
        ["alice@contoso.com", "bob@contoso.com", "carol@contoso.com"]
            .iter()
            .map(|m| MailboxId::parse(m).unwrap())
            .collect()
    }

    fn count(search: &SplitSearch, query: &str) -> u64 {
        let searcher = search.searcher().unwrap();
        let query = kql::parse(query).unwrap();
        IdPages::new(searcher, &search.fields, &query, &mailboxes())
            .unwrap()
            .count(None)
            .unwrap()
    }

    /// Destroys a held item as the sweeper would.
    fn destroy(store: &ClusterStore, id: InteractionId) {
        let now = Utc::now();
        let planned = store.planned_items(&[id]).unwrap();
        let write = SweepWrite {
            destroys: crate::store::cluster::tests::user_deleted_destroys(&planned, now),
            ..SweepWrite::default()
        };
        assert_eq!(store.apply_sweep(&write, now).unwrap().destroyed, 1);
    }

    /// Plans pinned by a search's first page, in PostgreSQL for every node.
    #[test]
    fn pinned_plans_are_shared_kept_per_owner_and_expire() {
        if !Cluster::available() {
            return;
        }
        let fixture = Cluster::new();
        let store = fixture.open();
        let hour = 3600.0;
        for id in 1..=3u64 {
            store
                .pin_search_plan(id, "alice", &[id as u8; 3], hour, 2)
                .unwrap();
        }
        // Ids past i64::MAX are kept too (the column is signed).
        store
            .pin_search_plan(u64::MAX - 1, "bob", b"b", hour, 2)
            .unwrap();
        assert_eq!(
            store.search_plan(u64::MAX - 1, hour).unwrap().as_deref(),
            Some(&b"b"[..])
        );
        // Alice keeps her newest two; an unknown id is none.
        assert_eq!(store.search_plan(1, hour).unwrap(), None);
        assert_eq!(store.search_plan(3, hour).unwrap(), Some(vec![3; 3]));
        assert_eq!(store.search_plan(2, hour).unwrap(), Some(vec![2; 3]));
        assert_eq!(store.search_plan(99, hour).unwrap(), None);
        // Older than the age asked for: gone for readers, and deleted by the next pin.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(store.search_plan(3, 0.01).unwrap(), None);
        store.pin_search_plan(4, "carol", b"c", 0.01, 2).unwrap();
        assert_eq!(store.search_plan(3, hour).unwrap(), None);
        assert_eq!(store.search_plan(4, hour).unwrap(), Some(b"c".to_vec()));
    }

    /// Leaf searches over any grouping of a plan's splits merge into the same pages as one
    /// leaf search over all of them: the same totals and counts, every hit once, in one
    /// order (ties of equal scores and times broken the same way whoever searched).
    #[test]
    fn leaf_searches_over_any_grouping_merge_into_the_same_pages() {
        if !Cluster::available() {
            return;
        }
        let fixture = Cluster::new();
        let store = fixture.open();
        let dirs = tempfile::tempdir().unwrap();
        let search = SplitSearch::open(Arc::clone(&store), &dirs.path().join("a")).unwrap();
        let progress = Arc::new(IndexProgress::default());
        let mut worker = SplitWorker::new(Arc::clone(&search), Arc::clone(&progress), "a/1");
        worker.step().unwrap();
        // Several splits per partition, equal texts (equal scores), some equal times.
        let people = ["alice", "bob", "carol", "dave", "erin", "frank"];
        for round in 0..3 {
            let mut written = Vec::new();
            for (n, person) in people.iter().enumerate() {
                for k in 0..3 {
                    let mut one = content(&format!("{person}-{round}-{k}"), 1, "t");
                    one.mailbox_id = MailboxId::parse(&format!("{person}@contoso.com")).unwrap();
                    one.prompt = "budget review".into();
                    one.created_at = chrono::DateTime::from_timestamp(
                        1_700_000_000 + (round * 10 + n as i64 % 2) * 60,
                        0,
                    )
                    .unwrap();
                    written.push(new_item(one));
                }
            }
            store.write_interactions(&written).unwrap();
            worker.step().unwrap();
        }
        let everyone: Vec<MailboxId> = people
            .iter()
            .map(|p| MailboxId::parse(&format!("{p}@contoso.com")).unwrap())
            .collect();
        let query = kql::parse("budget").unwrap();
        let plan = search.plan(&everyone, &query).unwrap();
        let partitions: HashSet<i16> = plan.splits.iter().map(|split| split.partition).collect();
        assert!(partitions.len() >= 2, "{partitions:?}");
        for sort in [Sort::Relevance, Sort::Newest, Sort::Oldest] {
            let whole = search.leaf(&plan, &query, &everyone, sort, 1_000).unwrap();
            let odd_partitions: HashSet<i16> =
                partitions.iter().copied().filter(|p| p % 2 == 1).collect();
            let even_partitions: HashSet<i16> =
                partitions.iter().copied().filter(|p| p % 2 == 0).collect();
            assert_eq!(whole.total, 54);
            let order: Vec<InteractionId> = whole.hits.iter().map(|hit| hit.id).collect();
            assert_eq!(order.iter().collect::<HashSet<_>>().len(), 54);
            // Two groups (as two nodes would search them), paged by 5.
            let (odd, even) = (
                plan.of_partitions(&odd_partitions),
                plan.of_partitions(&even_partitions),
            );
            let mut paged = Vec::new();
            for offset in (0..54).step_by(5) {
                let parts = [&odd, &even]
                    .iter()
                    .map(|group| {
                        search
                            .leaf(group, &query, &everyone, sort, offset + 5)
                            .unwrap()
                    })
                    .collect();
                let page = merge(parts, sort, offset, 5);
                assert_eq!(page.total, 54);
                assert_eq!(page.by_mailbox, whole.by_mailbox);
                paged.extend(page.hits.iter().map(|hit| hit.id));
            }
            assert_eq!(paged, order, "{sort:?}");
        }
        // Id pages (exports, purges): the groups' smallest ids after the last, merged, walk
        // every match once in id order, and their counts add up.
        let IdPage {
            ids: all,
            count: counted,
            ..
        } = search
            .leaf_ids(&plan, &query, &everyone, None, None, 1_000, true)
            .unwrap();
        assert_eq!((all.len(), counted), (54, 54));
        assert!(all.windows(2).all(|pair| pair[0] < pair[1]));
        let odd: HashSet<i16> = partitions.iter().copied().filter(|p| p % 2 == 1).collect();
        let even: HashSet<i16> = partitions.iter().copied().filter(|p| p % 2 == 0).collect();
        let groups = [plan.of_partitions(&odd), plan.of_partitions(&even)];
        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let mut page = Vec::new();
            let mut remaining = 0;
            for group in &groups {
                let IdPage { ids, count, .. } = search
                    .leaf_ids(group, &query, &everyone, None, after, 5, true)
                    .unwrap();
                assert!(ids.len() <= 5);
                page.extend(ids);
                remaining += count;
            }
            assert_eq!(remaining as usize, 54 - walked.len());
            page.sort();
            page.truncate(5);
            let Some(&last) = page.last() else { break };
            after = Some(last);
            walked.extend(page);
        }
        assert_eq!(walked, all);
        // The root's walk (`FanOut::ids`; this node is the only live one, so it reads every
        // share itself) pages the same ids, with the same count.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let fanout = crate::search::fanout::FanOut::new(
            Arc::clone(&search),
            "a/1",
            "key".into(),
            None,
            true,
            runtime.handle().clone(),
        );
        let text = crate::search::fanout::QueryText {
            text: "budget".into(),
            case_hold: None,
        };
        let timeout = Duration::from_secs(5);
        let mut rooted = Vec::new();
        let mut after = None;
        loop {
            let page = fanout
                .ids(
                    &plan, &text, &query, &everyone, None, after, 7, true, timeout,
                )
                .unwrap();
            assert_eq!(page.count as usize, 54 - rooted.len());
            let Some(&last) = page.ids.last() else { break };
            after = Some(last);
            rooted.extend(page.ids);
        }
        assert_eq!(rooted, all);
        // No ids asked for: the query is translated and nothing else.
        let nothing = search
            .leaf_ids(&plan, &query, &everyone, None, None, 0, false)
            .unwrap();
        assert_eq!(nothing, IdPage::default());
        // Among some ids: which are present, and which of those match.
        let stranger = InteractionId(ulid::Ulid::new());
        let some = [all[0], all[7], stranger];
        let erin = kql::parse("budget AND NOT review").unwrap();
        let page = search
            .leaf_ids(&plan, &erin, &everyone, Some(&some), None, 3, false)
            .unwrap();
        assert!(page.ids.is_empty(), "{page:?}");
        let mut present = vec![all[0], all[7]];
        present.sort();
        assert_eq!(page.present, present);
        let page = search
            .leaf_ids(&plan, &query, &everyone, Some(&some), None, 3, false)
            .unwrap();
        assert_eq!((page.ids.clone(), page.present), (present.clone(), present));
        // An empty `among` is no id, never every id.
        let page = search
            .leaf_ids(&plan, &query, &everyone, Some(&[]), None, 3, true)
            .unwrap();
        assert_eq!(page, IdPage::default());
        // A plan reads only the partitions of its custodians.
        let alice = [MailboxId::parse("alice@contoso.com").unwrap()];
        let only = search.plan(&alice, &query).unwrap();
        assert!(!only.splits.is_empty());
        assert!(only
            .splits
            .iter()
            .all(|split| split.partition == crate::domain::search_partition("alice@contoso.com")));
        let results = search
            .leaf(&only, &query, &alice, Sort::Newest, 100)
            .unwrap();
        assert_eq!(results.total, 9);
        // ... and only splits holding items created when the query can match.
        let first_round = kql::Query::And(vec![
            query.clone(),
            kql::Query::Created {
                from: Some(1_700_000_000_000_000),
                to: Some(1_700_000_120_000_000),
            },
        ]);
        let early = search.plan(&everyone, &first_round).unwrap();
        assert!(
            !early.splits.is_empty() && early.splits.len() < plan.splits.len(),
            "{early:?}"
        );
        let results = search
            .leaf(&early, &first_round, &everyone, Sort::Newest, 100)
            .unwrap();
        assert_eq!(results.total, 18);
        let unbounded = kql::Query::Or(vec![first_round, query.clone()]);
        assert_eq!(
            search.plan(&everyone, &unbounded).unwrap().splits.len(),
            plan.splits.len()
        );
    }

    #[test]
    fn splits_are_built_once_searched_from_any_node_and_merged_without_the_dead() {
        if !Cluster::available() {
            return;
        }
        let fixture = Cluster::new();
        let (store_a, store_b) = (fixture.open(), fixture.open());
        let dirs = tempfile::tempdir().unwrap();
        // Stored before splits are turned on: the bootstrap indexes them.
        let early = [
            item("alice@contoso.com", "e1", "budget alpha"),
            item("bob@contoso.com", "e2", "budget beta"),
        ];
        store_a.write_interactions(&early).unwrap();
        let search_a = SplitSearch::open(Arc::clone(&store_a), &dirs.path().join("a")).unwrap();
        let progress = Arc::new(IndexProgress::default());
        let mut worker = SplitWorker::new(Arc::clone(&search_a), Arc::clone(&progress), "a/1");
        worker.step().unwrap();
        assert!(store_a.split_head().unwrap().bootstrapped);
        assert!(!progress.rebuilding.load(Ordering::Acquire));
        // Stored after: the partitions' indexers index them (written through another node).
        let late = [
            item("alice@contoso.com", "l1", "budget gamma"),
            item("carol@contoso.com", "l2", "budget delta"),
            item("carol@contoso.com", "l3", "travel"),
        ];
        store_b.write_interactions(&late).unwrap();
        worker.step().unwrap();
        assert_eq!(
            progress.committed.load(Ordering::Acquire),
            store_a.committed_feed_head().unwrap()
        );
        // Another node searches the splits it never built.
        let search_b = SplitSearch::open(Arc::clone(&store_b), &dirs.path().join("b")).unwrap();
        assert_eq!(count(&search_b, "budget"), 4);
        assert_eq!(count(&search_b, "travel OR alpha"), 2);

        // A move: the item is found once, now in the holds area (its older document is dead).
        let moved = late[0].id;
        store_b
            .move_ids_to_holds_area(&[moved], MoveReason::UserDeleted, Utc::now())
            .unwrap();
        worker.step().unwrap();
        let searcher = search_b.searcher().unwrap();
        let query = kql::parse("budget").unwrap();
        let results = execute(
            &searcher,
            &search_b.fields,
            &query,
            &mailboxes(),
            Sort::Newest,
            0,
            10,
        )
        .unwrap();
        assert_eq!(results.total, 4);
        assert_eq!(results.by_location.get("holds"), Some(&1));
        assert_eq!(results.by_location.get("active"), Some(&3));
        drop(searcher);

        // A destruction: out of the search, then merged out of the splits' files.
        destroy(&store_b, moved);
        worker.step().unwrap();
        assert_eq!(count(&search_b, "budget"), 3);
        assert_eq!(count(&search_b, "gamma"), 0);
        let catalog = store_a.split_catalog().unwrap();
        assert!(
            catalog.tombstones.is_empty(),
            "the merge left no tombstone behind: {:?}",
            catalog.tombstones
        );
        for split in &catalog.splits {
            let cached = search_a.cached(split).unwrap();
            assert!(cached
                .docs_of(&search_a.fields, &[moved])
                .unwrap()
                .is_empty());
        }
        // Erasure is complete once the merged-away splits' objects are gone.
        let head = store_a.committed_feed_head().unwrap();
        assert!(store_a.splits_erased_through(head).unwrap() < head);
        assert!(store_a.collect_split_garbage(Duration::ZERO).unwrap() >= 1);
        assert_eq!(store_a.splits_erased_through(head).unwrap(), head);

        // Many small splits of one partition are merged into one.
        let partition = crate::domain::search_partition("alice@contoso.com");
        for round in 0..MERGE_AT {
            let written = [item("alice@contoso.com", &format!("m{round}"), "budget")];
            store_b.write_interactions(&written).unwrap();
            worker.step().unwrap();
        }
        let splits_of = |store: &ClusterStore| {
            store
                .split_catalog()
                .unwrap()
                .splits
                .iter()
                .filter(|s| s.partition == partition)
                .count()
        };
        assert!(splits_of(&store_a) < MERGE_AT, "{}", splits_of(&store_a));
        assert_eq!(count(&search_b, "budget"), 3 + MERGE_AT as u64);
    }

    #[test]
    fn a_publish_is_fenced_and_a_crashed_one_is_collected() {
        if !Cluster::available() {
            return;
        }
        let fixture = Cluster::new();
        let store = fixture.open();
        let dirs = tempfile::tempdir().unwrap();
        let search = SplitSearch::open(Arc::clone(&store), dirs.path()).unwrap();
        let progress = Arc::new(IndexProgress::default());
        SplitWorker::new(Arc::clone(&search), progress, "a/1")
            .step()
            .unwrap();
        store
            .write_interactions(&[item("alice@contoso.com", "k", "budget")])
            .unwrap();
        let partition = crate::domain::search_partition("alice@contoso.com");
        let from = store.split_checkpoints().unwrap()[&partition];
        let head = store.committed_feed_head().unwrap();
        let lease = |holder: &str, epoch| SplitLease {
            name: "split-test".into(),
            holder: holder.into(),
            epoch,
        };
        let held = store
            .acquire_lease("split-test", "t/1", LEASE_TTL)
            .unwrap()
            .unwrap();
        let publish = |lease: SplitLease, from: u64| SplitPublish {
            lease,
            partition,
            checkpoint_from: from,
            checkpoint_to: head,
            split: None,
            tombstones: Vec::new(),
            retire: Vec::new(),
        };
        // Another holder, an old epoch, a checkpoint that moved: nothing is written.
        for refused in [
            publish(lease("t/2", held.epoch), from),
            publish(lease("t/1", held.epoch + 1), from),
            publish(lease("t/1", held.epoch), from + 1),
        ] {
            assert!(matches!(
                store.publish_splits(&refused),
                Err(StoreError::Fenced(_))
            ));
            assert_eq!(store.split_checkpoints().unwrap()[&partition], from);
        }
        store
            .publish_splits(&publish(lease("t/1", held.epoch), from))
            .unwrap();
        assert_eq!(store.split_checkpoints().unwrap()[&partition], head);

        // A split staged and written, never published (its indexer crashed): collected,
        // object and row; searches never saw it.
        store.stage_split("crashed", partition, head).unwrap();
        store
            .put_split_object("crashed", b"not even a split".to_vec())
            .unwrap();
        assert_eq!(count(&search, "budget"), 0);
        assert_eq!(store.collect_split_garbage(Duration::ZERO).unwrap(), 1);
        assert!(fixture
            .bucket()
            .versions_of("splits/crashed")
            .unwrap()
            .is_empty());
        // Its builder, only slow, publishes too late: refused, never a row without object.
        let late = SplitRow {
            id: "crashed".into(),
            partition,
            max_seq: head,
            min_created_us: None,
            max_created_us: None,
            num_docs: 1,
            bytes: 16,
            version_id: "v".into(),
        };
        let mut too_late = publish(lease("t/1", held.epoch), head);
        too_late.split = Some(late);
        assert!(matches!(
            store.publish_splits(&too_late),
            Err(StoreError::Fenced(_))
        ));
        assert!(store.split_catalog().unwrap().splits.is_empty());

        // A damaged split object is an error, not a file outside the cache.
        let mut damaged = Vec::from(&MAGIC[..]);
        damaged.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
        damaged.extend_from_slice(&1u32.to_le_bytes());
        damaged.extend_from_slice(&5u16.to_le_bytes());
        damaged.extend_from_slice(b"../x1");
        damaged.extend_from_slice(&0u64.to_le_bytes());
        assert!(unpack(&damaged, &dirs.path().join("damaged")).is_err());
        assert!(unpack(&damaged[..10], &dirs.path().join("short")).is_err());
        assert!(!dirs.path().join("x1").exists());
    }

    #[test]
    fn partitions_are_placed_by_rendezvous_and_move_to_a_survivor() {
        if !Cluster::available() {
            return;
        }
        let fixture = Cluster::new();
        let store = fixture.open();
        let dirs = tempfile::tempdir().unwrap();
        let worker = |holder: &str, sub: &str| {
            let search = SplitSearch::open(Arc::clone(&store), &dirs.path().join(sub)).unwrap();
            SplitWorker::new(search, Arc::new(IndexProgress::default()), holder)
        };
        let (mut a, mut b) = (worker("a/1", "a"), worker("b/1", "b"));
        // Both say they are live, then each takes its own share.
        for _ in 0..2 {
            a.step().unwrap();
            b.step().unwrap();
        }
        let live = store.live_split_nodes().unwrap();
        assert_eq!(live, vec!["a/1".to_string(), "b/1".to_string()]);
        let held = |w: &SplitWorker| {
            let mut held: Vec<i16> = w.held.keys().copied().collect();
            held.sort();
            held
        };
        // b asked for its partitions while a still held them: it asks again after a pause.
        std::thread::sleep(LEASE_RETRY + Duration::from_millis(200));
        b.step().unwrap();
        for partition in 0..SEARCH_PARTITIONS as i16 {
            let owner = rendezvous_owner(partition, &live).unwrap();
            assert_eq!(held(&a).contains(&partition), owner == "a/1", "{partition}");
            assert_eq!(held(&b).contains(&partition), owner == "b/1", "{partition}");
        }
        // b stops: its leases are released and a takes every partition.
        for (lease, _) in b.held.values() {
            store.release_lease(&lease.name, "b/1").unwrap();
        }
        store.release_lease("split-node/b/1", "b/1").unwrap();
        a.step().unwrap();
        assert_eq!(held(&a).len(), SEARCH_PARTITIONS as usize);
    }

    #[test]
    fn a_node_caches_the_splits_of_the_partitions_it_indexes_and_only_those() {
        if !Cluster::available() {
            return;
        }
        let fixture = Cluster::new();
        let store = fixture.open();
        let dirs = tempfile::tempdir().unwrap();
        let written = |round: &str| -> Vec<NewInteraction> {
            (0..32)
                .map(|n| {
                    item(
                        &format!("user{n}@contoso.com"),
                        &format!("{round}{n}"),
                        "budget",
                    )
                })
                .collect()
        };
        // Stored before splits are on: a's bootstrap builds splits for every partition.
        let early = written("e");
        store.write_interactions(&early).unwrap();
        let open = |sub: &str| SplitSearch::open(Arc::clone(&store), &dirs.path().join(sub));
        let (search_a, search_b) = (open("a").unwrap(), open("b").unwrap());
        let mut a = SplitWorker::new(Arc::clone(&search_a), Default::default(), "a/1");
        let mut b = SplitWorker::new(Arc::clone(&search_b), Default::default(), "b/1");
        for _ in 0..2 {
            a.step().unwrap();
            b.step().unwrap();
        }
        std::thread::sleep(LEASE_RETRY + Duration::from_millis(200));
        b.step().unwrap();
        assert!(!a.held.is_empty() && !b.held.is_empty());
        // Stored after: each partition's indexer builds its split and keeps it.
        store.write_interactions(&written("l")).unwrap();
        for (worker, search) in [(&mut a, &search_a), (&mut b, &search_b)] {
            // As if no search had used the splits read before.
            for cached in search.cache.lock().unwrap().values() {
                *cached.used.lock().unwrap() = None;
            }
            worker.housekept = None;
            worker.step().unwrap();
        }
        let catalog = store.split_catalog().unwrap();
        let partitions: HashSet<i16> = catalog.splits.iter().map(|s| s.partition).collect();
        assert!(partitions.len() > 4, "{partitions:?}");
        for (worker, search) in [(&a, &search_a), (&b, &search_b)] {
            let cached: HashSet<String> = search.cache.lock().unwrap().keys().cloned().collect();
            for split in &catalog.splits {
                // Before any search: the splits of its partitions are there (bootstrap's
                // fetched, its own kept), the others' are not (a held every partition
                // before b came, and let them go).
                assert_eq!(
                    cached.contains(&split.id),
                    worker.held.contains_key(&split.partition),
                    "{} split {} of partition {}",
                    worker.holder,
                    split.id,
                    split.partition
                );
            }
        }
        // A split of a's partitions read on b (as when a does not answer) stays while used.
        let foreign = catalog
            .splits
            .iter()
            .find(|s| !b.held.contains_key(&s.partition))
            .unwrap();
        search_b.cached(foreign).unwrap();
        b.housekept = None;
        b.step().unwrap();
        assert!(search_b.cache.lock().unwrap().contains_key(&foreign.id));
        // A split is kept only when asked: the bootstrap's are not.
        let items = store.get_interactions(&[early[0].id]).unwrap();
        let items: Vec<StoredInteraction> = items.into_iter().flatten().collect();
        let kept = search_a.write_split(0, 0, &items, true).unwrap();
        let not_kept = search_a.write_split(0, 0, &items, false).unwrap();
        let cache = search_a.cache.lock().unwrap();
        assert!(cache.contains_key(&kept.id));
        assert!(!cache.contains_key(&not_kept.id));
        assert_eq!(cache[&kept.id].searcher.num_docs(), 1);
        // The kept files are exactly the object other nodes download.
        let object = store.get_split_object(&kept).unwrap().unwrap();
        let unpacked = dirs.path().join("unpacked");
        unpack(&object, &unpacked).unwrap();
        let files = |dir: &Path| {
            // Not tantivy's lock files (opening an index writes them).
            let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
                .unwrap()
                .map(|entry| {
                    let entry = entry.unwrap();
                    let name = entry.file_name().to_string_lossy().into_owned();
                    (name, std::fs::read(entry.path()).unwrap())
                })
                .filter(|(name, _)| !name.starts_with('.'))
                .collect();
            files.sort();
            files
        };
        let (kept_files, object_files) = (files(&cache[&kept.id].dir), files(&unpacked));
        let names = |files: &[(String, Vec<u8>)]| -> Vec<String> {
            files.iter().map(|(name, _)| name.clone()).collect()
        };
        assert!(!object_files.is_empty());
        assert!(
            kept_files == object_files,
            "kept {:?}, object {:?}",
            names(&kept_files),
            names(&object_files)
        );
    }

    #[test]
    fn a_node_whose_work_keeps_failing_stands_back() {
        if !Cluster::available() {
            return;
        }
        let fixture = Cluster::new();
        let store = fixture.open();
        let dirs = tempfile::tempdir().unwrap();
        let search = SplitSearch::open(Arc::clone(&store), dirs.path()).unwrap();
        let mut worker = SplitWorker::new(search, Arc::new(IndexProgress::default()), "a/1");
        worker.step().unwrap();
        assert_eq!(worker.held.len(), SEARCH_PARTITIONS as usize);
        let mut failure = None;
        for _ in 0..FAILURES_TO_STAND_BACK - 1 {
            worker.settle(3, Err(IndexError::Splits("disk full".into())), &mut failure);
        }
        // A success in between starts the count again.
        worker.settle(3, Ok(()), &mut failure);
        worker.settle(3, Err(IndexError::Splits("disk full".into())), &mut failure);
        assert!(worker.sick_until.is_none());
        for _ in 0..FAILURES_TO_STAND_BACK - 1 {
            worker.settle(3, Err(IndexError::Splits("disk full".into())), &mut failure);
        }
        assert!(worker.sick_until.is_some());
        assert!(worker.partitions().unwrap().is_empty());
        assert!(store.live_split_nodes().unwrap().is_empty());
        // Its partitions are free for the others at once.
        let taken = store
            .acquire_lease("split-index-3", "b/1", LEASE_TTL)
            .unwrap();
        assert!(taken.is_some());
    }
}
