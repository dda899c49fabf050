//! The console's exports: a reviewer starts one, watches its progress, and downloads a BagIt
//! bag (as one tar file) with its digests shown on the page. The bag is the one `holdfast
//! export` writes (`holdfast_export::bag`), so `holdfast export verify` checks either.
//!
//! An export job reads the case's export stream (`App::export`, which authorises and audits
//! the export) into a bag under `<data dir>/console-exports/<job>/`, finishes and verifies it,
//! checks it against the server's trailer (count and content digest), then packs it into
//! `bag.tar`. Jobs live in memory: a restart clears the folder and the list. Each principal
//! runs one export at a time and keeps its last few; a finished bag is kept for a day.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use holdfast_export::bag::{self, ExportParameters};
use holdfast_export::json::JsonInteraction;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::app::export::{Export, ExportMessage};
use crate::app::App;
use crate::auth::Principal;
use crate::convert;
use crate::error::Error;

/// Finished exports kept per principal; starting one more removes the oldest.
const KEPT_PER_PRINCIPAL: usize = 5;
/// How long a finished bag stays downloadable.
const KEPT_FOR: TimeDelta = TimeDelta::hours(24);
/// Items written to the bag per blocking write, and at most this many bytes of them.
const WRITE_CHUNK: usize = 64;
const WRITE_CHUNK_BYTES: usize = 4 << 20;

/// Where an export job is.
#[derive(Debug, Clone)]
pub enum JobState {
    Running,
    Ready {
        count: u64,
        /// The trailer's digest over the items' content hashes (bag-info's
        /// `Holdfast-Content-Digest`).
        content_digest: String,
        /// SHA-256 of the tar file as downloaded.
        tar_sha256: String,
        tar_bytes: u64,
    },
    Failed(String),
}

pub struct Job {
    pub id: String,
    pub case_id: String,
    pub query: String,
    /// The principal that started it (name and token): the only one who may see and
    /// download it.
    pub owner: String,
    owner_token: [u8; 32],
    pub started_at: DateTime<Utc>,
    /// Items the export will send (fewer if some are destroyed meanwhile).
    pub total: u64,
    pub written: AtomicU64,
    state: Mutex<JobState>,
    finished_at: Mutex<Option<DateTime<Utc>>>,
    dir: PathBuf,
}

impl Job {
    pub fn state(&self) -> JobState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or(JobState::Running)
    }

    fn set(&self, state: JobState) {
        if let Ok(mut current) = self.state.lock() {
            *current = state;
        }
        if let Ok(mut finished) = self.finished_at.lock() {
            *finished = Some(Utc::now());
        }
    }

    /// The packed bag.
    pub fn tar_path(&self) -> PathBuf {
        self.dir.join("bag.tar")
    }

    /// The name of the bag's folder inside the tar, and of the download.
    pub fn bag_name(&self) -> String {
        format!("holdfast-case-{}-export-{}", self.case_id, self.id)
    }

    fn is_owner(&self, principal: &Principal) -> bool {
        self.owner == principal.name && self.owner_token == principal.token_sha256
    }

    fn expired(&self, now: DateTime<Utc>) -> bool {
        matches!(self.finished_at.lock().map(|f| *f), Ok(Some(at)) if now - at > KEPT_FOR)
    }
}

/// Every export job of this server run.
pub struct ConsoleExports {
    dir: PathBuf,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    /// Bags being finished, verified and packed (one at a time), and the disk space the one
    /// being packed still needs.
    finishing: Arc<Finishing>,
}

/// One bag is finished, verified and packed at a time (each reads its payload several
/// times); `reserved` is the space its tar may still take, which every other export's space
/// check counts as taken.
#[derive(Default)]
struct Finishing {
    slot: tokio::sync::Mutex<()>,
    reserved: AtomicU64,
}

impl ConsoleExports {
    /// Exports under `dir`, which is emptied: bags of an earlier run are not listed anywhere.
    pub fn new(dir: PathBuf) -> ConsoleExports {
        let _ = std::fs::remove_dir_all(&dir);
        ConsoleExports {
            dir,
            jobs: Mutex::new(HashMap::new()),
            finishing: Arc::new(Finishing::default()),
        }
    }

    /// The caller's job, if it exists and is theirs.
    pub fn get(&self, principal: &Principal, case_id: &str, job_id: &str) -> Option<Arc<Job>> {
        let jobs = self.jobs.lock().ok()?;
        jobs.get(job_id)
            .filter(|job| job.is_owner(principal) && job.case_id == case_id)
            .filter(|job| !job.expired(Utc::now()))
            .cloned()
    }

    /// Refuses a second export of a principal while one runs (checked before the export is
    /// opened and audited, and again when it starts).
    pub fn check_can_start(&self, principal: &Principal) -> Result<(), Error> {
        let jobs = self
            .jobs
            .lock()
            .map_err(|_| Error::Internal("export list poisoned".into()))?;
        refuse_second_running(&jobs, principal)
    }

    /// The caller's jobs in a case, newest first.
    pub fn list(&self, principal: &Principal, case_id: &str) -> Vec<Arc<Job>> {
        self.remove_expired();
        let Ok(jobs) = self.jobs.lock() else {
            return Vec::new();
        };
        let mut mine: Vec<Arc<Job>> = jobs
            .values()
            .filter(|job| job.is_owner(principal) && job.case_id == case_id)
            .cloned()
            .collect();
        mine.sort_by(|a, b| b.id.cmp(&a.id));
        mine
    }

    /// Starts an export the application layer has opened (and audited) as a job.
    pub fn start(
        self: &Arc<Self>,
        app: Arc<App>,
        principal: &Principal,
        parameters: ExportParameters,
        export: Export,
    ) -> Result<Arc<Job>, Error> {
        self.remove_expired();
        let id = ulid::Ulid::new().to_string();
        let job = Arc::new(Job {
            id: id.clone(),
            case_id: parameters.case_id.clone(),
            query: parameters.query.clone(),
            owner: principal.name.clone(),
            owner_token: principal.token_sha256,
            started_at: Utc::now(),
            total: export.total,
            written: AtomicU64::new(0),
            state: Mutex::new(JobState::Running),
            finished_at: Mutex::new(None),
            dir: self.dir.join(&id),
        });
        {
            let mut jobs = self
                .jobs
                .lock()
                .map_err(|_| Error::Internal("export list poisoned".into()))?;
            refuse_second_running(&jobs, principal)?;
            let mut mine: Vec<Arc<Job>> = jobs
                .values()
                .filter(|job| job.is_owner(principal))
                .cloned()
                .collect();
            mine.sort_by(|a, b| a.id.cmp(&b.id));
            let excess = (mine.len() + 1).saturating_sub(KEPT_PER_PRINCIPAL);
            for old in mine.into_iter().take(excess) {
                jobs.remove(&old.id);
                let _ = std::fs::remove_dir_all(&old.dir);
            }
            jobs.insert(id, Arc::clone(&job));
        }
        let running = Arc::clone(&job);
        let finishing = Arc::clone(&self.finishing);
        let principal = principal.clone();
        tokio::spawn(async move {
            // On a task of its own: a panic becomes a failed job, never one left running.
            let work = tokio::spawn({
                let (app, running) = (Arc::clone(&app), Arc::clone(&running));
                async move { run(&app, &running, parameters, export, &finishing).await }
            });
            let state = match work.await {
                Ok(Ok(state)) => state,
                Ok(Err(error)) => JobState::Failed(error.to_string()),
                Err(_) => JobState::Failed("the export stopped unexpectedly".into()),
            };
            let outcome = match &state {
                JobState::Ready {
                    count,
                    content_digest,
                    tar_sha256,
                    ..
                } => json!({ "items": count, "content_digest": content_digest,
                             "tar_sha256": tar_sha256 }),
                _ => {
                    let _ = tokio::fs::remove_dir_all(&running.dir).await;
                    json!({})
                }
            };
            let result = match &state {
                JobState::Failed(message) => format!("failed: {message}"),
                _ => "ok".to_string(),
            };
            let audited = app
                .audit_done(
                    &principal,
                    "ExportBagReady",
                    running.id.clone(),
                    json!({ "case_id": running.case_id, "outcome": outcome }),
                    result,
                )
                .await;
            // A bag whose readiness is not in the audit log is not offered.
            let state = match (audited, state) {
                (Ok(()), state) => state,
                (Err(_), _) => {
                    let _ = tokio::fs::remove_dir_all(&running.dir).await;
                    JobState::Failed("the export could not be audited; start it again".into())
                }
            };
            running.set(state);
        });
        Ok(job)
    }

    fn remove_expired(&self) {
        let now = Utc::now();
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.retain(|_, job| {
                let keep = !job.expired(now);
                if !keep {
                    let _ = std::fs::remove_dir_all(&job.dir);
                }
                keep
            });
        }
    }
}

/// Gives back the packing reservation (also when packing fails).
struct Unreserve<'a>(&'a Finishing);

impl Drop for Unreserve<'_> {
    fn drop(&mut self) {
        self.0.reserved.store(0, Ordering::Relaxed);
    }
}

/// One running export per reviewer.
fn refuse_second_running(
    jobs: &HashMap<String, Arc<Job>>,
    principal: &Principal,
) -> Result<(), Error> {
    if jobs
        .values()
        .any(|job| job.is_owner(principal) && matches!(job.state(), JobState::Running))
    {
        return Err(Error::ResourceExhausted(
            "an export of yours is still running; wait for it to finish".into(),
        ));
    }
    Ok(())
}

/// Console exports stop while ingest still has room: they keep free at least twice
/// `min_free_disk_mb` (at least 1 GiB more than it) plus `more` bytes still to be written and
/// the space reserved by the bag being packed, so that reviewers' downloads can never be what
/// makes the store refuse new items. (`min_free_disk_mb = 0` turns the reserve off for
/// exports as for ingest.)
fn check_export_space(app: &App, more: u64, finishing: &Finishing) -> Result<(), Error> {
    if app.min_free_disk_bytes == 0 {
        return Ok(());
    }
    let keep = app
        .min_free_disk_bytes
        .saturating_add(app.min_free_disk_bytes.max(1 << 30));
    let needed = keep
        .saturating_add(more)
        .saturating_add(finishing.reserved.load(Ordering::Relaxed));
    match crate::disk::free_bytes(&app.data_dir) {
        Ok(free) if free < needed => Err(Error::ResourceExhausted(format!(
            "not enough disk space for this export: {} MiB free, and exports leave at least \
             {} MiB for new items; export a narrower query or ask an administrator to free \
             space",
            free >> 20,
            keep >> 20
        ))),
        _ => Ok(()),
    }
}

/// Writes the bag, checks it, and packs it.
async fn run(
    app: &App,
    job: &Job,
    parameters: ExportParameters,
    mut export: Export,
    finishing: &Finishing,
) -> Result<JobState, Error> {
    let bag_dir = job.dir.join(job.bag_name());
    let setup = bag_dir.clone();
    let written_parameters = parameters.clone();
    let mut payload = blocking(move || {
        bag::write_parameters(&setup, &written_parameters)?;
        Ok(bag::resume_point(&setup)?.0)
    })
    .await?;
    let mut lines = Vec::with_capacity(WRITE_CHUNK);
    let mut buffered = 0usize;
    let mut written_bytes = 0u64;
    let mut trailer = None;
    while let Some(message) = export.messages.next().await {
        match message? {
            ExportMessage::Item(item) => {
                let json = JsonInteraction::from_stored(convert::interaction_to_proto(*item));
                let line = serde_json::to_string(&json)
                    .map_err(|_| Error::Internal("an item could not be encoded".into()))?;
                buffered += line.len();
                lines.push(line);
            }
            ExportMessage::Trailer { count, digest } => trailer = Some((count, digest)),
        }
        let full = lines.len() >= WRITE_CHUNK || buffered >= WRITE_CHUNK_BYTES;
        if full || (trailer.is_some() && !lines.is_empty()) {
            written_bytes += buffered as u64;
            buffered = 0;
            // The tar will take as much again as the bag so far.
            check_export_space(app, written_bytes, finishing)?;
            let chunk = std::mem::take(&mut lines);
            let num_lines = chunk.len() as u64;
            payload = blocking(move || {
                for line in &chunk {
                    bag::append_line(&mut payload, line)?;
                }
                Ok(payload)
            })
            .await?;
            job.written.fetch_add(num_lines, Ordering::Relaxed);
        }
    }
    let Some((count, content_digest)) = trailer else {
        return Err(Error::Unavailable(
            "the export ended before its trailer; start it again".into(),
        ));
    };
    drop(payload);
    let (dir, tar_path, name) = (bag_dir.clone(), job.tar_path(), job.bag_name());
    let finished_at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let _slot = finishing.slot.lock().await;
    // Packing writes a tar as large as the bag before the bag is removed; other exports
    // count that space as taken until it is done.
    check_export_space(app, written_bytes, finishing)?;
    finishing.reserved.store(written_bytes, Ordering::Relaxed);
    let _reserved = Unreserve(finishing);
    let (bag_count, bag_digest, tar_sha256, tar_bytes) = blocking(move || {
        bag::finish(&dir, &parameters, &finished_at)?;
        // verify recomputes every item's digest and the content digest in bag-info.txt.
        let bag_count = bag::verify(&dir)?;
        let bag_digest = recorded_content_digest(&dir)?;
        let (tar_sha256, tar_bytes) = pack(&dir, &name, &tar_path)?;
        std::fs::remove_dir_all(&dir)?;
        Ok((bag_count, bag_digest, tar_sha256, tar_bytes))
    })
    .await?;
    if bag_count != count || bag_digest != content_digest {
        tracing::error!(
            job = %job.id,
            bag_count,
            count,
            "a console export's bag differs from the export's trailer"
        );
        return Err(Error::Internal(format!(
            "the bag holds {bag_count} items with digest {bag_digest}, the server sent \
             {count} with digest {content_digest}"
        )));
    }
    Ok(JobState::Ready {
        count,
        content_digest,
        tar_sha256,
        tar_bytes,
    })
}

/// Packs the bag folder `dir` into a tar at `tar_path` (files under `name/`), and returns
/// the tar's SHA-256 and size.
fn pack(dir: &Path, name: &str, tar_path: &Path) -> anyhow::Result<(String, u64)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tar_path)?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    // Complete: entries keep the bag's modes (files 0600, folders 0700), as `holdfast export`
    // leaves them.
    builder.mode(tar::HeaderMode::Complete);
    builder.follow_symlinks(false);
    builder.append_dir_all(name, dir)?;
    let mut writer = builder.into_inner()?;
    writer.flush()?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    let mut hasher = Sha256::new();
    let mut reader = std::fs::File::open(tar_path)?;
    let bytes = std::io::copy(&mut reader, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), bytes))
}

/// The content digest `bag::finish` recorded in `bag-info.txt` (which `bag::verify` has
/// checked against the items).
fn recorded_content_digest(dir: &Path) -> anyhow::Result<String> {
    let info = std::fs::read_to_string(dir.join("bag-info.txt"))?;
    info.lines()
        .find_map(|line| line.strip_prefix("Holdfast-Content-Digest: "))
        .map(|digest| digest.trim().to_string())
        .ok_or_else(|| anyhow::anyhow!("bag-info.txt has no Holdfast-Content-Digest"))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            tracing::error!(error = %format!("{error:#}"), "a console export's bag could not be written");
            Err(Error::Internal(
                "the bag could not be written (the server's log says why)".into(),
            ))
        }
        Err(_) => Err(Error::Internal("writing the bag stopped".into())),
    }
}
