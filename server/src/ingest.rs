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
use tokio::sync::{mpsc, oneshot};
use ulid::Ulid;

use crate::config::Limits;
use crate::domain::InteractionId;
use crate::error::Error;
use crate::lifecycle::{Lifecycle, ReplanScope};
use crate::store::{NewInteraction, Store, StoreError, WriteOutcome};
use crate::validate::{self, UnvalidatedContent};

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
        lifecycle: Arc<Lifecycle>,
        max_group_items: usize,
    ) -> (GroupCommitter, WriterThread) {
        GroupCommitter::start_with(max_group_items, move |items| {
            write_planned(store.as_ref(), &lifecycle, items)
        })
    }

    /// The writer thread around any `write` of a group (tests inject failures here).
    pub fn start_with(
        max_group_items: usize,
        write: impl FnMut(&mut [NewInteraction]) -> Result<Vec<WriteOutcome>, StoreError>
            + Send
            + 'static,
    ) -> (GroupCommitter, WriterThread) {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let handle = std::thread::Builder::new()
            .name("holdfast-writer".into())
            .spawn(move || run_writer(write, receiver, max_group_items))
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
    mut write: impl FnMut(&mut [NewInteraction]) -> Result<Vec<WriteOutcome>, StoreError>,
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
        // A panic while writing a group fails that group's requests (they were not
        // acknowledged, so nothing is lost) and the writer goes on: never a silently dead
        // writer with callers waiting forever.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(&mut items)))
            .unwrap_or_else(|_payload| {
                // The payload's text may quote prompt text: it is not logged.
                tracing::error!("the ingest writer panicked; the group is refused");
                metrics::counter!("holdfast_panics_total", "what" => "ingest writer").increment(1);
                Err(StoreError::Engine(
                    "the write failed unexpectedly; nothing of this request was stored".into(),
                ))
            });
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
                    // Each request gets the error itself (a full disk stays RESOURCE_EXHAUSTED).
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Writes items with their first due entry, planned by the policies in force while they are
/// written (a policy change waits for the write, then re-plans).
pub fn write_planned(
    store: &dyn Store,
    lifecycle: &Lifecycle,
    items: &mut [NewInteraction],
) -> Result<Vec<WriteOutcome>, StoreError> {
    // Another node may have changed a policy: plan by the current ones.
    let generation = lifecycle.refresh()?;
    // A store that enforces locks writes the content of an item a hold covers under legal
    // hold. A case hold's query cannot be evaluated before the item is indexed: it counts as
    // covering (the re-plan of its mailboxes settles it).
    let holds = if store.enforces_locks() {
        Some(lifecycle.holds()?)
    } else {
        None
    };
    let now = Utc::now();
    let outcomes = lifecycle.with_policies(|policies| {
        for item in items.iter_mut() {
            let content = &item.content;
            (item.first_check, item.retention) = lifecycle.plan_new(
                policies,
                &content.mailbox_id,
                &content.app,
                content.created_at,
            );
            if let Some(holds) = &holds {
                item.legal_hold = holds
                    .iter()
                    .any(|hold| hold.covers(&content.mailbox_id, content.created_at, now, || true));
            }
        }
        store.write_interactions(items)
    })?;
    // Another node changed the rules while this group was written: its re-plan may have
    // passed these items already, so they are re-planned (their locks included) once more.
    // The group is stored whatever happens here: a failure is logged, not answered.
    if holds.is_some() {
        let moved = store.rules_generation().map(|now_at| now_at != generation);
        let requested = moved.and_then(|moved| {
            if !moved {
                return Ok(());
            }
            let mailboxes = items.iter().map(|i| i.content.mailbox_id.clone()).collect();
            lifecycle.request_replan(ReplanScope::Mailboxes(mailboxes), now)
        });
        if let Err(error) = requested {
            tracing::error!(%error, "cannot re-plan a group written while the rules changed");
        }
    }
    Ok(outcomes)
}

/// Why an item of an ingest request was refused before it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub field: String,
    pub reason: String,
}

impl From<Error> for Rejection {
    fn from(error: Error) -> Rejection {
        match error {
            Error::InvalidArgument { field, reason } => Rejection { field, reason },
            other => Rejection {
                field: String::new(),
                reason: other.to_string(),
            },
        }
    }
}

/// Validates, assigns ids and computes digests. Items a front door could not decode arrive as
/// their rejection and stay rejected. CPU-bound: call off the async workers.
pub fn prepare(
    inputs: Vec<Result<UnvalidatedContent, Rejection>>,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Vec<Result<NewInteraction, Rejection>> {
    let mut generator = ulid::Generator::new();
    inputs
        .into_iter()
        .map(|input| {
            let content = validate::interaction_content(input?, limits, now)?;
            let id = generator
                .generate_from_datetime(now.into())
                .unwrap_or_else(|_| Ulid::new());
            Ok(NewInteraction::new(InteractionId(id), now, content))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::{InteractionContent, MailboxId};

    fn item(key: &str) -> NewInteraction {
        let content = InteractionContent {
            client_key: key.into(),
            mailbox_id: MailboxId::parse("a@contoso.com").unwrap(),
            thread_id: String::new(),
            app: "Word".into(),
            created_at: Utc::now(),
            prompt: "p".into(),
            response: "r".into(),
            model: Default::default(),
            plugins: Vec::new(),
            accessed_resources: Vec::new(),
            contexts: Vec::new(),
            safety: Default::default(),
            sensitivity_label: String::new(),
            attributes: BTreeMap::new(),
        };
        NewInteraction::new(InteractionId(Ulid::new()), Utc::now(), content)
    }

    #[tokio::test]
    async fn a_panicking_write_fails_its_callers_and_the_writer_goes_on() {
        let mut calls = 0;
        let (committer, writer) = GroupCommitter::start_with(100, move |items| {
            calls += 1;
            if calls == 1 {
                panic!("overflow in a computation");
            }
            Ok(items
                .iter()
                .map(|item| WriteOutcome::Created(item.id))
                .collect())
        });
        let failed = committer.write(vec![item("k1")]).await;
        assert!(
            matches!(failed, Err(Error::Store(StoreError::Engine(_)))),
            "{failed:?}"
        );
        let second = item("k2");
        let id = second.id;
        let written = committer.write(vec![second]).await.unwrap();
        assert_eq!(written, [WriteOutcome::Created(id)]);
        drop(committer);
        writer.join();
    }
}
