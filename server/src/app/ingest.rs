//! Ingest (SPEC §2): a batch of interactions, each validated, assigned an id and stored
//! durably, or answered with why not. A batch is never all-or-nothing: each item has its own
//! outcome, and a retried item with the same `client_key` and content is a duplicate, not a
//! second copy.

use std::time::Instant;

use super::{now, App};
use crate::auth::{Principal, Role};
use crate::domain::InteractionId;
use crate::error::Error;
use crate::ingest::{self, Rejection};
use crate::store::WriteOutcome;
use crate::validate::UnvalidatedContent;

/// Who ingests: the assistant backend.
pub const INGESTERS: &[Role] = &[Role::Ingest];

/// What became of one item of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored now, under this id.
    Created(InteractionId),
    /// The same `client_key` with the same content was stored before, under this id.
    Duplicate(InteractionId),
    /// The same `client_key` was stored before (under this id) with other content: stored
    /// interactions are immutable, so this one is refused.
    Conflict(InteractionId),
    /// Not valid; nothing stored.
    Rejected(Rejection),
}

impl App {
    /// Stores a batch. `items` are what the front door decoded, one entry per item of the
    /// request in its order; an item it could not decode is already its rejection. Fails as a
    /// whole only when the batch is too large or storage cannot take it (nothing of the batch
    /// is acknowledged then).
    pub async fn ingest(
        &self,
        principal: &Principal,
        items: Vec<Result<UnvalidatedContent, Rejection>>,
    ) -> Result<Vec<IngestOutcome>, Error> {
        self.authorize(principal, "Ingest", INGESTERS).await?;
        let started = Instant::now();
        let num_items = items.len();
        if num_items > self.limits.max_batch_items {
            return Err(Error::invalid(
                "interactions",
                format!(
                    "{num_items} items in one request, more than the limit of {}",
                    self.limits.max_batch_items
                ),
            ));
        }
        let limits = self.limits.clone();
        // On the threads reserved for ingest: nothing else can take them.
        let prepared = self
            .ingest_workers
            .run(move || Ok(ingest::prepare(items, &limits, now())))
            .await?;

        // Per item: its rejection, or None for an item handed to the writer.
        let mut rejections = Vec::with_capacity(num_items);
        let mut valid = Vec::with_capacity(num_items);
        for item in prepared {
            match item {
                Ok(item) => {
                    valid.push(item);
                    rejections.push(None);
                }
                Err(rejection) => rejections.push(Some(rejection)),
            }
        }
        // Backpressure: wait while the search index is too far behind.
        self.index
            .wait_for_capacity(&*self.store, &self.shutdown)
            .await;
        if !valid.is_empty() {
            self.check_disk_space()?;
        }
        let num_valid = valid.len();
        let written = self.committer.write(valid).await?;
        if written.len() != num_valid {
            return Err(Error::Internal(format!(
                "the writer answered {} of {num_valid} items",
                written.len()
            )));
        }
        let mut written = written.into_iter();
        let outcomes: Vec<IngestOutcome> = rejections
            .into_iter()
            .filter_map(|rejection| match rejection {
                Some(rejection) => Some(IngestOutcome::Rejected(rejection)),
                None => written.next().map(|outcome| match outcome {
                    WriteOutcome::Created(id) => IngestOutcome::Created(id),
                    WriteOutcome::Duplicate(id) => IngestOutcome::Duplicate(id),
                    WriteOutcome::Conflict(id) => IngestOutcome::Conflict(id),
                }),
            })
            .collect();
        record_ingest_metrics(&outcomes, started);
        Ok(outcomes)
    }
}

/// The reason given for a `Conflict`.
pub const CONFLICT_REASON: &str =
    "this client_key was stored before with different content; stored interactions are immutable";

fn record_ingest_metrics(outcomes: &[IngestOutcome], started: Instant) {
    let mut counts = [0u64; 3];
    for outcome in outcomes {
        match outcome {
            IngestOutcome::Created(_) => counts[0] += 1,
            IngestOutcome::Duplicate(_) => counts[1] += 1,
            IngestOutcome::Conflict(_) | IngestOutcome::Rejected(_) => counts[2] += 1,
        }
    }
    for (status, count) in ["created", "duplicate", "rejected"].into_iter().zip(counts) {
        metrics::counter!("holdfast_ingest_items_total", "status" => status).increment(count);
    }
    metrics::histogram!("holdfast_ingest_batch_items").record(outcomes.len() as f64);
    metrics::histogram!("holdfast_ingest_seconds").record(started.elapsed().as_secs_f64());
}
