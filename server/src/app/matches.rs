//! Every item a query matches, walked in id order one bounded page at a time: exports,
//! purges and the counts of case holds. On one node (and on a cluster where every node has
//! a full index) the pages come from one index snapshot. On a cluster searching splits they
//! come from the leaves (`search::fanout`): each node reads the splits of its own
//! partitions, so no node needs every split on its disk.

use std::sync::{Arc, Mutex};

use super::search::{query_error, searcher_of, splits_unavailable};
use super::App;
use crate::domain::{InteractionId, MailboxId};
use crate::error::Error;
use crate::search::fanout::{FanOut, QueryText, LEAF_TIMEOUT};
use crate::search::id_pages::IdPages;
use crate::search::index::{IndexError, SearchIndex};
use crate::search::kql;
use crate::search::searcher;
use crate::search::splits::{IdPage, Plan};

/// How often a walk over splits plans again when a merge retired splits it was reading.
const REPLANS: usize = 3;

/// The matches of one query over some mailboxes.
pub(crate) enum Matches {
    /// An index snapshot, pinned for the whole walk.
    Index(IdPages),
    /// The published splits of the mailboxes' partitions, from the leaves.
    Splits(Box<SplitMatches>),
}

pub(crate) struct SplitMatches {
    fanout: Arc<FanOut>,
    /// Planned when the walk starts; planned again (from the page under way) when a merge
    /// has retired splits of it, as a client resuming after the last id would.
    plan: Mutex<Arc<Plan>>,
    query_text: QueryText,
    query: kql::Query,
    mailboxes: Vec<MailboxId>,
}

impl Matches {
    /// Opens the matches of `query` (parsed from `query_text`) over `mailboxes`. Blocking:
    /// reads the catalog of splits or opens an index snapshot. A query no index could run is
    /// refused here.
    pub(crate) fn open(
        index: &SearchIndex,
        fanout: Option<&Arc<FanOut>>,
        query_text: &QueryText,
        query: &kql::Query,
        mailboxes: &[MailboxId],
    ) -> Result<Matches, Error> {
        match fanout {
            None => {
                let searcher = searcher_of(index)?;
                let pages =
                    IdPages::new(searcher, &index.fields, query, mailboxes).map_err(query_error)?;
                Ok(Matches::Index(pages))
            }
            Some(fanout) => {
                searcher::check_query(&index.reader.searcher(), &index.fields, query)
                    .map_err(query_error)?;
                let plan = fanout
                    .splits()
                    .plan(mailboxes, query)
                    .map_err(splits_unavailable)?;
                Ok(Matches::Splits(Box::new(SplitMatches {
                    fanout: Arc::clone(fanout),
                    plan: Mutex::new(Arc::new(plan)),
                    query_text: query_text.clone(),
                    query: query.clone(),
                    mailboxes: mailboxes.to_vec(),
                })))
            }
        }
    }

    /// Refuses a query the index cannot run: one whose prefixes match too many words. An
    /// index snapshot checked it when opened; splits are checked by their leaves.
    pub(crate) fn check(&self) -> Result<(), Error> {
        match self {
            Matches::Index(_) => Ok(()),
            Matches::Splits(splits) => splits.ids(None, 0, false).map(|_| ()),
        }
    }

    /// How many matches have an id greater than `after` (all of them: `None`).
    pub(crate) fn count(&self, after: Option<InteractionId>) -> Result<u64, Error> {
        match self {
            Matches::Index(pages) => pages.count(after).map_err(query_error),
            Matches::Splits(splits) => splits.ids(after, 0, true).map(|page| page.count),
        }
    }

    /// The (at most) `limit` smallest matching ids greater than `after`, in order.
    pub(crate) fn page(
        &self,
        after: Option<InteractionId>,
        limit: usize,
    ) -> Result<Vec<InteractionId>, Error> {
        match self {
            Matches::Index(pages) => pages.page(after, limit).map_err(query_error),
            Matches::Splits(splits) => splits.ids(after, limit, false).map(|page| page.ids),
        }
    }
}

impl SplitMatches {
    fn ids(
        &self,
        after: Option<InteractionId>,
        limit: usize,
        count: bool,
    ) -> Result<IdPage, Error> {
        let mut replans = 0;
        loop {
            let plan = Arc::clone(&self.plan.lock().unwrap_or_else(|e| e.into_inner()));
            match self.fanout.ids(
                &plan,
                &self.query_text,
                &self.query,
                &self.mailboxes,
                None,
                after,
                limit,
                count,
                LEAF_TIMEOUT,
            ) {
                Err(IndexError::SplitGone(_)) if replans < REPLANS => {
                    replans += 1;
                    metrics::counter!("holdfast_split_match_replans_total").increment(1);
                    let plan = self
                        .fanout
                        .splits()
                        .plan(&self.mailboxes, &self.query)
                        .map_err(splits_unavailable)?;
                    *self.plan.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(plan);
                }
                Err(IndexError::SplitGone(_)) => {
                    return Err(Error::Unavailable(
                        "the index splits were merged away several times while this was read; \
                         retry"
                            .into(),
                    ))
                }
                answer => return answer.map_err(splits_unavailable),
            }
        }
    }
}

impl App {
    /// A leaf's share of walking every match, asked for by another node of the cluster
    /// (`search::fanout`): the `limit` smallest matching ids after `after` in `splits`, and
    /// (with `count`) how many match after `after`.
    #[allow(clippy::too_many_arguments)]
    pub async fn leaf_ids(
        &self,
        splits: Vec<String>,
        dead: Vec<(i16, InteractionId, u64)>,
        query: &QueryText,
        mailboxes: Vec<MailboxId>,
        among: Option<Vec<InteractionId>>,
        after: Option<InteractionId>,
        limit: usize,
        count: bool,
    ) -> Result<IdPage, Error> {
        let Some(fanout) = self.fanout.clone() else {
            return Err(Error::FailedPrecondition(
                "this node does not search splits".into(),
            ));
        };
        let query = parse_query_text(query)?;
        self.admission
            .leaf_search(move || {
                let search = fanout.splits();
                let plan = Plan {
                    splits: search.named_splits(&splits).map_err(splits_unavailable)?,
                    dead,
                };
                search
                    .leaf_ids(
                        &plan,
                        &query,
                        &mailboxes,
                        among.as_deref(),
                        after,
                        limit,
                        count,
                    )
                    .map_err(splits_unavailable)
            })
            .await
    }
}

/// The query a leaf is sent, parsed as the root parsed it: KQL, or a case hold's query with
/// its created range (`lifecycle::case_hold_query`).
pub(crate) fn parse_query_text(query: &QueryText) -> Result<kql::Query, Error> {
    match query.case_hold {
        None => super::search::parse_query(&query.text),
        Some((from, to)) => {
            let at = |micros: i64| {
                chrono::DateTime::from_timestamp_micros(micros)
                    .ok_or_else(|| Error::invalid("created", "out of range"))
            };
            crate::lifecycle::case_hold_query(
                &query.text,
                from.map(at).transpose()?,
                to.map(at).transpose()?,
            )
        }
    }
}

/// A KQL query as leaves are sent it.
pub(crate) fn kql_text(text: &str) -> QueryText {
    QueryText {
        text: text.to_string(),
        case_hold: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::case_hold_text;

    /// A leaf evaluates exactly the query the root does: a case hold's text with its
    /// created range (bounds with nanoseconds round up on both sides), or plain KQL.
    #[test]
    fn a_leaf_parses_the_query_the_root_parsed() {
        let at = |seconds: i64, nanos: u32| chrono::DateTime::from_timestamp(seconds, nanos);
        for (text, from, to) in [
            ("budget", at(1_700_000_000, 1_500), at(1_700_003_600, 0)),
            ("", None, at(1_700_000_000, 999_999_999)),
            ("budget OR \"year end\"", at(1_600_000_000, 7), None),
            ("", None, None),
        ] {
            let (sent, parsed) = case_hold_text(text, from, to).unwrap();
            assert_eq!(parse_query_text(&sent).unwrap(), parsed, "{text:?}");
        }
        let plain = kql_text("budget AND NOT app:Teams");
        assert_eq!(
            parse_query_text(&plain).unwrap(),
            kql::parse("budget AND NOT app:Teams").unwrap()
        );
        // A hold's query may not name a location; a leaf refuses it as the root does.
        let located = QueryText {
            text: "location:active".into(),
            case_hold: Some((None, None)),
        };
        assert!(parse_query_text(&located).is_err());
        let far = QueryText {
            text: String::new(),
            case_hold: Some((Some(i64::MAX), None)),
        };
        assert!(parse_query_text(&far).is_err());
    }
}
