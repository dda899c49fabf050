//! Admission of expensive work (issue 8, defect 2): per-principal limits answered with
//! RESOURCE_EXHAUSTED, and server-wide bounds on how many blocking threads long operations
//! and export reads may hold at once.
//!
//! The runtime's blocking pool (`concurrency.blocking_threads`) is shared by short store
//! reads. Long operations (DeleteHistory, PreviewPolicy, Purge) take a permit of
//! `long_operations` before they take a thread (VerifyAuditLog one of its own), searches and
//! audit queries one of `searches`, and export streams take a permit of `export_reads` for each bounded chunk they
//! read; the config refuses limits that would leave less than half of the pool to everything
//! else. Open export streams are also bounded server-wide (`open_exports`). Waiting for a
//! permit holds no thread. Ingest validation and the audit writer have threads of their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::config::ConcurrencyConfig;
use crate::error::Error;

/// The kinds of work limited per principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Work {
    /// An open export stream.
    Export,
    /// A long operation, running or waiting for its turn.
    LongOperation,
    /// A search or an audit-log query, running or waiting for a permit.
    Search,
}

impl Work {
    fn describe(self) -> &'static str {
        match self {
            Work::Export => "export streams",
            Work::LongOperation => {
                "long operations (DeleteHistory, PreviewPolicy, Purge, VerifyAuditLog)"
            }
            Work::Search => "searches and audit queries",
        }
    }
}

pub struct Admission {
    exports_per_principal: usize,
    long_operations_per_principal: usize,
    searches_per_principal: usize,
    open_exports: usize,
    in_use: Mutex<InUse>,
    long_operations: Arc<Semaphore>,
    export_reads: Arc<Semaphore>,
    searches: Arc<Semaphore>,
    /// Whole-chain audit verifications: one at a time, apart from the long operations so
    /// that an auditor cannot hold back DeleteHistory or Purge.
    verifications: Arc<Semaphore>,
}

#[derive(Default)]
struct InUse {
    by_principal: HashMap<(Work, String), usize>,
    by_work: HashMap<Work, usize>,
}

/// A principal's place for one piece of work; dropping it frees the place.
pub struct Slot {
    admission: Arc<Admission>,
    work: Work,
    principal: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut in_use = self
            .admission
            .in_use
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let key = (self.work, std::mem::take(&mut self.principal));
        if let Some(count) = in_use.by_principal.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                in_use.by_principal.remove(&key);
            }
        }
        if let Some(count) = in_use.by_work.get_mut(&self.work) {
            *count = count.saturating_sub(1);
        }
    }
}

impl Admission {
    pub fn new(config: &ConcurrencyConfig) -> Arc<Admission> {
        Arc::new(Admission {
            exports_per_principal: config.exports_per_principal,
            long_operations_per_principal: config.long_operations_per_principal,
            searches_per_principal: config.searches_per_principal,
            open_exports: config.open_exports,
            in_use: Mutex::new(InUse::default()),
            long_operations: Arc::new(Semaphore::new(config.long_operations)),
            export_reads: Arc::new(Semaphore::new(config.export_reads)),
            searches: Arc::new(Semaphore::new(config.searches)),
            verifications: Arc::new(Semaphore::new(1)),
        })
    }

    /// Takes one of `principal`'s places for `work`, or refuses with RESOURCE_EXHAUSTED.
    pub fn admit(self: &Arc<Self>, work: Work, principal: &str) -> Result<Slot, Error> {
        let limit = match work {
            Work::Export => self.exports_per_principal,
            Work::LongOperation => self.long_operations_per_principal,
            Work::Search => self.searches_per_principal,
        };
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        let server_wide = match work {
            Work::Export => Some(self.open_exports),
            Work::LongOperation | Work::Search => None,
        };
        let total = in_use.by_work.get(&work).copied().unwrap_or(0);
        if let Some(server_limit) = server_wide.filter(|limit| total >= *limit) {
            metrics::counter!("holdfast_admission_refused_total", "work" => work.describe())
                .increment(1);
            return Err(Error::ResourceExhausted(format!(
                "the server already has {server_limit} {} open (its limit); retry later",
                work.describe()
            )));
        }
        let count = in_use
            .by_principal
            .entry((work, principal.to_string()))
            .or_insert(0);
        if *count >= limit {
            metrics::counter!("holdfast_admission_refused_total", "work" => work.describe())
                .increment(1);
            return Err(Error::ResourceExhausted(format!(
                "{principal} already has {limit} {} in progress (the limit); wait for one to \
                 finish",
                work.describe()
            )));
        }
        *count += 1;
        *in_use.by_work.entry(work).or_insert(0) += 1;
        Ok(Slot {
            admission: Arc::clone(self),
            work,
            principal: principal.to_string(),
        })
    }

    /// Runs a long operation on the blocking pool once one of the server-wide permits is free.
    ///
    /// The permit and the principal's `slot` move into the blocking closure: if the caller
    /// goes away (deadline, RST_STREAM) while the work runs, the work finishes on its thread
    /// and still counts against both limits until it is done. Anything that must happen with
    /// the work (its audit entry) belongs inside `work`, never after the `.await`.
    pub async fn long_operation<T: Send + 'static>(
        &self,
        slot: Slot,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        with_slot(&self.long_operations, slot, work).await
    }

    /// Runs a whole-chain verification of the audit log (one at a time, server-wide), with
    /// the principal's `slot` held until it ends.
    pub async fn verification<T: Send + 'static>(
        &self,
        slot: Slot,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        with_slot(&self.verifications, slot, work).await
    }

    /// Runs a search or an audit-log query on the blocking pool once one of the server-wide
    /// `searches` permits is free (a burst of searches cannot take the whole pool), with the
    /// principal's `slot` (`Work::Search`) held until it ends: one principal cannot take
    /// every permit either.
    pub async fn search<T: Send + 'static>(
        &self,
        slot: Slot,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        with_slot(&self.searches, slot, work).await
    }

    /// A leaf search another node of the cluster asks for: as `search`, but refused at once
    /// when every `searches` permit is taken (the asking node then searches those splits
    /// itself), so that nodes waiting for each other's leaf searches never wait in a circle.
    /// No principal's slot: the search was admitted, as its caller's, on the asking node.
    pub async fn leaf_search<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let permit = Arc::clone(&self.searches)
            .try_acquire_owned()
            .map_err(|_| Error::ResourceExhausted("every search permit is taken".into()))?;
        run_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
    }

    /// Runs one bounded read of an export on the blocking pool once a permit is free (the
    /// permit stays with the read even if the stream is dropped meanwhile).
    pub async fn export_read<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        with_permit(&self.export_reads, work).await
    }
}

/// Runs `work` on the blocking pool once `permits` has one free; the permit moves into the
/// blocking closure, so it is held until the work ends even if the caller goes away.
async fn with_permit<T: Send + 'static>(
    permits: &Arc<Semaphore>,
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let permit = Arc::clone(permits)
        .acquire_owned()
        .await
        .map_err(|_| Error::Unavailable("the server is shutting down".into()))?;
    run_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
}

/// `with_permit`, with the principal's `slot` also held until the work ends.
async fn with_slot<T: Send + 'static>(
    permits: &Arc<Semaphore>,
    slot: Slot,
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    with_permit(permits, move || {
        let _slot = slot;
        work()
    })
    .await
}

/// Runs `work` on the blocking pool. A panic becomes an internal error with a fixed message:
/// the panic's own text may quote stored content, so it reaches neither the caller nor the
/// audit log.
pub async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join_error| Err(join_failure(&join_error)))
}

/// The error for a blocking task that did not finish: never the panic's text.
pub fn join_failure(join_error: &tokio::task::JoinError) -> Error {
    if join_error.is_panic() {
        metrics::counter!("holdfast_panics_total", "what" => "blocking task").increment(1);
        tracing::error!("a blocking task panicked; its caller gets an internal error");
        Error::Internal("a worker panicked".into())
    } else {
        Error::Unavailable("the server is shutting down".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_limited_per_principal_and_freed_on_drop() {
        let admission = Admission::new(&ConcurrencyConfig {
            exports_per_principal: 2,
            ..ConcurrencyConfig::default()
        });
        let first = admission.admit(Work::Export, "alice").unwrap();
        let _second = admission.admit(Work::Export, "alice").unwrap();
        let refused = admission.admit(Work::Export, "alice").err().unwrap();
        assert!(matches!(refused, Error::ResourceExhausted(_)), "{refused}");
        // Others and other kinds of work are not affected.
        let _bob = admission.admit(Work::Export, "bob").unwrap();
        let _long = admission.admit(Work::LongOperation, "alice").unwrap();
        drop(first);
        admission.admit(Work::Export, "alice").unwrap();
    }

    #[tokio::test]
    async fn searches_are_limited_per_principal() {
        let admission = Admission::new(&ConcurrencyConfig {
            searches_per_principal: 1,
            ..ConcurrencyConfig::default()
        });
        let slot = admission.admit(Work::Search, "alice").unwrap();
        let refused = admission.admit(Work::Search, "alice").err().unwrap();
        assert!(matches!(refused, Error::ResourceExhausted(_)), "{refused}");
        admission.admit(Work::Search, "bob").unwrap();
        // The slot is held while the search runs and freed when it ends.
        let answer = admission.search(slot, || Ok(42)).await.unwrap();
        assert_eq!(answer, 42);
        admission.admit(Work::Search, "alice").unwrap();
    }

    #[test]
    fn open_exports_are_limited_server_wide() {
        let admission = Admission::new(&ConcurrencyConfig {
            exports_per_principal: 2,
            open_exports: 3,
            ..ConcurrencyConfig::default()
        });
        let _a1 = admission.admit(Work::Export, "alice").unwrap();
        let a2 = admission.admit(Work::Export, "alice").unwrap();
        let _b1 = admission.admit(Work::Export, "bob").unwrap();
        let refused = admission.admit(Work::Export, "carol").err().unwrap();
        assert!(
            refused.to_string().contains("the server already has 3"),
            "{refused}"
        );
        // Long operations are not counted against the export bound.
        let _long = admission.admit(Work::LongOperation, "carol").unwrap();
        drop(a2);
        admission.admit(Work::Export, "carol").unwrap();
    }

    #[tokio::test]
    async fn a_panic_becomes_a_fixed_message_without_its_text() {
        let failed: Result<(), Error> =
            run_blocking(|| -> Result<(), Error> { panic!("prompt text: the secret merger plan") })
                .await;
        let error = failed.err().unwrap();
        assert!(matches!(error, Error::Internal(_)), "{error:?}");
        let text = format!("{error} {error:?}");
        let text = format!("{text} {}", tonic::Status::from(error).message());
        assert!(!text.contains("secret"), "{text}");
        assert!(!text.contains("prompt"), "{text}");
        assert!(text.contains("internal error: a worker panicked"), "{text}");
    }

    #[tokio::test]
    async fn a_long_operation_keeps_its_slot_after_the_caller_goes_away() {
        let admission = Admission::new(&ConcurrencyConfig {
            long_operations_per_principal: 1,
            ..ConcurrencyConfig::default()
        });
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let slot = admission.admit(Work::LongOperation, "alice").unwrap();
        let running = {
            let admission = Arc::clone(&admission);
            tokio::spawn(async move {
                admission
                    .long_operation(slot, move || {
                        let _ = started_tx.send(());
                        let _ = released.recv();
                        Ok(())
                    })
                    .await
            })
        };
        started.await.unwrap();
        // The caller goes away; the work is still running, so the place is still taken.
        running.abort();
        let _ = running.await;
        assert!(admission.admit(Work::LongOperation, "alice").is_err());
        release.send(()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if admission.admit(Work::LongOperation, "alice").is_ok() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the place was never freed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
