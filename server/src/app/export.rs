//! Export of a case search's items (SPEC §5): every matching item in id order, then a trailer
//! with the count and a digest over the items' content hashes. An export is resumable (after
//! the last id received) and produced from async code in bounded chunks: it never holds a
//! thread while it waits for the client.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use ulid::Ulid;

use super::matches::{kql_text, Matches};
use super::search::{complete_index, parse_query};
use super::App;
use super::EDISCOVERY;
use crate::admission::{Admission, Work};
use crate::auth::{Principal, TokenRegistry};
use crate::domain::{InteractionId, StoredInteraction};
use crate::error::Error;
use crate::store::Store;

/// Ids an export or a purge takes from the index at once (16 bytes each).
pub const ID_PAGE: usize = 16_384;
/// Items an export reads from the store at once (each up to a few MiB). With the queue this
/// bounds an open export's memory to `EXPORT_CHUNK + EXPORT_QUEUE` items, and `open_exports`
/// bounds the number of open exports.
const EXPORT_CHUNK: usize = 16;
/// Messages queued between an export's producer and its client.
const EXPORT_QUEUE: usize = 4;

/// What to export: the items of a case matching a query.
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    pub case_id: String,
    pub query: String,
    /// A subset of the case's custodians; empty: all of them.
    pub mailboxes: Vec<String>,
    /// Resume after this id (the last one received); empty: from the start.
    pub after_id: String,
}

/// One message of an export.
#[derive(Debug)]
pub enum ExportMessage {
    Item(Box<StoredInteraction>),
    /// The last message: how many items were sent, and the SHA-256 (hex) over their content
    /// hashes (hex, one per line) in the order sent.
    Trailer {
        count: u64,
        digest: String,
    },
}

/// An export under way: the number of items it will send (unless some are destroyed
/// meanwhile) and its messages. A stream that ends with an error ended early; the error
/// says why and how to resume.
pub struct Export {
    pub total: u64,
    pub messages: Pin<Box<dyn Stream<Item = Result<ExportMessage, Error>> + Send>>,
}

impl App {
    pub async fn export(
        &self,
        principal: &Principal,
        request: ExportRequest,
    ) -> Result<Export, Error> {
        self.authorize(principal, "Export", EDISCOVERY).await?;
        let case = self
            .member_case(principal, "Export", &request.case_id)
            .await?;
        case.require_open()?;
        let query = parse_query(&request.query)?;
        let mailboxes = case.search_scope(&request.mailboxes)?;
        let after: Option<InteractionId> = match request.after_id.as_str() {
            "" => None,
            text => Some(
                text.parse()
                    .map_err(|reason: String| Error::invalid("after_id", reason))?,
            ),
        };
        complete_index(&self.index)?;
        // The principal's place is taken before anything is read, and kept until the
        // producer ends (trailer sent, client gone, idle timeout or shutdown).
        let slot = self.admission.admit(Work::Export, &principal.name)?;
        let index = Arc::clone(&self.index);
        let fanout = self.fanout.clone();
        let query_text = kql_text(&request.query);
        let (pages, total) = self
            .admission
            .export_read(move || {
                let pages =
                    Matches::open(&index, fanout.as_ref(), &query_text, &query, &mailboxes)?;
                let total = pages.count(after)?;
                Ok((pages, total))
            })
            .await?;
        self.audit_done(
            principal,
            "Export",
            case.id.to_string(),
            json!({
                "query": request.query,
                "mailboxes": request.mailboxes,
                "after_id": request.after_id,
            }),
            format!("started: {total} items"),
        )
        .await?;
        // A small queue: the producer waits for the client (never longer than the idle
        // timeout), so memory per export stays bounded and no thread waits on a client.
        let (sender, receiver) = tokio::sync::mpsc::channel(EXPORT_QUEUE);
        let (end_sender, end) = tokio::sync::oneshot::channel::<Error>();
        let producer = ExportProducer {
            pages: Arc::new(pages),
            store: Arc::clone(&self.store),
            admission: Arc::clone(&self.admission),
            sender,
            idle_timeout: Duration::from_secs(self.concurrency.export_idle_timeout_seconds),
            shutdown: self.shutdown.clone(),
            tokens: Arc::clone(&self.tokens),
            token_sha256: principal.token_sha256,
            case_id: case.id,
            principal: principal.clone(),
        };
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(Some(error)) = producer.run(after).await {
                let _ = end_sender.send(error);
            }
        });
        // After the queued messages, a producer that ended early adds its error.
        let ending =
            futures::stream::once(end).filter_map(|ended| async move { ended.ok().map(Err) });
        Ok(Export {
            total,
            messages: Box::pin(ReceiverStream::new(receiver).chain(ending)),
        })
    }
}

/// Produces one export from async code: a page of ids from the index, then the items in small
/// chunks, each read on a short blocking call. It never holds a thread while it waits for the
/// client, and gives up when the client reads nothing for `idle_timeout`.
struct ExportProducer {
    pages: Arc<Matches>,
    store: Arc<dyn Store>,
    admission: Arc<Admission>,
    sender: tokio::sync::mpsc::Sender<Result<ExportMessage, Error>>,
    idle_timeout: Duration,
    shutdown: CancellationToken,
    /// The caller's token, checked again before each chunk: a revoked token (or one that
    /// lost its eDiscovery role) stops exporting at once, not when the stream ends.
    tokens: Arc<TokenRegistry>,
    token_sha256: [u8; 32],
    /// The case exported and the caller: before each chunk the case is read again, so that a
    /// caller removed from the case, or a case closed meanwhile, stops the export.
    case_id: Ulid,
    principal: Principal,
}

impl ExportProducer {
    /// Streams every item after `after`, then the trailer. `Err(None)`: the client went away;
    /// `Err(Some(error))`: the export ended early and the client is told why.
    async fn run(self, mut after: Option<InteractionId>) -> Result<(), Option<Error>> {
        let mut digest = Sha256::new();
        let mut count = 0u64;
        loop {
            let pages = Arc::clone(&self.pages);
            let ids = self
                .admission
                .export_read(move || pages.page(after, ID_PAGE))
                .await
                .map_err(Some)?;
            let Some(&last) = ids.last() else { break };
            after = Some(last);
            for chunk in ids.chunks(EXPORT_CHUNK) {
                if !self.tokens.is_current(&self.token_sha256, EDISCOVERY) {
                    return Err(Some(Error::PermissionDenied(
                        "the token of this export was revoked or lost its ediscovery role".into(),
                    )));
                }
                let chunk = chunk.to_vec();
                let store = Arc::clone(&self.store);
                let (case_id, principal) = (self.case_id, self.principal.clone());
                let items = self
                    .admission
                    .export_read(move || {
                        let case = store
                            .get_case(case_id)?
                            .ok_or_else(|| Error::NotFound(format!("no case with id {case_id}")))?;
                        if !case.is_accessible_by(&principal) {
                            return Err(Error::PermissionDenied(format!(
                                "{} is no longer a member of case {case_id}",
                                principal.name
                            )));
                        }
                        case.require_open()?;
                        Ok(store.get_interactions(&chunk)?)
                    })
                    .await
                    .map_err(Some)?;
                // An item destroyed since the search ran is simply not exported.
                for item in items.into_iter().flatten() {
                    digest.update(hex::encode(item.content_sha256).as_bytes());
                    digest.update(b"\n");
                    count += 1;
                    self.deliver(ExportMessage::Item(Box::new(item))).await?;
                }
            }
            if ids.len() < ID_PAGE {
                break;
            }
        }
        self.deliver(ExportMessage::Trailer {
            count,
            digest: hex::encode(digest.finalize()),
        })
        .await
    }

    async fn deliver(&self, message: ExportMessage) -> Result<(), Option<Error>> {
        tokio::select! {
            sent = tokio::time::timeout(self.idle_timeout, self.sender.send(Ok(message))) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(None), // The client went away.
                Err(_) => {
                    metrics::counter!("holdfast_export_idle_timeouts_total").increment(1);
                    tracing::info!(
                        idle_seconds = self.idle_timeout.as_secs(),
                        "export stream ended: the client read nothing"
                    );
                    Err(Some(Error::DeadlineExceeded(format!(
                        "the export was ended after {} s without the client reading; resume \
                         it with after_id",
                        self.idle_timeout.as_secs()
                    ))))
                }
            },
            _ = self.shutdown.cancelled() => Err(Some(Error::Unavailable(
                "the server is shutting down; resume the export with after_id".into(),
            ))),
        }
    }
}
