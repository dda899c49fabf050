//! Threads reserved for one kind of work, and turning panics into errors.
//!
//! Ingest validation runs on its own small pool so that nothing else (exports, long
//! operations, store reads of other callers) can take the threads it needs: ingest keeps its
//! headroom whatever else runs. A job that panics answers its caller with an error; the
//! thread goes on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::error::Error;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Jobs waiting for a thread; a full queue makes callers wait (without holding a thread).
const QUEUE_CAPACITY: usize = 1024;

/// A fixed set of named threads taking jobs from one queue. The threads stop once the pool
/// is dropped and the queue is empty.
pub struct WorkerPool {
    sender: mpsc::Sender<Job>,
}

impl WorkerPool {
    pub fn start(name: &str, threads: usize) -> WorkerPool {
        let (sender, receiver) = mpsc::channel::<Job>(QUEUE_CAPACITY);
        let receiver = Arc::new(Mutex::new(receiver));
        for number in 0..threads.max(1) {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("{name}-{number}"))
                .spawn(move || loop {
                    let job = {
                        let mut receiver = receiver.lock().unwrap_or_else(|e| e.into_inner());
                        receiver.blocking_recv()
                    };
                    match job {
                        Some(job) => job(),
                        None => return,
                    }
                })
                .expect("can spawn a worker thread");
        }
        WorkerPool { sender }
    }

    /// Runs `work` on one of the pool's threads. A panic becomes `Error::Internal`.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(catch_panic("worker job", work));
        });
        self.sender
            .send(job)
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".into()))?
    }
}

/// Runs `work`, turning a panic into `Error::Internal` (logged, counted).
pub fn catch_panic<T>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(result) => result,
        Err(_payload) => {
            // The payload's text may quote stored content: it is neither logged nor returned.
            tracing::error!(what, "a task panicked; its caller gets an error");
            metrics::counter!("holdfast_panics_total", "what" => what).increment(1);
            Err(Error::Internal(format!("{what} failed unexpectedly")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_and_a_panic_is_an_error_not_a_dead_pool() {
        let pool = WorkerPool::start("test-worker", 2);
        assert_eq!(pool.run(|| Ok(2 + 2)).await.unwrap(), 4);
        let panicked: Result<(), Error> =
            pool.run(|| -> Result<(), Error> { panic!("boom") }).await;
        assert!(matches!(panicked, Err(Error::Internal(_))), "{panicked:?}");
        // Every thread still takes work.
        for _ in 0..8 {
            assert_eq!(pool.run(|| Ok("ok")).await.unwrap(), "ok");
        }
    }
}
