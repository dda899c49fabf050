//! A batching ingest helper for assistant backends: callers submit single interactions; the
//! helper groups them into batches (by count, bytes and a short linger), keeps a bounded
//! number of batches in flight, and retries failed batches with capped exponential backoff.
//! A retry resends the same items with the same `client_key`s, so an item the server stored
//! before the connection dropped comes back as DUPLICATE with its original id: a retry never
//! stores anything twice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::{pb, ClientError, HoldfastClient};

#[derive(Debug, Clone)]
pub struct IngesterOptions {
    /// Most items per request (the server accepts up to 1,000).
    pub batch_size: usize,
    /// Most encoded bytes per request (the server accepts up to 16 MiB).
    pub batch_bytes: usize,
    /// How long a partial batch waits for more items.
    pub linger: Duration,
    /// Items waiting to be batched; `submit` waits when this many are queued.
    pub max_buffered: usize,
    /// Requests in flight at once.
    pub max_in_flight: usize,
    /// Attempts per batch, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for IngesterOptions {
    fn default() -> Self {
        IngesterOptions {
            batch_size: 500,
            batch_bytes: 8 << 20,
            linger: Duration::from_millis(5),
            max_buffered: 10_000,
            max_in_flight: 4,
            max_attempts: 8,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Totals over everything the helper sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestSummary {
    pub created: u64,
    pub duplicate: u64,
    pub rejected: u64,
    /// Items whose batch failed for good (after retries, or with a non-retryable error).
    pub failed: u64,
    /// Requests sent again after a retryable error.
    pub retries: u64,
}

type ItemResult = Result<pb::IngestResult, ClientError>;

struct Pending {
    item: pb::InteractionInput,
    reply: oneshot::Sender<ItemResult>,
}

/// The answer for one submitted item.
pub struct Ticket(oneshot::Receiver<ItemResult>);

impl Ticket {
    pub async fn wait(self) -> ItemResult {
        self.0.await.map_err(|_| ClientError::IngesterStopped)?
    }
}

pub struct BatchingIngester {
    sender: mpsc::Sender<Pending>,
    task: tokio::task::JoinHandle<()>,
    summary: Arc<Mutex<IngestSummary>>,
}

impl BatchingIngester {
    pub fn start(client: HoldfastClient, options: IngesterOptions) -> BatchingIngester {
        let (sender, receiver) = mpsc::channel(options.max_buffered.max(1));
        let summary = Arc::new(Mutex::new(IngestSummary::default()));
        let task = tokio::spawn(run(client, options, receiver, Arc::clone(&summary)));
        BatchingIngester {
            sender,
            task,
            summary,
        }
    }

    /// Queues one item; waits while the buffer is full. The ticket resolves when the server
    /// has answered for the item.
    pub async fn submit(&self, item: pb::InteractionInput) -> Result<Ticket, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Pending { item, reply })
            .await
            .map_err(|_| ClientError::IngesterStopped)?;
        Ok(Ticket(answer))
    }

    /// Sends what is buffered, waits for every answer and returns the totals.
    pub async fn finish(self) -> IngestSummary {
        drop(self.sender);
        let _ = self.task.await;
        let summary = self.summary.lock().unwrap_or_else(|e| e.into_inner());
        summary.clone()
    }
}

async fn run(
    client: HoldfastClient,
    options: IngesterOptions,
    mut receiver: mpsc::Receiver<Pending>,
    summary: Arc<Mutex<IngestSummary>>,
) {
    let in_flight = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
    let mut requests = JoinSet::new();
    let mut closed = false;
    while !closed {
        let Some(first) = receiver.recv().await else {
            break;
        };
        let mut bytes = first.item.encoded_len();
        let mut batch = vec![first];
        let deadline = Instant::now() + options.linger;
        while batch.len() < options.batch_size && bytes < options.batch_bytes {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(pending)) => {
                    bytes += pending.item.encoded_len();
                    batch.push(pending);
                }
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (client, options, summary) = (client.clone(), options.clone(), Arc::clone(&summary));
        requests.spawn(async move {
            send_with_retries(&client, &options, batch, &summary).await;
            drop(permit);
        });
        // Reap finished requests so the set does not grow.
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
}

async fn send_with_retries(
    client: &HoldfastClient,
    options: &IngesterOptions,
    batch: Vec<Pending>,
    summary: &Mutex<IngestSummary>,
) {
    let items: Vec<pb::InteractionInput> = batch.iter().map(|p| p.item.clone()).collect();
    let mut backoff = options.initial_backoff;
    let mut attempt = 1;
    let outcome = loop {
        match client.ingest(items.clone()).await {
            Ok(response) => break Ok(response),
            Err(error) if error.is_retryable() && attempt < options.max_attempts => {
                summary.lock().unwrap_or_else(|e| e.into_inner()).retries += 1;
                // Full jitter keeps many clients from retrying in step.
                let sleep = backoff.mul_f64(rand::random::<f64>().max(0.1));
                tokio::time::sleep(sleep).await;
                backoff = (backoff * 2).min(options.max_backoff);
                attempt += 1;
            }
            Err(error) => break Err(error),
        }
    };
    let mut summary = summary.lock().unwrap_or_else(|e| e.into_inner());
    match outcome {
        Ok(response) => {
            let mut results = response.results.into_iter();
            for pending in batch {
                let result = results.next();
                match result
                    .as_ref()
                    .map(|r| pb::IngestStatus::try_from(r.status))
                {
                    Some(Ok(pb::IngestStatus::Created)) => summary.created += 1,
                    Some(Ok(pb::IngestStatus::Duplicate)) => summary.duplicate += 1,
                    _ => summary.rejected += 1,
                }
                let _ = pending.reply.send(result.ok_or_else(|| {
                    ClientError::Status(tonic::Status::internal(
                        "the server answered fewer results than items",
                    ))
                }));
            }
        }
        Err(error) => {
            summary.failed += batch.len() as u64;
            for pending in batch {
                let _ = pending.reply.send(Err(error.clone()));
            }
        }
    }
}
