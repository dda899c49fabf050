//! BagIt bags (RFC 8493) for eDiscovery exports: `bagit.txt`, `bag-info.txt`,
//! `manifest-sha256.txt`, `tagmanifest-sha256.txt` and the payload
//! `data/interactions.jsonl`, one interaction per line with its full fields and digest.
//!
//! An export writes `data/interactions.jsonl` as items arrive and the tag files only at the
//! end, after the server's trailer (count and digest) has been compared with what arrived;
//! a directory with a payload but no `manifest-sha256.txt` is an interrupted export that
//! `resume_point` can continue (after rechecking every line already there).
//!
//! Bags hold evidence: files are created 0600 and directories 0700, and `verify` never
//! follows a symbolic link and recomputes each item's `content_sha256` from its content.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const PAYLOAD: &str = "data/interactions.jsonl";
const PARAMETERS: &str = "holdfast-export.json";

/// What an export was asked for; kept beside the payload so a resume asks the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportParameters {
    pub case_id: String,
    pub case_name: String,
    pub query: String,
    pub mailboxes: Vec<String>,
    pub principal: String,
    pub started_at: String,
}

pub fn payload_path(dir: &Path) -> PathBuf {
    dir.join(PAYLOAD)
}

pub fn is_complete(dir: &Path) -> bool {
    dir.join("manifest-sha256.txt").exists()
}

/// Creates `dir` and `dir/data` (mode 0700 where created here).
fn create_private_dirs(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.join("data"))
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes (replacing) a file readable by its owner only.
fn write_private(path: &Path, contents: impl AsRef<[u8]>) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_ref())?;
    file.sync_all()?;
    Ok(())
}

pub fn write_parameters(dir: &Path, parameters: &ExportParameters) -> anyhow::Result<()> {
    create_private_dirs(dir)?;
    let text = serde_json::to_string_pretty(parameters)?;
    write_private(&dir.join(PARAMETERS), text)
}

pub fn read_parameters(dir: &Path) -> anyhow::Result<Option<ExportParameters>> {
    match std::fs::read_to_string(dir.join(PARAMETERS)) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!("{} is not a holdfast export in progress", dir.display())
        })?)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// One payload line, checked: it is an interaction whose `content_sha256` is the digest of
/// its content (recomputed with the server's canonical encoding). Returns (id, digest).
pub fn check_line(line: &str, number: u64) -> anyhow::Result<(String, String)> {
    let item: crate::json::JsonInteraction = serde_json::from_str(line)
        .with_context(|| format!("line {number} of the payload is not an interaction"))?;
    let Some(id) = item.id.clone() else {
        bail!("line {number} of the payload has no id");
    };
    let Some(claimed) = item.content_sha256.clone() else {
        bail!("line {number} of the payload ({id}) has no content_sha256");
    };
    let Some(content) = item.content() else {
        bail!("line {number} of the payload ({id}) has no created_at");
    };
    if content.sha256_hex() != claimed {
        bail!("line {number} of the payload ({id}): content does not match its content_sha256");
    }
    Ok((id, claimed))
}

/// Opens the payload of an interrupted export for appending: drops a partly written last
/// line, rechecks every complete line (digest recomputed, ids increasing) and returns the
/// file, the id of the last complete item and the number of items.
pub fn resume_point(dir: &Path) -> anyhow::Result<(File, Option<String>, u64)> {
    let path = payload_path(dir);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut complete_len = 0u64;
    let mut last_id = None;
    let mut count = 0u64;
    let mut reader = BufReader::new(&mut file);
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader.read_line(&mut line)?;
        if read == 0 || !line.ends_with('\n') {
            break;
        }
        let (id, _) = check_line(line.trim_end_matches('\n'), count + 1).with_context(|| {
            format!(
                "{} is damaged; it cannot be resumed (start again in another directory)",
                path.display()
            )
        })?;
        if last_id.as_ref().is_some_and(|last| *last >= id) {
            bail!(
                "line {} of {} is out of order; it cannot be resumed",
                count + 1,
                path.display()
            );
        }
        last_id = Some(id);
        complete_len += read as u64;
        count += 1;
    }
    drop(reader);
    file.set_len(complete_len)?;
    file.seek(SeekFrom::End(0))?;
    Ok((file, last_id, count))
}

/// Opens a file of a bag for reading, refusing symbolic links (the last component through
/// `O_NOFOLLOW`, directories on the way by `check_no_links`) and anything but regular files.
/// `O_NONBLOCK` so that a named pipe in a bag is refused rather than waited on for ever (it
/// changes nothing for a regular file).
fn open_in_bag(path: &Path) -> anyhow::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| {
            format!(
                "cannot read {} (missing, or a symbolic link)",
                path.display()
            )
        })?;
    if !file.metadata()?.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    Ok(file)
}

/// Refuses a path inside the bag whose directories include a symbolic link.
fn check_no_links(dir: &Path, name: &str) -> anyhow::Result<()> {
    let mut path = dir.to_path_buf();
    let parts: Vec<&str> = name.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        path.push(part);
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if meta.file_type().is_symlink() || !meta.is_dir() {
            bail!("{} is a symbolic link or not a directory", path.display());
        }
    }
    Ok(())
}

fn read_in_bag(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    open_in_bag(path)?
        .read_to_string(&mut text)
        .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
    Ok(text)
}

fn sha256_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut file = open_in_bag(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        total += read as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// The digest over item digests as the server's export trailer computes it: SHA-256 of each
/// `content_sha256`, in order, each followed by a newline.
#[derive(Default)]
pub struct TrailerDigest {
    hasher: Sha256,
    count: u64,
}

impl TrailerDigest {
    pub fn add(&mut self, content_sha256: &str) {
        self.hasher.update(content_sha256.as_bytes());
        self.hasher.update(b"\n");
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn finish(self) -> (String, u64) {
        (hex::encode(self.hasher.finalize()), self.count)
    }
}

/// The digest of the item digests, in payload order (as the server's export trailer), after
/// checking every line (`check_line`: each item's digest is recomputed from its content).
pub fn content_digest(dir: &Path) -> anyhow::Result<(String, u64)> {
    let file = open_in_bag(&payload_path(dir))?;
    let mut digest = TrailerDigest::default();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        let (_, content_sha256) = check_line(&line, index as u64 + 1)?;
        digest.add(&content_sha256);
    }
    Ok(digest.finish())
}

/// Writes the tag files that complete the bag.
pub fn finish(dir: &Path, parameters: &ExportParameters, finished_at: &str) -> anyhow::Result<u64> {
    let (payload_digest, payload_bytes) = sha256_file(&payload_path(dir))?;
    let (items_digest, count) = content_digest(dir)?;
    write_private(
        &dir.join("bagit.txt"),
        "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n",
    )?;
    write_private(
        &dir.join("manifest-sha256.txt"),
        format!("{payload_digest}  {PAYLOAD}\n"),
    )?;
    let one_line = |text: &str| text.replace(['\n', '\r'], " ");
    let mut info = String::new();
    info.push_str(&format!(
        "Bag-Software-Agent: holdfast {}\n",
        env!("CARGO_PKG_VERSION")
    ));
    info.push_str(&format!(
        "Bagging-Date: {}\n",
        &finished_at[..10.min(finished_at.len())]
    ));
    info.push_str(&format!("External-Identifier: {}\n", parameters.case_id));
    info.push_str(&format!("Payload-Oxum: {payload_bytes}.1\n"));
    info.push_str(&format!(
        "Holdfast-Case: {}\n",
        one_line(&parameters.case_name)
    ));
    info.push_str(&format!("Holdfast-Case-Id: {}\n", parameters.case_id));
    info.push_str(&format!(
        "Holdfast-Query: {}\n",
        one_line(&parameters.query)
    ));
    if !parameters.mailboxes.is_empty() {
        info.push_str(&format!(
            "Holdfast-Mailboxes: {}\n",
            parameters.mailboxes.join(", ")
        ));
    }
    info.push_str(&format!("Holdfast-Principal: {}\n", parameters.principal));
    info.push_str(&format!(
        "Holdfast-Export-Started: {}\n",
        parameters.started_at
    ));
    info.push_str(&format!("Holdfast-Export-Finished: {finished_at}\n"));
    info.push_str(&format!("Holdfast-Item-Count: {count}\n"));
    info.push_str(&format!("Holdfast-Content-Digest: {items_digest}\n"));
    write_private(&dir.join("bag-info.txt"), info)?;
    let mut tags = String::new();
    for tag in ["bagit.txt", "bag-info.txt", "manifest-sha256.txt"] {
        let (digest, _) = sha256_file(&dir.join(tag))?;
        tags.push_str(&format!("{digest}  {tag}\n"));
    }
    write_private(&dir.join("tagmanifest-sha256.txt"), tags)?;
    let _ = std::fs::remove_file(dir.join(PARAMETERS));
    Ok(count)
}

/// Checks a bag: every manifest and tag-manifest digest (the payload manifest must list the
/// payload), the payload size, each item's `content_sha256` recomputed from its content, and
/// the item count and content digest recorded in `bag-info.txt`. Symbolic links anywhere in
/// the bag are refused, never followed. Returns the item count.
pub fn verify(dir: &Path) -> anyhow::Result<u64> {
    check_no_links(dir, PAYLOAD)?;
    let bagit = read_in_bag(&dir.join("bagit.txt"))
        .with_context(|| format!("{} is not a bag (no bagit.txt)", dir.display()))?;
    if !bagit.starts_with("BagIt-Version: ") {
        bail!("bagit.txt does not declare a BagIt version");
    }
    for manifest in ["manifest-sha256.txt", "tagmanifest-sha256.txt"] {
        let text =
            read_in_bag(&dir.join(manifest)).with_context(|| format!("missing {manifest}"))?;
        let mut listed_payload = false;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Some((expected, name)) = line.split_once("  ") else {
                bail!("{manifest}: malformed line {line:?}");
            };
            if name
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
            {
                bail!("{manifest}: path {name:?} leaves the bag");
            }
            check_no_links(dir, name)?;
            let (actual, _) = sha256_file(&dir.join(name))?;
            if actual != expected {
                bail!("{name} does not match its digest in {manifest}");
            }
            listed_payload |= name == PAYLOAD;
        }
        if manifest == "manifest-sha256.txt" && !listed_payload {
            bail!("manifest-sha256.txt does not list {PAYLOAD}");
        }
    }
    let info = read_in_bag(&dir.join("bag-info.txt"))?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_string)
    };
    let (_, payload_bytes) = sha256_file(&payload_path(dir))?;
    if let Some(oxum) = field("Payload-Oxum") {
        let bytes = oxum.split('.').next().unwrap_or_default();
        if bytes != payload_bytes.to_string() {
            bail!("Payload-Oxum says {bytes} bytes; the payload has {payload_bytes}");
        }
    }
    let (digest, count) = content_digest(dir)?;
    if field("Holdfast-Item-Count").as_deref() != Some(count.to_string().as_str()) {
        bail!("bag-info.txt's item count does not match the payload ({count} items)");
    }
    if field("Holdfast-Content-Digest").as_deref() != Some(digest.as_str()) {
        bail!("bag-info.txt's content digest does not match the payload");
    }
    Ok(count)
}

/// Appends one line to the payload.
pub fn append_line(file: &mut File, line: &str) -> anyhow::Result<()> {
    file.write_all(line.as_bytes())?;
    file.write_all(b"\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::JsonInteraction;
    use chrono::TimeZone;
    use std::os::unix::fs::PermissionsExt;

    fn line(i: u32, prompt: &str) -> String {
        let mut item = JsonInteraction {
            id: Some(format!("01J{i:023}")),
            mailbox_id: "alice@contoso.com".into(),
            client_key: format!("k{i}"),
            app: "Word".into(),
            created_at: Some(chrono::Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, i).unwrap()),
            prompt: prompt.into(),
            response: "r".into(),
            ..Default::default()
        };
        item.content_sha256 = Some(item.content().unwrap().sha256_hex());
        serde_json::to_string(&item).unwrap()
    }

    fn parameters() -> ExportParameters {
        ExportParameters {
            case_id: "c".into(),
            case_name: "n".into(),
            query: "q".into(),
            mailboxes: vec![],
            principal: "p".into(),
            started_at: "2025-01-01T00:00:00Z".into(),
        }
    }

    /// A finished bag of three items in `<tmp>/bag`.
    fn bag() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bag");
        write_parameters(&dir, &parameters()).unwrap();
        let (mut file, last, count) = resume_point(&dir).unwrap();
        assert_eq!((last, count), (None, 0));
        for i in 1..=3 {
            append_line(&mut file, &line(i, &format!("prompt {i}"))).unwrap();
        }
        assert_eq!(
            finish(&dir, &parameters(), "2025-01-02T00:00:00Z").unwrap(),
            3
        );
        (tmp, dir)
    }

    #[test]
    fn a_bag_verifies_and_is_private() {
        let (_tmp, dir) = bag();
        assert_eq!(verify(&dir).unwrap(), 3);
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("data")), 0o700);
        for file in ["bagit.txt", "bag-info.txt", "manifest-sha256.txt", PAYLOAD] {
            assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
        }
    }

    /// Rewrites the payload and every digest over it, as a forger would.
    fn forge_payload(dir: &Path, payload: &str) {
        std::fs::write(payload_path(dir), payload).unwrap();
        let (digest, bytes) = sha256_file(&payload_path(dir)).unwrap();
        std::fs::write(
            dir.join("manifest-sha256.txt"),
            format!("{digest}  {PAYLOAD}\n"),
        )
        .unwrap();
        let info = std::fs::read_to_string(dir.join("bag-info.txt")).unwrap();
        let info: String = info
            .lines()
            .map(|l| {
                if l.starts_with("Payload-Oxum") {
                    format!("Payload-Oxum: {bytes}.1\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(dir.join("bag-info.txt"), info).unwrap();
        let mut tags = String::new();
        for tag in ["bagit.txt", "bag-info.txt", "manifest-sha256.txt"] {
            let (digest, _) = sha256_file(&dir.join(tag)).unwrap();
            tags.push_str(&format!("{digest}  {tag}\n"));
        }
        std::fs::write(dir.join("tagmanifest-sha256.txt"), tags).unwrap();
    }

    #[test]
    fn an_item_whose_content_no_longer_matches_its_digest_is_refused() {
        let (_tmp, dir) = bag();
        let payload = std::fs::read_to_string(payload_path(&dir)).unwrap();
        // Same claimed content_sha256, edited prompt; every bag-level digest recomputed.
        let edited = payload.replacen("prompt 2", "prompt X", 1);
        forge_payload(&dir, &edited);
        let error = verify(&dir).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(error.contains("content_sha256"), "{error}");
    }

    #[test]
    fn symbolic_links_are_refused_not_followed() {
        let (tmp, dir) = bag();
        // The payload replaced by a link to an identical copy outside the bag.
        let outside = tmp.path().join("outside.jsonl");
        std::fs::copy(payload_path(&dir), &outside).unwrap();
        std::fs::remove_file(payload_path(&dir)).unwrap();
        std::os::unix::fs::symlink(&outside, payload_path(&dir)).unwrap();
        let error = format!("{:#}", verify(&dir).unwrap_err());
        assert!(error.contains("symbolic link"), "{error}");

        // The data directory replaced by a link.
        let (tmp, dir) = bag();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::rename(dir.join("data"), &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("data")).unwrap();
        let error = format!("{:#}", verify(&dir).unwrap_err());
        assert!(error.contains("symbolic link"), "{error}");
    }

    /// Found by the `bag_verify` fuzz target (a timeout): a payload or tag file that is a
    /// named pipe with no writer made `verify` wait for ever.
    #[test]
    fn fuzz_timeout_payload_or_bag_info_is_a_named_pipe() {
        for name in [PAYLOAD, "bag-info.txt", "bagit.txt"] {
            let (_tmp, dir) = bag();
            let path = dir.join(name);
            std::fs::remove_file(&path).unwrap();
            let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
            let (sender, receiver) = std::sync::mpsc::channel();
            std::thread::spawn(move || sender.send(format!("{:#}", verify(&dir).unwrap_err())));
            let error = receiver
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("verify waits on a named pipe at {name}"));
            assert!(error.contains("not a regular file"), "{name}: {error}");
        }
    }

    #[test]
    fn resuming_rechecks_the_lines_already_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bag");
        write_parameters(&dir, &parameters()).unwrap();
        let good = format!("{}\n{}\n", line(1, "a"), line(2, "b"));
        std::fs::write(payload_path(&dir), format!("{good}{{\"partial")).unwrap();
        let (_, last, count) = resume_point(&dir).unwrap();
        assert_eq!(count, 2);
        assert_eq!(last.as_deref(), Some("01J00000000000000000000002"));
        // The partial line is dropped.
        assert_eq!(std::fs::read_to_string(payload_path(&dir)).unwrap(), good);

        std::fs::write(payload_path(&dir), good.replacen("\"a\"", "\"z\"", 1)).unwrap();
        let error = format!("{:#}", resume_point(&dir).unwrap_err());
        assert!(error.contains("content_sha256"), "{error}");

        let swapped = format!("{}\n{}\n", line(2, "b"), line(1, "a"));
        std::fs::write(payload_path(&dir), swapped).unwrap();
        let error = format!("{:#}", resume_point(&dir).unwrap_err());
        assert!(error.contains("out of order"), "{error}");
    }
}
