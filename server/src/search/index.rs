//! The eDiscovery index: a tantivy index derived from the store and rebuildable from it.
//!
//! One thread (`run_indexer`) owns the `IndexWriter`. It follows the store's index queue,
//! re-indexes every interaction named there (delete by id, then add the current state), and
//! commits at most every `commit_interval` with the last queue sequence as the commit payload.
//! After a commit it trims the queue and reloads the reader, so an acknowledged interaction is
//! searchable within about a commit interval. On start it catches up from the payload; if the
//! index is missing, unreadable or of another schema version it is rebuilt from a full scan of
//! the store, while ingest goes on (new work queues up behind the rebuild).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Term};
use tokio_util::sync::CancellationToken;

use super::schema::{self, Fields, WordTokenizer, SCHEMA_VERSION, TOKENIZER};
use crate::domain::InteractionId;
use crate::store::{IndexFeed, Store, StoreError};

/// Queue entries read at once.
const WORK_CHUNK: usize = 2_000;
/// Interactions scanned at once while rebuilding.
const REBUILD_CHUNK: usize = 2_000;
/// Memory of the indexing buffer.
const WRITER_MEMORY: usize = 64 << 20;
/// Indexing threads (tantivy splits the work between segments).
const INDEXING_THREADS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index error: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("search splits: {0}")]
    Splits(String),
    /// A split a search names is gone from the bucket: merged away, and its grace over.
    #[error("search split {0} is gone (merged away)")]
    SplitGone(String),
    /// A query the index cannot run (a prefix matching too many words).
    #[error(transparent)]
    Query(#[from] super::query::QueryError),
    #[error("the indexer panicked: {0}")]
    Panicked(String),
    /// The shared feed forgot work this index had not read: only a rebuild catches up.
    #[error("the index feed has forgotten work this index has not read")]
    FeedTrimmed,
    #[error("search index directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What each commit records.
#[derive(Debug, Serialize, Deserialize)]
struct CommitPayload {
    schema_version: u32,
    /// Every queue entry up to here is in the index.
    sequence: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct IndexSettings {
    /// Longest time between an acknowledged write and its commit.
    pub commit_interval: Duration,
    /// Ingest waits while more than this many queue entries are not yet indexed.
    pub max_lag: u64,
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings {
            commit_interval: Duration::from_millis(500),
            max_lag: 20_000,
        }
    }
}

/// Progress shared between the indexer and everyone else.
#[derive(Debug, Default)]
pub struct IndexProgress {
    /// Last queue sequence that is committed and visible to searches.
    pub committed: AtomicU64,
    pub rebuilding: AtomicBool,
    /// Erasure asked for: the deletions of every queue entry up to here must leave the files.
    pub erase_through: AtomicU64,
    /// Every document deleted by queue entries up to here is gone from the index's files:
    /// the segments that held it were merged and the old files deleted.
    pub erased_through: AtomicU64,
}

/// The index as searches see it.
pub struct SearchIndex {
    pub index: Index,
    pub reader: IndexReader,
    pub fields: Fields,
    pub progress: Arc<IndexProgress>,
    pub settings: IndexSettings,
    /// Cluster search in splits: searches read every published split (`splits.rs`), and
    /// `index` is left empty.
    pub splits: Option<Arc<dyn SearcherSource>>,
}

/// Where searches read when it is not the local index (cluster search in splits).
pub trait SearcherSource: Send + Sync {
    /// A searcher over everything searchable now.
    fn searcher(&self) -> Result<tantivy::Searcher, IndexError>;
}

impl SearchIndex {
    /// A searcher over everything searchable now.
    pub fn searcher(&self) -> Result<tantivy::Searcher, IndexError> {
        match &self.splits {
            Some(splits) => splits.searcher(),
            None => Ok(self.reader.searcher()),
        }
    }

    /// Whether the index is being rebuilt from the store: until that ends, a search would see
    /// only part of the stored items, so callers answer UNAVAILABLE instead.
    pub fn is_rebuilding(&self) -> bool {
        self.progress.rebuilding.load(Ordering::Acquire)
    }

    /// Queue entries written but not yet searchable.
    pub fn lag(&self, store: &dyn IndexFeed) -> u64 {
        store
            .last_index_sequence()
            .saturating_sub(self.progress.committed.load(Ordering::Acquire))
    }

    /// Asks the indexer to remove from its files every document deleted by queue entries up
    /// to `sequence` (see `erased_through`).
    pub fn request_erasure(&self, sequence: u64) {
        self.progress
            .erase_through
            .fetch_max(sequence, Ordering::AcqRel);
    }

    /// Queue sequence up to which deleted documents are gone from the index's files.
    pub fn erased_through(&self) -> u64 {
        self.progress.erased_through.load(Ordering::Acquire)
    }

    /// Waits while the index is too far behind (backpressure for ingest). Never waits during
    /// a rebuild: new work simply queues on disk behind it.
    pub async fn wait_for_capacity(&self, store: &dyn IndexFeed, shutdown: &CancellationToken) {
        while !self.progress.rebuilding.load(Ordering::Acquire)
            && self.lag(store) > self.settings.max_lag
            && !shutdown.is_cancelled()
        {
            metrics::counter!("holdfast_ingest_index_backpressure_waits_total").increment(1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub(crate) fn register_tokenizer(index: &Index) {
    index.tokenizers().register(
        TOKENIZER,
        tantivy::tokenizer::TextAnalyzer::from(WordTokenizer),
    );
}

fn read_payload(index: &Index) -> Option<CommitPayload> {
    let metas = index.load_metas().ok()?;
    serde_json::from_str(metas.payload.as_deref()?).ok()
}

/// Opens the index under `dir`, or creates an empty one. Returns the index and the queue
/// sequence it has committed, or `None` when it must be rebuilt from the store.
fn open_or_create(dir: &Path) -> Result<(Index, Option<u64>), IndexError> {
    let (expected_schema, _) = schema::schema();
    if dir.join("meta.json").exists() {
        match Index::open_in_dir(dir) {
            Ok(index) if index.schema() == expected_schema => {
                register_tokenizer(&index);
                let committed = read_payload(&index)
                    .filter(|payload| payload.schema_version == SCHEMA_VERSION)
                    .map(|payload| payload.sequence);
                if committed.is_none() {
                    tracing::warn!(path = %dir.display(), "search index has no usable commit; rebuilding it");
                }
                return Ok((index, committed));
            }
            Ok(_) => {
                tracing::warn!(path = %dir.display(), "search index has another schema; rebuilding it");
            }
            Err(error) => {
                tracing::warn!(path = %dir.display(), %error, "search index is unreadable; rebuilding it");
            }
        }
        std::fs::remove_dir_all(dir).map_err(|source| IndexError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::create_dir_all(dir).map_err(|source| IndexError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let index = Index::create_in_dir(dir, expected_schema)?;
    register_tokenizer(&index);
    Ok((index, None))
}

/// The indexer thread; `join` waits for its last commit.
pub struct IndexerThread(JoinHandle<()>);

impl IndexerThread {
    pub(crate) fn new(handle: JoinHandle<()>) -> IndexerThread {
        IndexerThread(handle)
    }

    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("the indexer thread panicked");
        }
    }
}

/// Opens the index and starts its indexer thread.
pub fn start(
    dir: &Path,
    store: Arc<dyn Store>,
    settings: IndexSettings,
    shutdown: CancellationToken,
) -> Result<(Arc<SearchIndex>, IndexerThread), IndexError> {
    let (index, mut committed) = open_or_create(dir)?;
    // Work this index has not read may be forgotten by a shared feed (this node was away
    // too long): only a rebuild brings it back.
    let trimmed = store.feed_trimmed_through()?;
    if committed.is_some_and(|position| position < trimmed) {
        tracing::warn!(
            path = %dir.display(),
            "the index feed has forgotten work this index has not read; rebuilding it"
        );
        committed = None;
    }
    let writer: IndexWriter = index.writer_with_num_threads(INDEXING_THREADS, WRITER_MEMORY)?;
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    let (_, fields) = schema::schema();
    let progress = Arc::new(IndexProgress::default());
    progress
        .committed
        .store(committed.unwrap_or(0), Ordering::Release);
    // Searches answer UNAVAILABLE while a rebuild could leave stored items out; a rebuild
    // over an empty store (a new data directory) leaves nothing out.
    let partial = committed.is_none() && !store.scan_interactions(None, 1)?.is_empty();
    progress.rebuilding.store(partial, Ordering::Release);
    let search_index = Arc::new(SearchIndex {
        index,
        reader,
        fields,
        progress,
        settings,
        splits: None,
    });
    let indexer = Indexer {
        store,
        search: Arc::clone(&search_index),
        writer,
        position: committed.unwrap_or(0),
        dirty: false,
        last_commit: Instant::now(),
    };
    let handle = std::thread::Builder::new()
        .name("holdfast-indexer".into())
        .spawn(move || indexer.run(committed.is_none(), shutdown))
        .expect("can spawn the indexer thread");
    Ok((search_index, IndexerThread(handle)))
}

struct Indexer {
    store: Arc<dyn Store>,
    search: Arc<SearchIndex>,
    writer: IndexWriter,
    /// Last queue sequence applied to the writer (committed or not).
    position: u64,
    dirty: bool,
    last_commit: Instant,
}

impl Indexer {
    fn run(mut self, mut rebuild: bool, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            // A panic (a bug, a damaged segment) is handled like an error: roll back to the
            // last commit and retry, never a silently dead indexer.
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if rebuild {
                    self.rebuild(&shutdown).map(|()| true)
                } else {
                    self.step()
                        .and_then(|worked| Ok(self.erase_if_requested()? || worked))
                }
            }))
            .unwrap_or_else(|payload| {
                metrics::counter!("holdfast_panics_total", "what" => "indexer").increment(1);
                // The payload's text may quote indexed content: it is not kept.
                drop(payload);
                Err(IndexError::Panicked("a step failed unexpectedly".into()))
            });
            match step {
                Ok(worked) => {
                    rebuild = false;
                    backoff = Duration::from_millis(100);
                    if shutdown.is_cancelled() && !worked {
                        break;
                    }
                    if !worked {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                Err(IndexError::FeedTrimmed) => {
                    tracing::warn!(
                        "the index feed has forgotten work this index has not read; rebuilding"
                    );
                    let _ = self.writer.rollback();
                    self.dirty = false;
                    rebuild = true;
                    self.search
                        .progress
                        .rebuilding
                        .store(true, Ordering::Release);
                }
                Err(error) => {
                    // Never die: log, back off, retry from the last commit.
                    tracing::error!(%error, "indexing failed; retrying");
                    metrics::counter!("holdfast_index_errors_total").increment(1);
                    let _ = self.writer.rollback();
                    self.position = self.search.progress.committed.load(Ordering::Acquire);
                    self.dirty = false;
                    if shutdown.is_cancelled() {
                        break;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        if self.dirty {
            if let Err(error) = self.commit() {
                tracing::error!(%error, "final index commit failed; it catches up at the next start");
            }
        }
    }

    /// Applies queued work and commits when due. Returns whether there was work.
    fn step(&mut self) -> Result<bool, IndexError> {
        // The head is kept in memory (a shared feed's by a refresher): an idle indexer polls
        // it, not the feed.
        let work = if self.store.last_index_sequence() > self.position {
            self.store.index_queue_after(self.position, WORK_CHUNK)?
        } else {
            Vec::new()
        };
        // Sequences have no gaps: a first entry past the next one means entries were
        // forgotten (a shared feed trims what its readers seen lately have read).
        if work
            .first()
            .is_some_and(|&(first, _)| first > self.position + 1)
            && self.position < self.store.feed_trimmed_through()?
        {
            return Err(IndexError::FeedTrimmed);
        }
        if let Some(&(last, _)) = work.last() {
            let mut ids: Vec<InteractionId> = work.iter().map(|(_, id)| *id).collect();
            ids.sort();
            ids.dedup();
            self.reindex(&ids)?;
            self.position = last;
            self.dirty = true;
        }
        if self.dirty
            && (work.len() < WORK_CHUNK
                || self.last_commit.elapsed() >= self.search.settings.commit_interval)
            && self.last_commit.elapsed() >= self.search.settings.commit_interval / 4
        {
            self.commit()?;
        }
        Ok(!work.is_empty())
    }

    /// Once every requested deletion is committed: merges each segment that has deleted
    /// documents (a merge writes only live documents, and drops the words only they had) and
    /// deletes the old files. Returns whether it merged.
    fn erase_if_requested(&mut self) -> Result<bool, IndexError> {
        let progress = &self.search.progress;
        let wanted = progress.erase_through.load(Ordering::Acquire);
        let committed = progress.committed.load(Ordering::Acquire);
        if wanted <= progress.erased_through.load(Ordering::Acquire) || committed < wanted {
            return Ok(false);
        }
        let with_deletes: Vec<tantivy::index::SegmentId> = self
            .search
            .index
            .searchable_segment_metas()?
            .into_iter()
            .filter(|segment| segment.has_deletes())
            .map(|segment| segment.id())
            .collect();
        if !with_deletes.is_empty() {
            // Fails if a background merge holds one of them: tried again next time round.
            if let Err(error) = self.writer.merge(&with_deletes).wait() {
                tracing::debug!(%error, "erasure merge postponed");
                return Ok(false);
            }
        }
        self.writer.garbage_collect_files().wait()?;
        self.search.reader.reload()?;
        progress
            .erased_through
            .fetch_max(committed, Ordering::AcqRel);
        Ok(!with_deletes.is_empty())
    }

    /// Replaces the documents of `ids` by their current state (removing destroyed ones).
    fn reindex(&mut self, ids: &[InteractionId]) -> Result<(), IndexError> {
        let fields = self.search.fields;
        let items = self.store.get_interactions(ids)?;
        for (id, item) in ids.iter().zip(items) {
            self.writer
                .delete_term(Term::from_field_text(fields.id, &id.to_string()));
            if let Some(item) = item {
                self.writer.add_document(schema::document(&fields, &item))?;
            }
        }
        metrics::counter!("holdfast_index_documents_total").increment(ids.len() as u64);
        Ok(())
    }

    fn commit(&mut self) -> Result<(), IndexError> {
        let started = Instant::now();
        let payload = serde_json::to_string(&CommitPayload {
            schema_version: SCHEMA_VERSION,
            sequence: self.position,
        })
        .expect("payload serialises");
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        self.search.reader.reload()?;
        self.search
            .progress
            .committed
            .store(self.position, Ordering::Release);
        self.store.trim_index_queue(self.position)?;
        self.dirty = false;
        self.last_commit = Instant::now();
        metrics::histogram!("holdfast_index_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::gauge!("holdfast_index_committed_sequence").set(self.position as f64);
        Ok(())
    }

    /// Indexes every stored interaction from scratch, then commits the queue position read
    /// before the scan: anything written during the scan is queued after it.
    fn rebuild(&mut self, shutdown: &CancellationToken) -> Result<(), IndexError> {
        let target = self.store.last_index_sequence();
        // A shared feed keeps what this reader has not read from `target` on.
        self.store.register_feed_reader(target)?;
        tracing::info!(
            queue_position = target,
            "rebuilding the search index from the store"
        );
        let started = Instant::now();
        self.writer.delete_all_documents()?;
        let fields = self.search.fields;
        let mut after = None;
        let mut num_indexed = 0u64;
        loop {
            if shutdown.is_cancelled() {
                // Leave no partial commit: the next start rebuilds again.
                self.writer.rollback()?;
                return Ok(());
            }
            let chunk = self.store.scan_interactions(after, REBUILD_CHUNK)?;
            let Some(last) = chunk.last() else { break };
            after = Some(last.id);
            for item in &chunk {
                self.writer.add_document(schema::document(&fields, item))?;
            }
            let before = num_indexed;
            num_indexed += chunk.len() as u64;
            if before / 100_000 != num_indexed / 100_000 {
                tracing::info!(
                    num_indexed,
                    seconds = started.elapsed().as_secs(),
                    "rebuilding the search index"
                );
            }
        }
        self.position = target;
        self.commit()?;
        self.search
            .progress
            .rebuilding
            .store(false, Ordering::Release);
        tracing::info!(
            num_indexed,
            seconds = started.elapsed().as_secs_f64(),
            "search index rebuilt"
        );
        Ok(())
    }
}
