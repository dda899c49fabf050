//! KQL search within a case (SPEC §5): one page of hits with snippets and counts, paged on a
//! pinned index snapshot through authenticated page tokens. Also the helpers every search
//! shares: parsing and translating queries into errors that name the field, the page cursor,
//! the check that the index is complete, and the query of a case hold.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::EDISCOVERY;
use super::{now, App};
use crate::admission::Work;
use crate::auth::Principal;
use crate::domain::{InteractionId, MailboxId};
use crate::error::Error;
use crate::page_token::{self, PayloadReader, TokenKind};
use crate::search::index::SearchIndex;
use crate::search::kql::{self, TextField};
use crate::search::query::{Highlighter, QueryError};
use crate::search::searcher::{self, Sort};
use crate::search::splits::Plan;

/// How deep a search fanned out over cluster nodes pages (`search = "splits"`).
pub const MAX_FANNED_OUT_DEPTH: usize = 100_000;

/// Hits per page when the caller does not say.
pub const DEFAULT_SEARCH_PAGE: usize = 50;

/// A search in a case.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub case_id: String,
    pub query: String,
    /// A subset of the case's custodians; empty: all of them.
    pub mailboxes: Vec<String>,
    pub sort: Sort,
    /// 0: the default (`DEFAULT_SEARCH_PAGE`); at most 1,000.
    pub page_size: u32,
    /// Empty for the first page, else the `next_page_token` of the page before.
    pub page_token: String,
}

/// Where an item is: where its user sees it, or in the holds area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitLocation {
    Active,
    HoldsArea,
}

/// A passage of a hit's prompt or response, with the byte ranges that matched.
#[derive(Debug, Clone)]
pub struct Snippet {
    /// "prompt" or "response".
    pub field: &'static str,
    pub text: String,
    pub highlights: Vec<(usize, usize)>,
}

#[derive(Debug, Clone)]
pub struct SearchHit {
    pub id: InteractionId,
    pub mailbox_id: MailboxId,
    pub thread_id: String,
    pub app: String,
    pub created_at: DateTime<Utc>,
    pub location: HitLocation,
    pub score: f32,
    pub snippets: Vec<Snippet>,
}

/// One page of a search, with the totals of the whole search.
#[derive(Debug, Clone)]
pub struct SearchPage {
    pub hits: Vec<SearchHit>,
    pub total: u64,
    pub counts_by_mailbox: BTreeMap<String, u64>,
    pub counts_by_app: BTreeMap<String, u64>,
    pub counts_by_location: BTreeMap<String, u64>,
    /// Empty on the last page.
    pub next_page_token: String,
}

impl App {
    pub async fn search(
        &self,
        principal: &Principal,
        request: SearchRequest,
    ) -> Result<SearchPage, Error> {
        self.authorize(principal, "Search", EDISCOVERY).await?;
        let case = self
            .member_case(principal, "Search", &request.case_id)
            .await?;
        case.require_open()?;
        let query = parse_query(&request.query)?;
        let mailboxes = case.search_scope(&request.mailboxes)?;
        let sort = request.sort;
        let page_size = match request.page_size {
            0 => DEFAULT_SEARCH_PAGE,
            1..=1000 => request.page_size as usize,
            _ => return Err(Error::invalid("page_size", "must be at most 1000")),
        };
        let token_context =
            search_token_context(&request.case_id, &request.query, &mailboxes, sort);
        let index = complete_index(&self.index)?;
        // The first page runs on the newest snapshot, pinned below only if there is a next
        // page; later pages on the snapshot their token names.
        let (pinned, offset, snapshot) = if request.page_token.is_empty() {
            let snapshot = match &self.fanout {
                Some(fanout) => {
                    // A query no index could run is refused here, before any leaf (one whose
                    // prefixes match too many words of the splits is refused by a leaf).
                    searcher::check_query(&index.reader.searcher(), &index.fields, &query)
                        .map_err(query_error)?;
                    let plan = crate::store::cluster::off_async(|| {
                        fanout.splits().plan(&mailboxes, &query)
                    })
                    .map_err(splits_unavailable)?;
                    Snapshot::Plan(Arc::new(plan))
                }
                None => Snapshot::Index(searcher_of(&index)?),
            };
            (None, 0, snapshot)
        } else {
            let payload = self.page_tokens.open(
                TokenKind::Search,
                token_context,
                &request.page_token,
                now(),
            )?;
            let cursor = SearchCursor::from_payload(&payload)?;
            let snapshot = match &self.fanout {
                Some(fanout) => self
                    .pinned_plan(fanout, &principal.name, cursor.snapshot)
                    .await?
                    .map(Snapshot::Plan),
                None => self.snapshots.get(cursor.snapshot).map(Snapshot::Index),
            }
            .ok_or_else(|| {
                Error::FailedPrecondition(
                    "the page token's snapshot has expired; run the search again".into(),
                )
            })?;
            // Bounded before tantivy sees it: never past this search's total on the snapshot.
            if cursor.total > snapshot.num_docs() {
                return Err(Error::invalid(
                    "page_token",
                    "starts past the end of its results",
                ));
            }
            (Some(cursor.snapshot), cursor.offset as usize, snapshot)
        };
        // Every leaf sends its best `offset + page_size` hits: deep pages are bounded (the
        // last page is cut short at the bound, and has no next page).
        let depth = match snapshot {
            Snapshot::Plan(_) => MAX_FANNED_OUT_DEPTH,
            Snapshot::Index(_) => usize::MAX,
        };
        if offset >= depth {
            return Err(Error::invalid(
                "page_token",
                format!(
                    "a search pages through its first {depth} hits; narrow the query, or \
                     export the results"
                ),
            ));
        }
        let page_size = page_size.min(depth - offset);
        let pinnable = snapshot.clone();
        let fanout = self.fanout.clone();
        let query_text = request.query.clone();
        let store = Arc::clone(&self.store);
        let highlighter = Highlighter::new(&query);
        let search_query = query.clone();
        let slot = self.admission.admit(Work::Search, &principal.name)?;
        let (results, items) = self
            .admission
            .search(slot, move || {
                let results = match (&snapshot, &fanout) {
                    (Snapshot::Plan(plan), Some(fanout)) => fanout
                        .search(
                            plan,
                            &query_text,
                            &search_query,
                            &mailboxes,
                            sort,
                            offset,
                            page_size,
                        )
                        .map_err(splits_unavailable)?,
                    (Snapshot::Index(searcher), _) => searcher::execute(
                        searcher,
                        &index.fields,
                        &search_query,
                        &mailboxes,
                        sort,
                        offset,
                        page_size,
                    )
                    .map_err(query_error)?,
                    (Snapshot::Plan(_), None) => {
                        return Err(Error::Internal("a split plan without splits".into()))
                    }
                };
                let ids: Vec<InteractionId> = results.hits.iter().map(|hit| hit.id).collect();
                let items = store.get_interactions(&ids)?;
                Ok((results, items))
            })
            .await?;
        let mut hits = Vec::with_capacity(items.len());
        for (hit, item) in results.hits.iter().zip(items) {
            // An item destroyed since the snapshot was taken is simply left out.
            let Some(item) = item else { continue };
            let content = &item.content;
            hits.push(SearchHit {
                id: item.id,
                mailbox_id: content.mailbox_id.clone(),
                thread_id: content.thread_id.clone(),
                app: content.app.clone(),
                created_at: content.created_at,
                location: if item.location.is_visible_to_user() {
                    HitLocation::Active
                } else {
                    HitLocation::HoldsArea
                },
                score: hit.score,
                snippets: snippets(&highlighter, &content.prompt, &content.response),
            });
        }
        let next_offset = offset + results.hits.len();
        let next_page_token = if (next_offset as u64) < results.total
            && !results.hits.is_empty()
            && next_offset < depth
        {
            let snapshot = match (pinned, pinnable) {
                (Some(pinned), _) => pinned,
                (None, Snapshot::Index(searcher)) => self.snapshots.pin(&principal.name, searcher),
                (None, Snapshot::Plan(plan)) => self.pin_plan(&principal.name, plan).await,
            };
            let cursor = SearchCursor {
                snapshot,
                offset: next_offset as u64,
                total: results.total,
            };
            self.page_tokens
                .seal(TokenKind::Search, token_context, &cursor.payload(), now())
        } else {
            String::new()
        };
        self.audit_done(
            principal,
            "Search",
            case.id.to_string(),
            json!({
                "query": request.query,
                "mailboxes": request.mailboxes,
                "sort": format!("{sort:?}").to_lowercase(),
                "offset": offset,
            }),
            format!("ok: {} hits", results.total),
        )
        .await?;
        Ok(SearchPage {
            hits,
            total: results.total,
            counts_by_mailbox: results.by_mailbox,
            counts_by_app: results.by_app,
            counts_by_location: results.by_location,
            next_page_token,
        })
    }
}

impl App {
    /// Pins a search's plan here and in PostgreSQL, so that any node answers its later
    /// pages. Answers the plan's id. A plan the database could not take still pages on
    /// this node.
    async fn pin_plan(&self, owner: &str, plan: Arc<Plan>) -> u64 {
        let id = rand::random::<u64>();
        self.pinned_plans.pin_as(id, owner, Arc::clone(&plan));
        if let Some(fanout) = self.fanout.clone() {
            let (owner, max_age) = (owner.to_string(), self.pinned_plans.max_age());
            let saved = crate::admission::run_blocking(move || {
                fanout
                    .pin(id, &owner, &plan, max_age, searcher::MAX_PINNED_PER_OWNER)
                    .map_err(|error| Error::Unavailable(error.to_string()))
            })
            .await;
            if let Err(error) = saved {
                metrics::counter!("holdfast_search_plans_unshared_total").increment(1);
                tracing::warn!(%error, "a search plan was not saved for the other nodes; its \
                    next pages work on this node only");
            }
        }
        id
    }

    /// The plan pinned as `id`: here, or else (pinned by another node) from PostgreSQL,
    /// then pinned here too.
    async fn pinned_plan(
        &self,
        fanout: &Arc<crate::search::fanout::FanOut>,
        owner: &str,
        id: u64,
    ) -> Result<Option<Arc<Plan>>, Error> {
        if let Some(plan) = self.pinned_plans.get(id) {
            return Ok(Some(plan));
        }
        let fanout = Arc::clone(fanout);
        let max_age = self.pinned_plans.max_age();
        let loaded = crate::admission::run_blocking(move || {
            fanout.pinned(id, max_age).map_err(splits_unavailable)
        })
        .await?;
        Ok(loaded.map(|plan| {
            let plan = Arc::new(plan);
            metrics::counter!("holdfast_search_plans_loaded_total").increment(1);
            self.pinned_plans.pin_as(id, owner, Arc::clone(&plan));
            plan
        }))
    }
}

/// What the pages of a search read: an index snapshot, or (a cluster searching splits) the
/// set of splits its first page planned.
#[derive(Clone)]
enum Snapshot {
    Index(tantivy::Searcher),
    Plan(Arc<Plan>),
}

impl Snapshot {
    fn num_docs(&self) -> u64 {
        match self {
            Snapshot::Index(searcher) => searcher.num_docs(),
            Snapshot::Plan(plan) => plan.num_docs(),
        }
    }
}

pub(crate) fn splits_unavailable(error: crate::search::index::IndexError) -> Error {
    use crate::search::index::IndexError;
    match error {
        IndexError::Query(error) => return query_error(error),
        IndexError::SplitGone(_) => {
            return Error::FailedPrecondition(
                "the search's index splits were merged away since its first page; run the \
                 search again"
                    .into(),
            )
        }
        _ => {}
    }
    tracing::warn!(%error, "cannot search the splits");
    Error::Unavailable(format!(
        "the search splits cannot be read now ({error}); retry"
    ))
}

impl App {
    /// A leaf search asked for by another node of the cluster (`search::fanout`): the best
    /// `top` hits of `query` over `mailboxes` in `splits`, with totals and counts.
    pub async fn leaf_search(
        &self,
        ids: Vec<String>,
        dead: Vec<(i16, InteractionId, u64)>,
        query: &str,
        mailboxes: Vec<MailboxId>,
        sort: Sort,
        top: usize,
    ) -> Result<searcher::Results, Error> {
        let Some(fanout) = self.fanout.clone() else {
            return Err(Error::FailedPrecondition(
                "this node does not search splits".into(),
            ));
        };
        let query = parse_query(query)?;
        self.admission
            .leaf_search(move || {
                let search = fanout.splits();
                let plan = Plan {
                    splits: search.named_splits(&ids).map_err(splits_unavailable)?,
                    dead,
                };
                search
                    .leaf(&plan, &query, &mailboxes, sort, top)
                    .map_err(splits_unavailable)
            })
            .await
    }
}

fn snippets(highlighter: &Highlighter, prompt: &str, response: &str) -> Vec<Snippet> {
    [
        ("prompt", TextField::Prompt, prompt),
        ("response", TextField::Response, response),
    ]
    .into_iter()
    .filter_map(|(name, field, text)| {
        highlighter
            .snippet(field, text)
            .map(|(text, highlights)| Snippet {
                field: name,
                text,
                highlights,
            })
    })
    .collect()
}

pub(crate) fn parse_query(text: &str) -> Result<kql::Query, Error> {
    kql::parse(text).map_err(|error| Error::invalid("query", error.to_string()))
}

pub(crate) fn query_error(error: QueryError) -> Error {
    match error {
        QueryError::TooManyTerms { .. } | QueryError::TooManyQueryTerms { .. } => {
            Error::invalid("query", error.to_string())
        }
        QueryError::OffsetPastEnd => Error::invalid("page_token", error.to_string()),
        QueryError::Index(reason) => Error::Internal(reason),
    }
}

/// What a search page token is bound to: the case, the query, the mailboxes and the order.
pub(crate) fn search_token_context(
    case_id: &str,
    query: &str,
    mailboxes: &[MailboxId],
    sort: Sort,
) -> [u8; 16] {
    let mut parts: Vec<&[u8]> = vec![case_id.as_bytes(), query.as_bytes()];
    let sort = format!("{sort:?}");
    parts.push(sort.as_bytes());
    parts.extend(mailboxes.iter().map(|m| m.as_str().as_bytes()));
    page_token::context(&parts)
}

/// Where the next page of a search starts: the pinned snapshot, the offset, and the total of
/// the search on that snapshot (the offset is never past it).
pub(crate) struct SearchCursor {
    pub snapshot: u64,
    pub offset: u64,
    pub total: u64,
}

impl SearchCursor {
    pub(crate) fn payload(&self) -> Vec<u8> {
        [self.snapshot, self.offset, self.total]
            .iter()
            .flat_map(|part| part.to_be_bytes())
            .collect()
    }

    pub(crate) fn from_payload(payload: &[u8]) -> Result<SearchCursor, Error> {
        let mut reader = PayloadReader::new(payload);
        let cursor = SearchCursor {
            snapshot: reader.u64()?,
            offset: reader.u64()?,
            total: reader.u64()?,
        };
        reader.finish()?;
        if cursor.offset > cursor.total {
            return Err(Error::invalid(
                "page_token",
                "starts past the end of its results",
            ));
        }
        Ok(cursor)
    }
}

/// A searcher over everything searchable now; an index that cannot be read (cluster splits
/// out of reach) answers UNAVAILABLE.
pub(crate) fn searcher_of(index: &SearchIndex) -> Result<tantivy::Searcher, Error> {
    // Splits may be downloaded and composed: never on an async worker thread.
    let searcher = if index.splits.is_some() {
        crate::store::cluster::off_async(|| index.searcher())
    } else {
        index.searcher()
    };
    searcher.map_err(|error| {
        tracing::warn!(%error, "cannot open the search index");
        Error::Unavailable(format!(
            "the search index cannot be read now ({error}); retry"
        ))
    })
}

/// The index, unless it is being rebuilt: a search then would silently miss items.
pub(crate) fn complete_index(index: &Arc<SearchIndex>) -> Result<Arc<SearchIndex>, Error> {
    if index.is_rebuilding() {
        return Err(Error::Unavailable(
            "the search index is being rebuilt from the store and would give partial results; \
             retry in a minute"
                .into(),
        ));
    }
    Ok(Arc::clone(index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::case_hold_query as hold_query;
    use crate::search::index::{self, IndexSettings};
    use crate::store::{RocksStore, Store};
    use std::sync::atomic::Ordering;

    #[test]
    fn a_rebuilding_index_answers_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(&dir.path().join("store")).unwrap());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (index, indexer) = index::start(
            &dir.path().join("index"),
            store,
            IndexSettings::default(),
            shutdown.clone(),
        )
        .unwrap();
        index.progress.rebuilding.store(true, Ordering::Release);
        let error = complete_index(&index)
            .err()
            .expect("refused while rebuilding");
        let status = tonic::Status::from(error);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("retry"), "{}", status.message());
        index.progress.rebuilding.store(false, Ordering::Release);
        assert!(complete_index(&index).is_ok());
        shutdown.cancel();
        indexer.join();
    }

    #[test]
    fn a_hold_query_may_not_name_a_location() {
        for text in [
            "location:active",
            "budget AND location:holds",
            "budget OR NOT location:active",
            "(a (b OR location:holds))",
        ] {
            let error = hold_query(text, None, None).unwrap_err();
            assert!(error.to_string().contains("location:"), "{text}: {error}");
            assert!(error.to_string().contains("query"), "{text}: {error}");
        }
        assert!(hold_query("budget", None, None).is_ok());
        assert!(hold_query("", None, None).is_ok());
        assert!(hold_query("budget AND (", None, None).is_err());
    }

    #[test]
    fn a_search_cursor_never_starts_past_its_total() {
        let cursor = SearchCursor {
            snapshot: 7,
            offset: 50,
            total: 60,
        };
        let back = SearchCursor::from_payload(&cursor.payload()).unwrap();
        assert_eq!((back.snapshot, back.offset, back.total), (7, 50, 60));
        let past = SearchCursor {
            snapshot: 7,
            offset: 1 << 40,
            total: 60,
        };
        assert!(SearchCursor::from_payload(&past.payload()).is_err());
        assert!(SearchCursor::from_payload(&cursor.payload()[..16]).is_err());
    }
}
