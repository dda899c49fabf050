//! The ids matching a query, in id order, one bounded page at a time (issue 8, defect 7):
//! exports and purges walk every match in constant memory instead of collecting and sorting
//! every hit. A page is "the `limit` smallest matching ids after `after`": each segment keeps
//! its own smallest ids in a bounded heap (the `id` fast field's term ordinals sort like the
//! ids, since ULID text sorts like the ULID), and the pages are merged.

use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;

use tantivy::collector::{Collector, Count, FilterCollector, SegmentCollector};
use tantivy::columnar::StrColumn;
use tantivy::query::Query as TantivyQuery;
use tantivy::{DocId, Score, Searcher, SegmentReader};

use super::kql::Query;
use super::query::{translate, QueryError};
use super::schema::{mailbox_key, Fields};
use crate::domain::{InteractionId, MailboxId};

/// A query translated once against one pinned snapshot, then paged through by id.
pub struct IdPages {
    searcher: Searcher,
    query: Box<dyn TantivyQuery>,
    scope: Arc<HashSet<u64>>,
}

impl IdPages {
    pub fn new(
        searcher: Searcher,
        fields: &Fields,
        query: &Query,
        mailboxes: &[MailboxId],
    ) -> Result<IdPages, QueryError> {
        IdPages::among(searcher, fields, query, mailboxes, None)
    }

    /// As `new`, the matches restricted to the ids `among` (when given).
    pub fn among(
        searcher: Searcher,
        fields: &Fields,
        query: &Query,
        mailboxes: &[MailboxId],
        among: Option<&[InteractionId]>,
    ) -> Result<IdPages, QueryError> {
        let mut query = translate(query, fields, &searcher)?;
        if let Some(ids) = among {
            use tantivy::query::{BooleanQuery, Occur, TermSetQuery};
            let ids = TermSetQuery::new(
                ids.iter()
                    .map(|id| tantivy::Term::from_field_text(fields.id, &id.to_string())),
            );
            query = Box::new(BooleanQuery::new(vec![
                (Occur::Must, query),
                (Occur::Must, Box::new(ids)),
            ]));
        }
        let scope = Arc::new(mailboxes.iter().map(|m| mailbox_key(m.as_str())).collect());
        Ok(IdPages {
            searcher,
            query,
            scope,
        })
    }

    fn scoped<C: Collector>(
        &self,
        inner: C,
    ) -> FilterCollector<C, impl Fn(u64) -> bool + Clone + Send + Sync + 'static, u64> {
        let scope = Arc::clone(&self.scope);
        FilterCollector::new(
            "mailbox_key".to_string(),
            move |key: u64| scope.contains(&key),
            inner,
        )
    }

    /// How many matching ids are greater than `after` (no ids are kept).
    pub fn count(&self, after: Option<InteractionId>) -> Result<u64, QueryError> {
        let count = match after {
            None => self
                .searcher
                .search(self.query.as_ref(), &self.scoped(Count))
                .map_err(|e| QueryError::Index(e.to_string()))?,
            Some(after) => self
                .searcher
                .search(
                    self.query.as_ref(),
                    &self.scoped(CountAfter {
                        after: after.to_string(),
                    }),
                )
                .map_err(|e| QueryError::Index(e.to_string()))?,
        };
        Ok(count as u64)
    }

    /// The (at most) `limit` smallest matching ids greater than `after`, in order.
    pub fn page(
        &self,
        after: Option<InteractionId>,
        limit: usize,
    ) -> Result<Vec<InteractionId>, QueryError> {
        let collector = self.scoped(SmallestIds {
            after: after.map(|id| id.to_string()),
            limit: limit.max(1),
        });
        self.searcher
            .search(self.query.as_ref(), &collector)
            .map_err(|e| QueryError::Index(e.to_string()))
    }
}

struct SmallestIds {
    after: Option<String>,
    limit: usize,
}

struct SegmentSmallest {
    column: Option<StrColumn>,
    /// The first term ordinal greater than `after`.
    min_ord: u64,
    limit: usize,
    /// A max-heap of the smallest ordinals seen.
    smallest: BinaryHeap<u64>,
}

/// Counts the documents whose id is greater than `after`.
struct CountAfter {
    after: String,
}

struct SegmentCountAfter {
    column: Option<StrColumn>,
    min_ord: u64,
    count: usize,
}

impl Collector for CountAfter {
    type Fruit = usize;
    type Child = SegmentCountAfter;

    fn for_segment(&self, _: u32, segment: &SegmentReader) -> tantivy::Result<SegmentCountAfter> {
        let column = segment.fast_fields().str("id")?;
        let min_ord = match &column {
            Some(column) => first_ord_after(column, &self.after)?,
            None => 0,
        };
        Ok(SegmentCountAfter {
            column,
            min_ord,
            count: 0,
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<usize>) -> tantivy::Result<usize> {
        Ok(fruits.into_iter().sum())
    }
}

impl SegmentCollector for SegmentCountAfter {
    type Fruit = usize;

    fn collect(&mut self, doc: DocId, _: Score) {
        if let Some(column) = &self.column {
            if column.term_ords(doc).any(|ord| ord >= self.min_ord) {
                self.count += 1;
            }
        }
    }

    fn harvest(self) -> usize {
        self.count
    }
}

/// The first ordinal of `column` whose text is greater than `after` (binary search).
fn first_ord_after(column: &StrColumn, after: &str) -> tantivy::Result<u64> {
    let (mut low, mut high) = (0u64, column.num_terms() as u64);
    let mut text = String::new();
    while low < high {
        let middle = low + (high - low) / 2;
        text.clear();
        column.ord_to_str(middle, &mut text)?;
        if text.as_str() <= after {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    Ok(low)
}

impl Collector for SmallestIds {
    type Fruit = Vec<InteractionId>;
    type Child = SegmentSmallest;

    fn for_segment(&self, _: u32, segment: &SegmentReader) -> tantivy::Result<SegmentSmallest> {
        let column = segment.fast_fields().str("id")?;
        let min_ord = match (&column, &self.after) {
            (Some(column), Some(after)) => first_ord_after(column, after)?,
            _ => 0,
        };
        Ok(SegmentSmallest {
            column,
            min_ord,
            limit: self.limit,
            smallest: BinaryHeap::with_capacity(self.limit + 1),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<InteractionId>>) -> tantivy::Result<Vec<InteractionId>> {
        let mut ids: Vec<InteractionId> = fruits.into_iter().flatten().collect();
        ids.sort();
        ids.dedup();
        ids.truncate(self.limit);
        Ok(ids)
    }
}

impl SegmentCollector for SegmentSmallest {
    type Fruit = Vec<InteractionId>;

    fn collect(&mut self, doc: DocId, _: Score) {
        let Some(column) = &self.column else { return };
        for ord in column.term_ords(doc) {
            if ord < self.min_ord {
                continue;
            }
            if self.smallest.len() < self.limit {
                self.smallest.push(ord);
            } else if self.smallest.peek().is_some_and(|&largest| ord < largest) {
                self.smallest.pop();
                self.smallest.push(ord);
            }
        }
    }

    fn harvest(self) -> Vec<InteractionId> {
        let Some(column) = &self.column else {
            return Vec::new();
        };
        let mut text = String::new();
        self.smallest
            .into_sorted_vec()
            .into_iter()
            .filter_map(|ord| {
                text.clear();
                match column.ord_to_str(ord, &mut text) {
                    Ok(true) => text.parse().ok(),
                    _ => None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use chrono::Utc;
    use ulid::Ulid;

    use super::*;
    use crate::domain::InteractionContent;
    use crate::search::index::{self, IndexSettings};
    use crate::search::kql;
    use crate::store::{NewInteraction, RocksStore, Store};

    fn item(number: usize) -> NewInteraction {
        let mailbox = ["alice@contoso.com", "bob@contoso.com", "carol@contoso.com"][number % 3];
        let content = InteractionContent {
            client_key: format!("k{number}"),
            mailbox_id: MailboxId::parse(mailbox).unwrap(),
            thread_id: String::new(),
            app: "Word".into(),
            created_at: Utc::now(),
            prompt: if number.is_multiple_of(2) {
                "budget even"
            } else {
                "budget odd"
            }
            .into(),
            response: "ok".into(),
            model: Default::default(),
            plugins: Vec::new(),
            accessed_resources: Vec::new(),
            contexts: Vec::new(),
            safety: Default::default(),
            sensitivity_label: String::new(),
            attributes: Default::default(),
        };
        NewInteraction::new(InteractionId(Ulid::new()), Utc::now(), content)
    }

    #[test]
    fn pages_walk_every_match_in_id_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(&dir.path().join("store")).unwrap());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let settings = IndexSettings {
            commit_interval: Duration::from_millis(5),
            ..IndexSettings::default()
        };
        let (index, indexer) = index::start(
            &dir.path().join("index"),
            Arc::clone(&store),
            settings,
            shutdown.clone(),
        )
        .unwrap();
        // Several writes and commits: several segments, each with its own ordinals.
        for round in 0..6 {
            let items: Vec<NewInteraction> = (0..50).map(|n| item(round * 50 + n)).collect();
            store.write_interactions(&items).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while index.progress.committed.load(Ordering::Acquire) < store.last_index_sequence() {
                assert!(Instant::now() < deadline, "the index did not catch up");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let searcher = index.reader.searcher();
        assert!(searcher.segment_readers().len() > 1);
        let mailboxes = [
            MailboxId::parse("alice@contoso.com").unwrap(),
            MailboxId::parse("carol@contoso.com").unwrap(),
        ];
        let query = kql::parse("budget AND even").unwrap();
        let expected =
            crate::search::searcher::matching_ids(&searcher, &index.fields, &query, &mailboxes)
                .unwrap();
        assert_eq!(expected.len(), 100);
        let pages = IdPages::new(searcher, &index.fields, &query, &mailboxes).unwrap();
        assert_eq!(pages.count(None).unwrap(), 100);
        assert_eq!(pages.count(Some(expected[41])).unwrap(), 58);
        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let page = pages.page(after, 7).unwrap();
            assert!(page.len() <= 7);
            let Some(last) = page.last() else { break };
            after = Some(*last);
            walked.extend(page);
        }
        assert_eq!(walked, expected);
        // Resuming after any id continues exactly after it.
        assert_eq!(pages.page(Some(expected[41]), 3).unwrap(), expected[42..45]);
        shutdown.cancel();
        indexer.join();
    }
}
