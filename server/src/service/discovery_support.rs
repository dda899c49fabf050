//! Helpers of `DiscoveryService` for searching: parsing and translating queries into errors
//! that name the field, the page cursor of a search, the check that the index is complete,
//! and the query of a case hold.

use std::sync::Arc;

use crate::domain::MailboxId;
use crate::error::Error;
use crate::page_token::{self, PayloadReader};
use crate::search::index::SearchIndex;
use crate::search::kql;
use crate::search::query::QueryError;
use crate::search::searcher::Sort;

pub(super) fn parse_query(text: &str) -> Result<kql::Query, Error> {
    kql::parse(text).map_err(|error| Error::invalid("query", error.to_string()))
}

pub(super) fn query_error(error: QueryError) -> Error {
    match error {
        QueryError::TooManyTerms { .. } | QueryError::TooManyQueryTerms { .. } => {
            Error::invalid("query", error.to_string())
        }
        QueryError::OffsetPastEnd => Error::invalid("page_token", error.to_string()),
        QueryError::Index(reason) => Error::Internal(reason),
    }
}

/// What a search page token is bound to: the case, the query, the mailboxes and the order.
pub(super) fn search_token_context(
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
pub(super) struct SearchCursor {
    pub snapshot: u64,
    pub offset: u64,
    pub total: u64,
}

impl SearchCursor {
    pub(super) fn payload(&self) -> Vec<u8> {
        [self.snapshot, self.offset, self.total]
            .iter()
            .flat_map(|part| part.to_be_bytes())
            .collect()
    }

    pub(super) fn from_payload(payload: &[u8]) -> Result<SearchCursor, Error> {
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

/// The index, unless it is being rebuilt: a search then would silently miss items.
pub(super) fn complete_index(index: &Arc<SearchIndex>) -> Result<Arc<SearchIndex>, Error> {
    if index.is_rebuilding() {
        return Err(Error::Unavailable(
            "the search index is being rebuilt from the store and would give partial results; \
             retry in a minute"
                .into(),
        ));
    }
    Ok(Arc::clone(index))
}

/// What a case hold matches, as one query: its KQL query (if any) and its created range.
/// `location:` is refused: a hold keeps an item wherever it is, and an item's location
/// changes when it moves, so a hold limited by location would let go of what it held.
pub(super) fn hold_query(
    text: &str,
    created_from: Option<chrono::DateTime<chrono::Utc>>,
    created_to: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<kql::Query, Error> {
    fn mentions_location(query: &kql::Query) -> bool {
        match query {
            kql::Query::Location(_) => true,
            kql::Query::And(parts) | kql::Query::Or(parts) => parts.iter().any(mentions_location),
            kql::Query::Not(inner) => mentions_location(inner),
            _ => false,
        }
    }
    let mut parts = Vec::new();
    if !text.trim().is_empty() {
        let parsed = parse_query(text)?;
        if mentions_location(&parsed) {
            return Err(Error::invalid(
                "query",
                "location: has no meaning in a hold query (a hold covers an item wherever it is)",
            ));
        }
        parts.push(parsed);
    }
    if created_from.is_some() || created_to.is_some() {
        parts.push(kql::Query::Created {
            from: created_from.map(|t| t.timestamp_micros()),
            to: created_to.map(|t| t.timestamp_micros()),
        });
    }
    Ok(kql::Query::And(parts))
}

#[cfg(test)]
mod tests {
    use super::*;
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
