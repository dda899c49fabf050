//! Admission of expensive work (issue 8, defect 2): per-principal limits answered with
//! RESOURCE_EXHAUSTED, and server-wide bounds on how many blocking threads long operations
//! and export reads may hold at once.
//!
//! The runtime's blocking pool (`concurrency.blocking_threads`) is shared by short store
//! reads. Long operations (DeleteHistory, PreviewPolicy, Purge) take a permit of
//! `long_operations` before they take a thread, and export streams take a permit of
//! `export_reads` for each bounded chunk they read; the config refuses limits that would
//! leave less than half of the pool to everything else. Waiting for a permit holds no thread.
//! Ingest validation and the audit writer have threads of their own.

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
}

impl Work {
    fn describe(self) -> &'static str {
        match self {
            Work::Export => "export streams",
            Work::LongOperation => "long operations (DeleteHistory, PreviewPolicy, Purge)",
        }
    }
}

pub struct Admission {
    exports_per_principal: usize,
    long_operations_per_principal: usize,
    in_use: Mutex<HashMap<(Work, String), usize>>,
    long_operations: Arc<Semaphore>,
    export_reads: Arc<Semaphore>,
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
        if let Some(count) = in_use.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                in_use.remove(&key);
            }
        }
    }
}

impl Admission {
    pub fn new(config: &ConcurrencyConfig) -> Arc<Admission> {
        Arc::new(Admission {
            exports_per_principal: config.exports_per_principal,
            long_operations_per_principal: config.long_operations_per_principal,
            in_use: Mutex::new(HashMap::new()),
            long_operations: Arc::new(Semaphore::new(config.long_operations)),
            export_reads: Arc::new(Semaphore::new(config.export_reads)),
        })
    }

    /// Takes one of `principal`'s places for `work`, or refuses with RESOURCE_EXHAUSTED.
    pub fn admit(self: &Arc<Self>, work: Work, principal: &str) -> Result<Slot, Error> {
        let limit = match work {
            Work::Export => self.exports_per_principal,
            Work::LongOperation => self.long_operations_per_principal,
        };
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        let count = in_use.entry((work, principal.to_string())).or_insert(0);
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
        let permit = Arc::clone(&self.long_operations)
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".into()))?;
        run_blocking(move || {
            let _held = (permit, slot);
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
        let permit = Arc::clone(&self.export_reads)
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".into()))?;
        run_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
    }
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
