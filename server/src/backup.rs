//! Online backup and verified restore.
//!
//! A backup is a directory on the server's filesystem:
//! - `store/`: a RocksDB checkpoint (consistent, taken while ingest goes on);
//! - the data directory's key files (every regular file at its top level except
//!   `admin.token`, a bearer secret whose hash is already in the store), e.g. the page-token
//!   key, so that a restored server keeps them;
//! - `manifest.json`, written last: the SHA-256 and size of every other file, the newest
//!   audit entry the checkpoint holds (sequence and hash) and `"index": "rebuild"`: the
//!   search index is not copied (it is derived; copying it consistently with the store would
//!   need the indexer to pause), and a server started on a restored directory rebuilds it
//!   from the store.
//!
//! A restore first verifies the whole backup against its manifest (every listed file present
//! with its size and digest, nothing unlisted, no symlinks), refuses a non-empty target,
//! copies into `<target>/.restoring` re-checking each digest while copying, moves the files
//! into place, opens the restored store and verifies the audit chain up to the manifest's head.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::store::{RocksStore, Store};

/// The manifest's file name inside a backup.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Where a restore copies before moving files into place; its presence in a data directory
/// means a restore was interrupted.
pub const RESTORING_DIR: &str = ".restoring";
/// The manifest format this code writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;
/// Top-level data-directory files never put in a backup.
const NOT_BACKED_UP: &[&str] = &["admin.token"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub created_at: DateTime<Utc>,
    /// The newest audit entry in the backup; `None` when the log is empty.
    pub audit_sequence: Option<u64>,
    pub audit_head_hash: Option<String>,
    /// `"rebuild"`: the index is not in the backup and is rebuilt on start.
    pub index: String,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Relative path inside the backup, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// What a finished backup reports.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    pub out_dir: PathBuf,
    pub files: u64,
    pub bytes: u64,
    pub audit_sequence: u64,
    pub audit_head_hash: String,
    pub manifest_sha256: String,
    pub duration: Duration,
}

fn io_error(what: &str, path: &Path, error: io::Error) -> Error {
    if error.raw_os_error() == Some(libc::ENOSPC) {
        Error::ResourceExhausted(format!("no space left while writing {}", path.display()))
    } else {
        Error::Internal(format!("{what} {}: {error}", path.display()))
    }
}

/// Checks `out_dir` (absolute; absent or an empty directory, not a symlink) and creates it
/// with mode 0700.
fn prepare_out_dir(out_dir: &Path) -> Result<(), Error> {
    if out_dir.as_os_str().is_empty() {
        return Err(Error::invalid("out_dir", "is required"));
    }
    if !out_dir.is_absolute() {
        return Err(Error::invalid(
            "out_dir",
            "must be an absolute path on the server's filesystem",
        ));
    }
    if out_dir
        .components()
        .any(|component| matches!(component, Component::ParentDir))
    {
        return Err(Error::invalid("out_dir", "must not contain `..`"));
    }
    match fs::symlink_metadata(out_dir) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(Error::invalid("out_dir", "is a symbolic link"))
        }
        Ok(meta) if !meta.is_dir() => {
            return Err(Error::AlreadyExists(format!(
                "{} exists and is not a directory",
                out_dir.display()
            )))
        }
        Ok(_) => {
            let mut entries =
                fs::read_dir(out_dir).map_err(|e| io_error("cannot read", out_dir, e))?;
            if entries.next().is_some() {
                return Err(Error::AlreadyExists(format!(
                    "{} exists and is not empty",
                    out_dir.display()
                )));
            }
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(out_dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| io_error("cannot set the mode of", out_dir, e))?;
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let parent = out_dir.parent().unwrap_or(Path::new("/"));
            if !parent.is_dir() {
                return Err(Error::invalid(
                    "out_dir",
                    format!("parent directory {} does not exist", parent.display()),
                ));
            }
            fs::DirBuilder::new()
                .mode(0o700)
                .create(out_dir)
                .map_err(|e| io_error("cannot create", out_dir, e))?;
        }
        Err(error) => return Err(io_error("cannot inspect", out_dir, error)),
    }
    Ok(())
}

/// Writes a backup of the store in `data_dir` into `out_dir` (see the module comment).
/// Blocking: call from a blocking thread.
pub fn backup(store: &dyn Store, data_dir: &Path, out_dir: &Path) -> Result<BackupSummary, Error> {
    let started = Instant::now();
    prepare_out_dir(out_dir)?;
    let written = write_backup(store, data_dir, out_dir, started);
    if written.is_err() {
        // The directory was absent or empty: what is in it now is this backup's, unfinished.
        if let Err(error) = remove_contents(out_dir) {
            tracing::warn!(out_dir = %out_dir.display(), %error, "cannot remove an unfinished backup");
        }
    }
    written
}

fn remove_contents(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if fs::symlink_metadata(&path)?.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn write_backup(
    store: &dyn Store,
    data_dir: &Path,
    out_dir: &Path,
    started: Instant,
) -> Result<BackupSummary, Error> {
    let head = store.checkpoint(&out_dir.join("store"))?;
    for name in key_files(data_dir)? {
        let from = data_dir.join(&name);
        let to = out_dir.join(&name);
        copy_file(&from, &to, None)?;
    }
    let mut files = Vec::new();
    list_files(out_dir, out_dir, &mut files)?;
    let mut manifest_files = Vec::with_capacity(files.len());
    let mut bytes = 0;
    for path in files {
        let relative = relative_name(out_dir, &path)?;
        if relative == MANIFEST_FILE {
            continue;
        }
        let (size, sha256) = digest_file(&path)?;
        bytes += size;
        manifest_files.push(ManifestFile {
            path: relative,
            size,
            sha256,
        });
    }
    manifest_files.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        created_at: Utc::now(),
        audit_sequence: head.as_ref().map(|record| record.sequence),
        audit_head_hash: head.as_ref().map(|record| record.hash.clone()),
        index: "rebuild".into(),
        files: manifest_files,
    };
    let encoded = serde_json::to_vec_pretty(&manifest).expect("manifests serialise");
    let manifest_path = out_dir.join(MANIFEST_FILE);
    write_new_file(&manifest_path, &encoded)?;
    sync_dir(out_dir)?;
    Ok(BackupSummary {
        out_dir: out_dir.to_path_buf(),
        files: manifest.files.len() as u64,
        bytes,
        audit_sequence: manifest.audit_sequence.unwrap_or(0),
        audit_head_hash: manifest.audit_head_hash.unwrap_or_default(),
        manifest_sha256: hex::encode(Sha256::digest(&encoded)),
        duration: started.elapsed(),
    })
}

/// The regular files at the top of the data directory that belong in a backup.
fn key_files(data_dir: &Path) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    let entries = fs::read_dir(data_dir).map_err(|e| io_error("cannot read", data_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("cannot read", data_dir, e))?;
        let file_type = entry
            .file_type()
            .map_err(|e| io_error("cannot inspect", &entry.path(), e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if file_type.is_file() && !NOT_BACKED_UP.contains(&name.as_str()) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Every regular file under `dir`, recursively; a symlink or special file is an error.
fn list_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let entries = fs::read_dir(dir).map_err(|e| io_error("cannot read", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("cannot read", dir, e))?;
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|e| io_error("cannot inspect", &path, e))?;
        if file_type.is_symlink() {
            return Err(Error::FailedPrecondition(format!(
                "{} is a symbolic link: a backup holds regular files only",
                relative_name(root, &path)?
            )));
        } else if file_type.is_dir() {
            list_files(root, &path, out)?;
        } else if file_type.is_file() {
            out.push(path);
        } else {
            return Err(Error::FailedPrecondition(format!(
                "{} is not a regular file",
                relative_name(root, &path)?
            )));
        }
    }
    Ok(())
}

fn relative_name(root: &Path, path: &Path) -> Result<String, Error> {
    let relative = path
        .strip_prefix(root)
        .map_err(|_| Error::Internal(format!("{} is outside the backup", path.display())))?;
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().ok_or_else(|| {
                Error::FailedPrecondition(format!("{} has a non-UTF-8 name", path.display()))
            })?),
            _ => {
                return Err(Error::FailedPrecondition(format!(
                    "{} is not a plain relative path",
                    path.display()
                )))
            }
        }
    }
    Ok(parts.join("/"))
}

/// Size and hex SHA-256 of a file, read in 1 MiB chunks.
fn digest_file(path: &Path) -> Result<(u64, String), Error> {
    let mut file = File::open(path).map_err(|e| io_error("cannot open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| io_error("cannot read", path, e))?;
        if n == 0 {
            return Ok((size, hex::encode(hasher.finalize())));
        }
        size += n as u64;
        hasher.update(&buffer[..n]);
    }
}

/// Copies `from` to a new file `to` (mode 0600), synced; with `expected`, the bytes copied
/// must have that size and digest (checked before the copy is kept).
fn copy_file(from: &Path, to: &Path, expected: Option<&ManifestFile>) -> Result<(), Error> {
    let mut source = File::open(from).map_err(|e| io_error("cannot open", from, e))?;
    let mut target = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| io_error("cannot create", to, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = source
            .read(&mut buffer)
            .map_err(|e| io_error("cannot read", from, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buffer[..n]);
        target
            .write_all(&buffer[..n])
            .map_err(|e| io_error("cannot write", to, e))?;
    }
    target
        .sync_all()
        .map_err(|e| io_error("cannot sync", to, e))?;
    if let Some(expected) = expected {
        let digest = hex::encode(hasher.finalize());
        if size != expected.size || digest != expected.sha256 {
            return Err(Error::FailedPrecondition(format!(
                "{} changed while it was restored (digest mismatch)",
                expected.path
            )));
        }
    }
    Ok(())
}

fn write_new_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error("cannot create", path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("cannot write", path, e))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|e| io_error("cannot sync", dir, e))
}

/// Why a backup cannot be restored. Every variant names the file concerned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("{0}: no manifest.json (not a backup, or an interrupted one)")]
    NoManifest(String),
    #[error("manifest.json is not a valid manifest: {0}")]
    BadManifest(String),
    #[error("manifest.json lists an unsafe path {0:?}")]
    UnsafePath(String),
    #[error("{0} is listed in the manifest but missing from the backup")]
    Missing(String),
    #[error("{0} is in the backup but not in the manifest")]
    Extra(String),
    #[error("{0} is a symbolic link or not a regular file")]
    NotRegular(String),
    #[error("{path}: size {found} differs from the manifest's {expected}")]
    Size {
        path: String,
        expected: u64,
        found: u64,
    },
    #[error("{0}: SHA-256 differs from the manifest's (the file was changed or damaged)")]
    Digest(String),
    #[error("cannot read {0}")]
    Io(String),
}

/// A manifest path must be relative, `/`-separated plain names (no `.`, `..`, empty parts).
fn safe_path(path: &str) -> bool {
    !path.is_empty()
        && path != MANIFEST_FILE
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != ".." && !part.contains('\0'))
}

/// Every file under `dir` (relative names) with its metadata; symlinks and special files
/// are refused, never followed.
fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) -> Result<(), VerifyError> {
    let entries =
        fs::read_dir(dir).map_err(|e| VerifyError::Io(format!("{}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| VerifyError::Io(format!("{}: {e}", dir.display())))?;
        let path = entry.path();
        let name = path
            .strip_prefix(root)
            .ok()
            .and_then(|relative| relative.to_str())
            .map(str::to_string)
            .unwrap_or_else(|| path.display().to_string());
        let meta = fs::symlink_metadata(&path)
            .map_err(|e| VerifyError::Io(format!("{}: {e}", path.display())))?;
        if meta.file_type().is_symlink() {
            return Err(VerifyError::NotRegular(name));
        } else if meta.is_dir() {
            walk(root, &path, out)?;
        } else if meta.is_file() {
            out.insert(name, meta.len());
        } else {
            return Err(VerifyError::NotRegular(name));
        }
    }
    Ok(())
}

/// Verifies a backup against its manifest: every listed file present, regular, of the
/// listed size and SHA-256; nothing unlisted. Returns the manifest.
pub fn verify(backup_dir: &Path) -> Result<Manifest, VerifyError> {
    let manifest_path = backup_dir.join(MANIFEST_FILE);
    let meta = fs::symlink_metadata(&manifest_path)
        .map_err(|_| VerifyError::NoManifest(backup_dir.display().to_string()))?;
    if !meta.is_file() {
        return Err(VerifyError::NotRegular(MANIFEST_FILE.into()));
    }
    let bytes = fs::read(&manifest_path)
        .map_err(|e| VerifyError::Io(format!("{}: {e}", manifest_path.display())))?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| VerifyError::BadManifest(e.to_string()))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(VerifyError::BadManifest(format!(
            "format {} is not supported (expected {MANIFEST_FORMAT})",
            manifest.format
        )));
    }
    let mut listed = BTreeMap::new();
    for file in &manifest.files {
        if !safe_path(&file.path) {
            return Err(VerifyError::UnsafePath(file.path.clone()));
        }
        if listed.insert(file.path.clone(), file).is_some() {
            return Err(VerifyError::BadManifest(format!(
                "{} is listed twice",
                file.path
            )));
        }
    }
    let mut present = BTreeMap::new();
    walk(backup_dir, backup_dir, &mut present)?;
    present.remove(MANIFEST_FILE);
    for name in present.keys() {
        if !listed.contains_key(name) {
            return Err(VerifyError::Extra(name.clone()));
        }
    }
    for (name, file) in &listed {
        let Some(&size) = present.get(name) else {
            return Err(VerifyError::Missing(name.clone()));
        };
        if size != file.size {
            return Err(VerifyError::Size {
                path: name.clone(),
                expected: file.size,
                found: size,
            });
        }
        let (_, digest) = digest_file(&backup_dir.join(name))
            .map_err(|e| VerifyError::Io(format!("{name}: {e}")))?;
        if digest != file.sha256 {
            return Err(VerifyError::Digest(name.clone()));
        }
    }
    Ok(manifest)
}

/// What a finished restore reports.
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    pub files: u64,
    pub bytes: u64,
    pub audit_entries: u64,
    pub audit_head_hash: String,
}

/// Restores the backup in `backup_dir` into `data_dir` (absent or empty), verifying it first.
/// On success `data_dir` is ready for a server to start on; the index is rebuilt then.
pub fn restore(backup_dir: &Path, data_dir: &Path) -> anyhow::Result<RestoreSummary> {
    use anyhow::{bail, Context as _};
    let manifest = verify(backup_dir)
        .with_context(|| format!("refusing to restore {}", backup_dir.display()))?;
    match fs::symlink_metadata(data_dir) {
        Ok(meta) if !meta.is_dir() => bail!(
            "refusing to restore: {} exists and is not a directory",
            data_dir.display()
        ),
        Ok(_) => {
            if fs::read_dir(data_dir)?.next().is_some() {
                bail!(
                    "refusing to restore: the data directory {} is not empty",
                    data_dir.display()
                );
            }
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?,
        Err(error) => return Err(error).context(format!("cannot inspect {}", data_dir.display())),
    }
    let staging = data_dir.join(RESTORING_DIR);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let mut bytes = 0;
    let mut top_level = std::collections::BTreeSet::new();
    for file in &manifest.files {
        let target = staging.join(&file.path);
        if let Some(parent) = target.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        copy_file(&backup_dir.join(&file.path), &target, Some(file))?;
        bytes += file.size;
        top_level.insert(file.path.split('/').next().unwrap_or_default().to_string());
    }
    let staged_store = staging.join("store");
    if staged_store.is_dir() {
        sync_dir(&staged_store)?;
    }
    // Key files first, the store last: a data directory with a `store` is a complete one.
    let mut names: Vec<&String> = top_level.iter().filter(|name| *name != "store").collect();
    let store = String::from("store");
    if top_level.contains("store") {
        names.push(&store);
    } else {
        bail!("refusing to restore: the backup has no store");
    }
    for name in names {
        fs::rename(staging.join(name), data_dir.join(name))
            .with_context(|| format!("cannot move {name} into {}", data_dir.display()))?;
    }
    fs::remove_dir(&staging).with_context(|| format!("cannot remove {}", staging.display()))?;
    sync_dir(data_dir)?;

    // The restored store opens, and its audit chain verifies up to the manifest's head.
    let store: Arc<dyn Store> = Arc::new(
        RocksStore::open(&data_dir.join("store")).context("the restored store does not open")?,
    );
    // Verified here from the store directly (no audit writer: the store must be closed again
    // before the server opens it).
    let verification = verify_audit_chain(store.as_ref())?;
    drop(store);
    if let Some((sequence, problem)) = verification.problem {
        bail!("the restored audit log does not verify at entry {sequence}: {problem}");
    }
    let expected_entries = manifest.audit_sequence.unwrap_or(0);
    let expected_head = manifest.audit_head_hash.clone().unwrap_or_default();
    if verification.num_entries != expected_entries || verification.head_hash != expected_head {
        bail!(
            "the restored audit log ends at entry {} ({}), the manifest says {} ({})",
            verification.num_entries,
            verification.head_hash,
            expected_entries,
            expected_head
        );
    }
    Ok(RestoreSummary {
        files: manifest.files.len() as u64,
        bytes,
        audit_entries: verification.num_entries,
        audit_head_hash: verification.head_hash,
    })
}

/// Walks the audit chain of `store`: sequences, links and hashes.
fn verify_audit_chain(store: &dyn Store) -> Result<crate::audit::Verification, Error> {
    let mut next = 1u64;
    let mut previous = String::new();
    loop {
        let chunk = store.scan_audit_records(next, 1024)?;
        let len = chunk.len();
        for record in chunk {
            let problem = if record.sequence != next {
                Some(format!("expected entry {next}, found {}", record.sequence))
            } else if record.previous_hash != previous {
                Some("previous_hash does not match the entry before it".to_string())
            } else if record.compute_hash() != record.hash {
                Some("hash does not match the entry's contents".to_string())
            } else {
                None
            };
            if let Some(problem) = problem {
                return Ok(crate::audit::Verification {
                    num_entries: next - 1,
                    head_hash: previous,
                    problem: Some((next, problem)),
                });
            }
            previous = record.hash;
            next += 1;
        }
        if len < 1024 {
            return Ok(crate::audit::Verification {
                num_entries: next - 1,
                head_hash: previous,
                problem: None,
            });
        }
    }
}

/// Refuses to start on a data directory that an interrupted restore left behind.
pub fn check_not_half_restored(data_dir: &Path) -> anyhow::Result<()> {
    if fs::symlink_metadata(data_dir.join(RESTORING_DIR)).is_ok() {
        anyhow::bail!(
            "{} holds an interrupted restore ({}): remove the directory and restore again",
            data_dir.display(),
            RESTORING_DIR
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditLog;

    /// A backup of a small store, in `<tmp>/backup`.
    fn backup_of_a_store() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        let store = Arc::new(RocksStore::open(&data.join("store")).unwrap());
        let log = AuditLog::open(Arc::clone(&store) as Arc<dyn Store>).unwrap();
        log.append_blocking(
            crate::audit::AuditEvent {
                actor: "tester".into(),
                action: "Test",
                target: String::new(),
                parameters: serde_json::json!({}),
                result: "ok".into(),
            },
            Utc::now(),
        )
        .unwrap();
        fs::write(data.join("page_token.key"), b"secret key bytes").unwrap();
        fs::write(data.join("admin.token"), b"hf_bearer").unwrap();
        let out = dir.path().join("backup");
        let summary = backup(store.as_ref(), &data, &out).unwrap();
        assert!(summary.files > 3);
        (dir, out)
    }

    #[test]
    fn a_backup_verifies_and_restores_into_an_empty_directory_only() {
        let (dir, out) = backup_of_a_store();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let manifest = verify(&out).unwrap();
        assert_eq!(manifest.index, "rebuild");
        let names: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert!(names.contains(&"page_token.key"), "{names:?}");
        assert!(!names.contains(&"admin.token"), "bearer secrets stay out");
        assert!(names.iter().any(|name| name.starts_with("store/")));

        let restored = dir.path().join("restored");
        let summary = restore(&out, &restored).unwrap();
        assert_eq!(summary.files, manifest.files.len() as u64);
        assert_eq!(
            fs::read(restored.join("page_token.key")).unwrap(),
            b"secret key bytes"
        );
        assert!(!restored.join(RESTORING_DIR).exists());
        // Not twice into the same directory.
        let again = restore(&out, &restored).unwrap_err().to_string();
        assert!(again.contains("not empty"), "{again}");
    }

    #[test]
    fn out_dir_must_be_absolute_and_empty() {
        let (dir, out) = backup_of_a_store();
        let store = RocksStore::open(&dir.path().join("other")).unwrap();
        let data = dir.path().join("data");
        let refused = backup(&store, &data, &out).unwrap_err();
        assert!(matches!(refused, Error::AlreadyExists(_)), "{refused}");
        let refused = backup(&store, &data, Path::new("relative/dir")).unwrap_err();
        assert!(refused.to_string().contains("out_dir"), "{refused}");
        let refused = backup(&store, &data, &dir.path().join("no/such/parent")).unwrap_err();
        assert!(refused.to_string().contains("parent"), "{refused}");
    }

    #[test]
    fn a_changed_byte_is_refused() {
        let (_dir, out) = backup_of_a_store();
        let manifest = verify(&out).unwrap();
        let victim = manifest
            .files
            .iter()
            .find(|f| f.path.starts_with("store/") && f.size > 0)
            .unwrap();
        let path = out.join(&victim.path);
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(verify(&out), Err(VerifyError::Digest(victim.path.clone())));
    }

    #[test]
    fn missing_extra_and_linked_files_are_refused() {
        let (_dir, out) = backup_of_a_store();
        fs::write(out.join("store/EXTRA"), b"x").unwrap();
        assert_eq!(verify(&out), Err(VerifyError::Extra("store/EXTRA".into())));
        fs::remove_file(out.join("store/EXTRA")).unwrap();

        fs::rename(out.join("page_token.key"), out.join("moved")).unwrap();
        assert!(matches!(
            verify(&out),
            Err(VerifyError::Extra(_) | VerifyError::Missing(_))
        ));
        fs::remove_file(out.join("moved")).unwrap();
        assert_eq!(
            verify(&out),
            Err(VerifyError::Missing("page_token.key".into()))
        );

        // A symlink in place of a listed file is refused, not followed.
        std::os::unix::fs::symlink("/etc/hostname", out.join("page_token.key")).unwrap();
        assert_eq!(
            verify(&out),
            Err(VerifyError::NotRegular("page_token.key".into()))
        );
    }

    #[test]
    fn a_manifest_cannot_point_outside_the_backup() {
        let (_dir, out) = backup_of_a_store();
        let path = out.join(MANIFEST_FILE);
        let mut manifest: Manifest = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        manifest.files.push(ManifestFile {
            path: "../outside".into(),
            size: 0,
            sha256: String::new(),
        });
        fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        assert_eq!(
            verify(&out),
            Err(VerifyError::UnsafePath("../outside".into()))
        );
        fs::remove_file(&path).unwrap();
        assert!(matches!(verify(&out), Err(VerifyError::NoManifest(_))));
    }

    #[test]
    fn a_half_restored_directory_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        check_not_half_restored(dir.path()).unwrap();
        fs::create_dir(dir.path().join(RESTORING_DIR)).unwrap();
        assert!(check_not_half_restored(dir.path()).is_err());
    }
}
