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
    long_operations: Semaphore,
    export_reads: Semaphore,
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
            long_operations: Semaphore::new(config.long_operations),
            export_reads: Semaphore::new(config.export_reads),
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
    pub async fn long_operation<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let _permit = self
            .long_operations
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".into()))?;
        run_blocking(work).await
    }

    /// Runs one bounded read of an export on the blocking pool once a permit is free.
    pub async fn export_read<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let _permit = self
            .export_reads
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".into()))?;
        run_blocking(work).await
    }
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join_error| Err(Error::Internal(join_error.to_string())))
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
}
