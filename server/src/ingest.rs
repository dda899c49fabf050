//! Durable ingest with group commit.
//!
//! Request handlers validate and encode their items (in parallel, off the async workers), then
//! hand them to the one writer thread through a bounded channel. The writer takes every batch
//! waiting in the channel, up to `max_group_items`, writes them with one RocksDB write whose
//! WAL is synced, and answers every request in the group. Concurrent requests thus share one
//! sync, and because a single thread writes, the idempotency check of a (mailbox, client_key)
//! and the write that claims it cannot race.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use chrono::{DateTime, Utc};
use holdfast_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use ulid::Ulid;

use crate::config::Limits;
use crate::convert;
use crate::domain::InteractionId;
use crate::error::Error;
use crate::retention::Rules;
use crate::store::{NewInteraction, Store, StoreError, WriteOutcome};

/// Batches waiting for the writer; a full queue makes handlers wait (backpressure).
const QUEUE_CAPACITY: usize = 256;

struct WriteJob {
    items: Vec<NewInteraction>,
    reply: oneshot::Sender<Result<Vec<WriteOutcome>, StoreError>>,
}

/// The handle request handlers use; cloning it is cheap.
#[derive(Clone)]
pub struct GroupCommitter {
    sender: mpsc::Sender<WriteJob>,
}

/// The writer thread; joining it waits until every queued write is done.
pub struct WriterThread(JoinHandle<()>);

impl WriterThread {
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("the ingest writer thread panicked");
        }
    }
}

impl GroupCommitter {
    pub fn start(
        store: Arc<dyn Store>,
        rules: Arc<Rules>,
        max_group_items: usize,
    ) -> (GroupCommitter, WriterThread) {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let handle = std::thread::Builder::new()
            .name("holdfast-writer".into())
            .spawn(move || run_writer(store, rules, receiver, max_group_items))
            .expect("can spawn the writer thread");
        (GroupCommitter { sender }, WriterThread(handle))
    }

    /// Writes items durably; returns one outcome per item.
    pub async fn write(&self, items: Vec<NewInteraction>) -> Result<Vec<WriteOutcome>, Error> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(WriteJob { items, reply })
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".into()))?
            .map_err(Error::Store)
    }
}

fn run_writer(
    store: Arc<dyn Store>,
    rules: Arc<Rules>,
    mut receiver: mpsc::Receiver<WriteJob>,
    max_group_items: usize,
) {
    while let Some(first) = receiver.blocking_recv() {
        let mut jobs = vec![first];
        let mut num_items = jobs[0].items.len();
        while num_items < max_group_items {
            match receiver.try_recv() {
                Ok(job) => {
                    num_items += job.items.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let mut items = Vec::with_capacity(num_items);
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push((job.items.len(), job.reply));
            items.extend(job.items);
        }
        let result = write_planned(store.as_ref(), &rules, &mut items);
        metrics::counter!("holdfast_store_syncs_total").increment(1);
        metrics::histogram!("holdfast_group_commit_items").record(items.len() as f64);
        metrics::histogram!("holdfast_group_commit_requests").record(replies.len() as f64);
        metrics::histogram!("holdfast_group_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for (count, reply) in replies {
                    let _ = reply.send(Ok(outcomes.by_ref().take(count).collect()));
                }
            }
            Err(error) => {
                tracing::error!(%error, num_items = items.len(), "group commit failed");
                metrics::counter!("holdfast_store_write_errors_total").increment(1);
                for (_, reply) in replies {
                    let _ = reply.send(Err(StoreError::Engine(error.to_string())));
                }
            }
        }
    }
}

/// Writes items with their first due entry, planned by the policies in force while they are
/// written (a policy change waits for the write, then re-plans).
pub fn write_planned(
    store: &dyn Store,
    rules: &Rules,
    items: &mut [NewInteraction],
) -> Result<Vec<WriteOutcome>, StoreError> {
    rules.with_policies(|policies| {
        for item in items.iter_mut() {
            let content = &item.content;
            item.first_check = rules.first_check(
                policies,
                &content.mailbox_id,
                &content.app,
                content.created_at,
            );
        }
        store.write_interactions(items)
    })
}

/// Why an item of an ingest request was refused before it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub field: String,
    pub reason: String,
}

/// Validates, assigns ids and computes digests. CPU-bound: call off the async workers.
pub fn prepare(
    inputs: Vec<pb::InteractionInput>,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Vec<Result<NewInteraction, Rejection>> {
    let mut generator = ulid::Generator::new();
    inputs
        .into_iter()
        .map(
            |input| match convert::interaction_content(input, limits, now) {
                Ok(content) => {
                    let id = generator
                        .generate_from_datetime(now.into())
                        .unwrap_or_else(|_| Ulid::new());
                    Ok(NewInteraction::new(InteractionId(id), now, content))
                }
                Err(Error::InvalidArgument { field, reason }) => Err(Rejection { field, reason }),
                Err(other) => Err(Rejection {
                    field: String::new(),
                    reason: other.to_string(),
                }),
            },
        )
        .collect()
}
