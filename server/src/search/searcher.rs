//! Running a search: scope to mailboxes, exact total, counts per mailbox/app/location, one
//! sorted page. Pages come from a pinned snapshot of the index so that paging is stable while
//! ingest goes on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tantivy::collector::{Collector, Count, FilterCollector, SegmentCollector, TopDocs};
use tantivy::columnar::StrColumn;
use tantivy::{DocAddress, DocId, Order, Score, Searcher, SegmentReader};

use super::kql::Query;
use super::query::{translate, QueryError};
use super::schema::Fields;
use crate::domain::{InteractionId, MailboxId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sort {
    Relevance,
    Newest,
    Oldest,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: InteractionId,
    pub score: f32,
    /// When the item was created (µs since the epoch), for the sorts by time; 0 for the sort
    /// by relevance.
    pub created_us: i64,
    /// Where the hit is in the searcher, in its order: ties of the sort key are broken by
    /// it, so that the pages of a merge (`merge`) follow the same order as one search.
    pub tie: (String, u64),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Results {
    /// Exact number of matching interactions.
    pub total: u64,
    pub hits: Vec<Hit>,
    pub by_mailbox: BTreeMap<String, u64>,
    pub by_app: BTreeMap<String, u64>,
    pub by_location: BTreeMap<String, u64>,
}

/// Per counted field, the number of matches per value.
type Counts = Vec<BTreeMap<String, u64>>;

/// Counts matching documents per value of a few string fast fields.
struct CountsCollector;

struct SegmentCounts {
    columns: Vec<Option<StrColumn>>,
    /// Per column, a count per term ordinal.
    counts: Vec<Vec<u64>>,
}

const COUNTED: [&str; 3] = ["mailbox", "app_name", "location"];

impl Collector for CountsCollector {
    type Fruit = Vec<BTreeMap<String, u64>>;
    type Child = SegmentCounts;

    fn for_segment(&self, _: u32, segment: &SegmentReader) -> tantivy::Result<SegmentCounts> {
        let fast = segment.fast_fields();
        let columns = COUNTED
            .iter()
            .map(|name| fast.str(name))
            .collect::<tantivy::Result<Vec<_>>>()?;
        let counts = columns
            .iter()
            .map(|column| vec![0; column.as_ref().map_or(0, |c| c.num_terms())])
            .collect();
        Ok(SegmentCounts { counts, columns })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(
        &self,
        fruits: Vec<Vec<BTreeMap<String, u64>>>,
    ) -> tantivy::Result<Self::Fruit> {
        let mut merged = vec![BTreeMap::new(); COUNTED.len()];
        for fruit in fruits {
            for (total, part) in merged.iter_mut().zip(fruit) {
                for (key, count) in part {
                    *total.entry(key).or_insert(0) += count;
                }
            }
        }
        Ok(merged)
    }
}

impl SegmentCollector for SegmentCounts {
    type Fruit = Vec<BTreeMap<String, u64>>;

    fn collect(&mut self, doc: DocId, _: Score) {
        for (column, counts) in self.columns.iter().zip(self.counts.iter_mut()) {
            if let Some(column) = column {
                for ord in column.term_ords(doc) {
                    counts[ord as usize] += 1;
                }
            }
        }
    }

    fn harvest(self) -> Self::Fruit {
        self.columns
            .iter()
            .zip(self.counts)
            .map(|(column, counts)| {
                let mut named = BTreeMap::new();
                if let Some(column) = column {
                    for (ord, count) in counts.into_iter().enumerate().filter(|(_, c)| *c > 0) {
                        let ord = ord as u64;
                        let mut name = String::new();
                        if column.ord_to_str(ord, &mut name).unwrap_or(false) {
                            named.insert(name, count);
                        }
                    }
                }
                named
            })
            .collect()
    }
}

/// Runs `query` over `mailboxes` and returns page `[offset, offset + limit)` in `sort` order.
pub fn execute(
    searcher: &Searcher,
    fields: &Fields,
    query: &Query,
    mailboxes: &[MailboxId],
    sort: Sort,
    offset: usize,
    limit: usize,
) -> Result<Results, QueryError> {
    execute_ranked(
        searcher,
        fields,
        query,
        mailboxes,
        sort,
        offset,
        limit,
        |address| (String::new(), address_rank(address)),
    )
}

/// A document's place in its searcher's order.
pub fn address_rank(address: DocAddress) -> u64 {
    (u64::from(address.segment_ord) << 32) | u64::from(address.doc_id)
}

/// `execute`, naming each hit's place for ties with `tie`.
#[allow(clippy::too_many_arguments)]
pub fn execute_ranked(
    searcher: &Searcher,
    fields: &Fields,
    query: &Query,
    mailboxes: &[MailboxId],
    sort: Sort,
    offset: usize,
    limit: usize,
    tie: impl Fn(DocAddress) -> (String, u64),
) -> Result<Results, QueryError> {
    // TopDocs reserves room for `offset + limit` hits: an offset past every document of the
    // snapshot is refused before tantivy sees it.
    if offset > searcher.num_docs() as usize {
        return Err(QueryError::OffsetPastEnd);
    }
    let query = translate(query, fields, searcher)?;
    let scope = scope(mailboxes);
    let index_error = |e: tantivy::TantivyError| QueryError::Index(e.to_string());
    let top = TopDocs::with_limit(limit.max(1)).and_offset(offset);
    let (total, counts, addresses): (usize, Counts, Vec<(f32, i64, DocAddress)>) = match sort {
        Sort::Relevance => {
            let collector = FilterCollector::new(
                "mailbox_key".to_string(),
                scope,
                (Count, CountsCollector, top),
            );
            let (total, counts, top) = searcher.search(&query, &collector).map_err(index_error)?;
            (
                total,
                counts,
                top.into_iter()
                    .map(|(score, address)| (score, 0, address))
                    .collect(),
            )
        }
        Sort::Newest | Sort::Oldest => {
            let order = if sort == Sort::Newest {
                Order::Desc
            } else {
                Order::Asc
            };
            let collector = FilterCollector::new(
                "mailbox_key".to_string(),
                scope,
                (
                    Count,
                    CountsCollector,
                    top.order_by_fast_field::<i64>("created", order),
                ),
            );
            let (total, counts, top) = searcher.search(&query, &collector).map_err(index_error)?;
            (
                total,
                counts,
                top.into_iter()
                    .map(|(created, address)| (0.0, created, address))
                    .collect(),
            )
        }
    };
    let mut hits = Vec::with_capacity(addresses.len());
    // Ids from the `id` fast field, one column per segment: no stored document is read (a
    // leaf search returns thousands of hits for a deep page).
    let mut columns: HashMap<u32, Option<StrColumn>> = HashMap::new();
    let mut text = String::new();
    for (score, created_us, address) in addresses.into_iter().take(limit) {
        let column = match columns.entry(address.segment_ord) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(
                searcher
                    .segment_reader(address.segment_ord)
                    .fast_fields()
                    .str("id")
                    .map_err(index_error)?,
            ),
        };
        text.clear();
        let found = column.as_ref().is_some_and(|column| {
            column
                .term_ords(address.doc_id)
                .next()
                .is_some_and(|ord| column.ord_to_str(ord, &mut text).unwrap_or(false))
        });
        let id = found
            .then(|| text.parse().ok())
            .flatten()
            .ok_or_else(|| QueryError::Index("a document has no valid id".into()))?;
        hits.push(Hit {
            id,
            score,
            created_us,
            tie: tie(address),
        });
    }
    let mut counts = counts.into_iter();
    Ok(Results {
        total: total as u64,
        hits,
        by_mailbox: counts.next().unwrap_or_default(),
        by_app: counts.next().unwrap_or_default(),
        by_location: counts.next().unwrap_or_default(),
    })
}

/// Merges the results of searches over disjoint parts of an index (leaf searches over
/// disjoint sets of splits), each holding its best `offset + limit` hits, into page
/// `[offset, offset + limit)`: totals and counts add up; hits follow `sort`, then their
/// `tie`.
pub fn merge(parts: Vec<Results>, sort: Sort, offset: usize, limit: usize) -> Results {
    let mut merged = Results::default();
    let mut hits = Vec::new();
    for part in parts {
        merged.total += part.total;
        for (total, counts) in [
            (&mut merged.by_mailbox, part.by_mailbox),
            (&mut merged.by_app, part.by_app),
            (&mut merged.by_location, part.by_location),
        ] {
            for (key, count) in counts {
                *total.entry(key).or_insert(0) += count;
            }
        }
        hits.extend(part.hits);
    }
    hits.sort_by(|a, b| {
        let key = match sort {
            Sort::Relevance => b.score.total_cmp(&a.score),
            Sort::Newest => b.created_us.cmp(&a.created_us),
            Sort::Oldest => a.created_us.cmp(&b.created_us),
        };
        key.then_with(|| a.tie.cmp(&b.tie))
    });
    merged.hits = hits.into_iter().skip(offset).take(limit).collect();
    merged
}

/// The predicate that keeps documents of `mailboxes`, on the `mailbox_key` fast field: cost
/// grows with the hits, not with the size of the mailboxes.
fn scope(mailboxes: &[MailboxId]) -> impl Fn(u64) -> bool + Clone + Send + Sync + 'static {
    let keys: Arc<HashSet<u64>> = Arc::new(
        mailboxes
            .iter()
            .map(|m| super::schema::mailbox_key(m.as_str()))
            .collect(),
    );
    move |key| keys.contains(&key)
}

/// Collects the ids of every matching document (for exports), from the `id` fast field.
struct IdCollector;

struct SegmentIds {
    column: Option<StrColumn>,
    ids: Vec<InteractionId>,
}

impl Collector for IdCollector {
    type Fruit = Vec<InteractionId>;
    type Child = SegmentIds;

    fn for_segment(&self, _: u32, segment: &SegmentReader) -> tantivy::Result<SegmentIds> {
        Ok(SegmentIds {
            column: segment.fast_fields().str("id")?,
            ids: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<InteractionId>>) -> tantivy::Result<Vec<InteractionId>> {
        Ok(fruits.into_iter().flatten().collect())
    }
}

impl SegmentCollector for SegmentIds {
    type Fruit = Vec<InteractionId>;

    fn collect(&mut self, doc: DocId, _: Score) {
        let Some(column) = &self.column else { return };
        let mut text = String::new();
        for ord in column.term_ords(doc) {
            if column.ord_to_str(ord, &mut text).unwrap_or(false) {
                if let Ok(id) = text.parse() {
                    self.ids.push(id);
                }
            }
        }
    }

    fn harvest(self) -> Vec<InteractionId> {
        self.ids
    }
}

/// Whether `query` can run on an index of this schema (fields, budget of terms), without
/// running it.
pub fn check_query(searcher: &Searcher, fields: &Fields, query: &Query) -> Result<(), QueryError> {
    translate(query, fields, searcher).map(|_| ())
}

/// The ids of every item matching `query` over `mailboxes`, sorted: 16 bytes per match, no
/// content, so that an export can stream them in a stable, resumable order.
pub fn matching_ids(
    searcher: &Searcher,
    fields: &Fields,
    query: &Query,
    mailboxes: &[MailboxId],
) -> Result<Vec<InteractionId>, QueryError> {
    let query = translate(query, fields, searcher)?;
    let collector = FilterCollector::new("mailbox_key".to_string(), scope(mailboxes), IdCollector);
    let mut ids = searcher
        .search(&query, &collector)
        .map_err(|e| QueryError::Index(e.to_string()))?;
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Most snapshots pinned at once: pinning one more releases the least recently used.
pub const MAX_PINNED: usize = 1_000;
/// Most snapshots one principal has pinned at once, so that one caller's flood of searches
/// releases its own snapshots and not everyone else's.
pub const MAX_PINNED_PER_OWNER: usize = 100;

struct Pinned<T> {
    snapshot: T,
    owner: String,
    pinned_at: Instant,
    used_at: Instant,
}

/// Index snapshots pinned for paging, by id. A snapshot is released when unused for
/// `idle_ttl`, when older than `max_age` however much it is used, or when the number pinned
/// (in all, or by its owner) would pass the limits above; its page tokens then answer
/// "expired". A pinned snapshot keeps its segment files open, so every bound here is a bound
/// on memory and disk.
pub struct Snapshots<T = Searcher> {
    idle_ttl: Duration,
    max_age: Duration,
    next_id: AtomicU64,
    pinned: Mutex<HashMap<u64, Pinned<T>>>,
}

impl<T: Clone> Snapshots<T> {
    pub fn new(idle_ttl: Duration, max_age: Duration) -> Snapshots<T> {
        Snapshots {
            idle_ttl,
            max_age,
            // Ids start at a random point so that a token from before a restart cannot name
            // a snapshot of this process.
            next_id: AtomicU64::new(rand::random::<u64>() >> 16),
            pinned: Mutex::new(HashMap::new()),
        }
    }

    fn release_expired(&self, pinned: &mut HashMap<u64, Pinned<T>>, now: Instant) {
        pinned.retain(|_, entry| {
            now.saturating_duration_since(entry.used_at) < self.idle_ttl
                && now.saturating_duration_since(entry.pinned_at) < self.max_age
        });
    }

    /// Pins `searcher` for `owner` and returns its id.
    pub fn pin(&self, owner: &str, snapshot: T) -> u64 {
        self.pin_at(owner, snapshot, Instant::now())
    }

    fn pin_at(&self, owner: &str, snapshot: T, now: Instant) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.pin_as_at(id, owner, snapshot, now);
        id
    }

    /// Pins `snapshot` for `owner` as `id` (a cluster's plans: ids are chosen at random,
    /// and a plan pinned by another node is pinned here under its id).
    pub fn pin_as(&self, id: u64, owner: &str, snapshot: T) {
        self.pin_as_at(id, owner, snapshot, Instant::now())
    }

    /// How long a snapshot stays pinned at most.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    fn pin_as_at(&self, id: u64, owner: &str, snapshot: T, now: Instant) {
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        self.release_expired(&mut pinned, now);
        let least_recently_used = |pinned: &HashMap<u64, Pinned<T>>, of_owner: bool| {
            pinned
                .iter()
                .filter(|(_, entry)| !of_owner || entry.owner == owner)
                .min_by_key(|(_, entry)| entry.used_at)
                .map(|(id, _)| *id)
        };
        let owned = pinned.values().filter(|entry| entry.owner == owner).count();
        if owned >= MAX_PINNED_PER_OWNER {
            if let Some(oldest) = least_recently_used(&pinned, true) {
                pinned.remove(&oldest);
            }
        }
        if pinned.len() >= MAX_PINNED {
            if let Some(oldest) = least_recently_used(&pinned, false) {
                pinned.remove(&oldest);
            }
        }
        pinned.insert(
            id,
            Pinned {
                snapshot,
                owner: owner.to_string(),
                pinned_at: now,
                used_at: now,
            },
        );
        metrics::gauge!("holdfast_search_pinned_snapshots").set(pinned.len() as f64);
    }

    /// The pinned snapshot `id`, if it has not been released.
    pub fn get(&self, id: u64) -> Option<T> {
        self.get_at(id, Instant::now())
    }

    fn get_at(&self, id: u64, now: Instant) -> Option<T> {
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        self.release_expired(&mut pinned, now);
        pinned.get_mut(&id).map(|entry| {
            entry.used_at = now;
            entry.snapshot.clone()
        })
    }

    /// How many snapshots are pinned now.
    pub fn len(&self) -> usize {
        self.pinned.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which of `ids` are in the index at all, and which of those match `query` (every present
/// one when `query` is `None`). Case holds use this so that hold matching is exactly search
/// matching; an id missing from the index (not yet indexed, or during a rebuild) cannot be
/// shown not to match, and callers treat it as held.
pub fn present_and_matching(
    searcher: &Searcher,
    fields: &Fields,
    query: Option<&Query>,
    ids: &[InteractionId],
) -> Result<(HashSet<InteractionId>, HashSet<InteractionId>), QueryError> {
    use tantivy::query::{BooleanQuery, Occur, TermSetQuery};
    let id_query = || {
        TermSetQuery::new(
            ids.iter()
                .map(|id| tantivy::Term::from_field_text(fields.id, &id.to_string())),
        )
    };
    let run = |query: &dyn tantivy::query::Query| {
        searcher
            .search(query, &IdCollector)
            .map(|found| found.into_iter().collect::<HashSet<_>>())
            .map_err(|e| QueryError::Index(e.to_string()))
    };
    let present = run(&id_query())?;
    let matching = match query {
        None => present.clone(),
        Some(query) => {
            let translated = translate(query, fields, searcher)?;
            run(&BooleanQuery::new(vec![
                (Occur::Must, Box::new(id_query())),
                (Occur::Must, translated),
            ]))?
        }
    };
    Ok((present, matching))
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;

    fn searcher() -> Searcher {
        let (schema, _) = super::super::schema::schema();
        let index = tantivy::Index::create_in_ram(schema);
        index.reader().expect("reader").searcher()
    }

    #[test]
    fn snapshots_expire_when_idle_and_when_old() {
        let snapshots = Snapshots::new(Duration::from_secs(600), Duration::from_secs(3600));
        let start = Instant::now();
        let id = snapshots.pin_at("a", searcher(), start);
        // Used every 5 minutes it stays, until its maximum age.
        let mut at = start;
        while at + Duration::from_secs(300) < start + Duration::from_secs(3600) {
            at += Duration::from_secs(300);
            assert!(snapshots.get_at(id, at).is_some(), "{:?}", at - start);
        }
        assert!(snapshots
            .get_at(id, start + Duration::from_secs(3600))
            .is_none());
        // Unused for 10 minutes it goes.
        let id = snapshots.pin_at("a", searcher(), start);
        assert!(snapshots
            .get_at(id, start + Duration::from_secs(600))
            .is_none());
    }

    #[test]
    fn the_number_pinned_is_bounded_in_all_and_per_owner() {
        let snapshots = Snapshots::new(Duration::from_secs(600), Duration::from_secs(3600));
        let start = Instant::now();
        let tick = |n: u64| start + Duration::from_millis(n);
        let first_of_b = snapshots.pin_at("b", searcher(), tick(0));
        let mut ids = Vec::new();
        for n in 0..(MAX_PINNED_PER_OWNER as u64 * 3) {
            ids.push(snapshots.pin_at("flood", searcher(), tick(n + 1)));
        }
        // The flood released only its own oldest snapshots.
        assert_eq!(snapshots.len(), MAX_PINNED_PER_OWNER + 1);
        assert!(snapshots.get_at(first_of_b, tick(1_000)).is_some());
        assert!(snapshots.get_at(ids[0], tick(1_000)).is_none());
        assert!(snapshots
            .get_at(*ids.last().unwrap(), tick(1_000))
            .is_some());
        // Many owners: never more than MAX_PINNED, the least recently used goes first.
        for n in 0..(MAX_PINNED as u64 + 50) {
            snapshots.pin_at(&format!("owner-{n}"), searcher(), tick(2_000 + n));
        }
        assert_eq!(snapshots.len(), MAX_PINNED);
        assert!(snapshots.get_at(first_of_b, tick(10_000)).is_none());
    }

    #[test]
    fn an_offset_past_the_snapshot_is_refused_before_tantivy() {
        let (_, fields) = super::super::schema::schema();
        let query = super::super::kql::parse("budget").unwrap();
        let mailboxes = [MailboxId::parse("a@b.c").unwrap()];
        let searcher = searcher();
        let result = execute(
            &searcher,
            &fields,
            &query,
            &mailboxes,
            Sort::Relevance,
            1 << 40,
            10,
        );
        assert!(matches!(result, Err(QueryError::OffsetPastEnd)));
        assert_eq!(
            execute(&searcher, &fields, &query, &mailboxes, Sort::Newest, 0, 10)
                .unwrap()
                .total,
            0
        );
    }
}
