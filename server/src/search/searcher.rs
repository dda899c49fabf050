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
use tantivy::schema::Value;
use tantivy::{DocAddress, DocId, Order, Score, Searcher, SegmentReader, TantivyDocument};

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
    let query = translate(query, fields, searcher)?;
    let scope = scope(mailboxes);
    let index_error = |e: tantivy::TantivyError| QueryError::Index(e.to_string());
    let top = TopDocs::with_limit(limit.max(1)).and_offset(offset);
    let (total, counts, addresses): (usize, Counts, Vec<(f32, DocAddress)>) = match sort {
        Sort::Relevance => {
            let collector = FilterCollector::new(
                "mailbox_key".to_string(),
                scope,
                (Count, CountsCollector, top),
            );
            searcher.search(&query, &collector).map_err(index_error)?
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
                top.into_iter().map(|(_, address)| (0.0, address)).collect(),
            )
        }
    };
    let mut hits = Vec::with_capacity(addresses.len());
    for (score, address) in addresses.into_iter().take(limit) {
        let doc: TantivyDocument = searcher.doc(address).map_err(index_error)?;
        let id = doc
            .get_first(fields.id)
            .and_then(|value| value.as_str())
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| QueryError::Index("a document has no valid id".into()))?;
        hits.push(Hit { id, score });
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

/// Index snapshots pinned for paging, by id. A snapshot unused for `ttl` is released.
pub struct Snapshots {
    ttl: Duration,
    next_id: AtomicU64,
    pinned: Mutex<HashMap<u64, (Searcher, Instant)>>,
}

impl Snapshots {
    pub fn new(ttl: Duration) -> Snapshots {
        Snapshots {
            ttl,
            next_id: AtomicU64::new(1),
            pinned: Mutex::new(HashMap::new()),
        }
    }

    /// Pins `searcher` and returns its id.
    pub fn pin(&self, searcher: Searcher) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.ttl;
        pinned.retain(|_, (_, used)| used.elapsed() < ttl);
        pinned.insert(id, (searcher, Instant::now()));
        id
    }

    /// The pinned snapshot `id`, if it has not expired.
    pub fn get(&self, id: u64) -> Option<Searcher> {
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.ttl;
        pinned.retain(|_, (_, used)| used.elapsed() < ttl);
        pinned.get_mut(&id).map(|(searcher, used)| {
            *used = Instant::now();
            searcher.clone()
        })
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
