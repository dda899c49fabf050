//! BagIt bags (RFC 8493) for eDiscovery exports: `bagit.txt`, `bag-info.txt`,
//! `manifest-sha256.txt`, `tagmanifest-sha256.txt` and the payload
//! `data/interactions.jsonl`, one interaction per line with its full fields and digest.
//!
//! An export writes `data/interactions.jsonl` as items arrive and the tag files only at the
//! end, so a directory with a payload but no `manifest-sha256.txt` is an interrupted export
//! that `resume_point` can continue.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
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

pub fn write_parameters(dir: &Path, parameters: &ExportParameters) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("data"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let text = serde_json::to_string_pretty(parameters)?;
    std::fs::write(dir.join(PARAMETERS), text)?;
    Ok(())
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

/// Opens the payload of an interrupted export for appending: drops a partly written last
/// line and returns the file, the id of the last complete item and the number of items.
pub fn resume_point(dir: &Path) -> anyhow::Result<(File, Option<String>, u64)> {
    let path = payload_path(dir);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
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
        #[derive(Deserialize)]
        struct IdOnly {
            id: String,
        }
        let parsed: IdOnly = serde_json::from_str(&line)
            .with_context(|| format!("line {} of {} is damaged", count + 1, path.display()))?;
        last_id = Some(parsed.id);
        complete_len += read as u64;
        count += 1;
    }
    drop(reader);
    file.set_len(complete_len)?;
    file.seek(SeekFrom::End(0))?;
    Ok((file, last_id, count))
}

fn sha256_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
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

/// The digest of the item digests, in payload order (as the server's export trailer).
pub fn content_digest(dir: &Path) -> anyhow::Result<(String, u64)> {
    #[derive(Deserialize)]
    struct DigestOnly {
        content_sha256: String,
    }
    let file = File::open(payload_path(dir))?;
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        let item: DigestOnly = serde_json::from_str(&line)
            .with_context(|| format!("line {} of the payload is not an interaction", index + 1))?;
        hasher.update(item.content_sha256.as_bytes());
        hasher.update(b"\n");
        count += 1;
    }
    Ok((hex::encode(hasher.finalize()), count))
}

/// Writes the tag files that complete the bag.
pub fn finish(dir: &Path, parameters: &ExportParameters, finished_at: &str) -> anyhow::Result<u64> {
    let (payload_digest, payload_bytes) = sha256_file(&payload_path(dir))?;
    let (items_digest, count) = content_digest(dir)?;
    std::fs::write(
        dir.join("bagit.txt"),
        "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n",
    )?;
    std::fs::write(
        dir.join("manifest-sha256.txt"),
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
    std::fs::write(dir.join("bag-info.txt"), info)?;
    let mut tags = String::new();
    for tag in ["bagit.txt", "bag-info.txt", "manifest-sha256.txt"] {
        let (digest, _) = sha256_file(&dir.join(tag))?;
        tags.push_str(&format!("{digest}  {tag}\n"));
    }
    std::fs::write(dir.join("tagmanifest-sha256.txt"), tags)?;
    let _ = std::fs::remove_file(dir.join(PARAMETERS));
    Ok(count)
}

/// Checks a bag: every manifest and tag-manifest digest, the payload size, and the item
/// count and content digest recorded in `bag-info.txt`. Returns the item count.
pub fn verify(dir: &Path) -> anyhow::Result<u64> {
    let bagit = std::fs::read_to_string(dir.join("bagit.txt"))
        .with_context(|| format!("{} is not a bag (no bagit.txt)", dir.display()))?;
    if !bagit.starts_with("BagIt-Version: ") {
        bail!("bagit.txt does not declare a BagIt version");
    }
    for manifest in ["manifest-sha256.txt", "tagmanifest-sha256.txt"] {
        let text = std::fs::read_to_string(dir.join(manifest))
            .with_context(|| format!("missing {manifest}"))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Some((expected, name)) = line.split_once("  ") else {
                bail!("{manifest}: malformed line {line:?}");
            };
            if name.contains("..") || name.starts_with('/') {
                bail!("{manifest}: path {name:?} leaves the bag");
            }
            let (actual, _) = sha256_file(&dir.join(name))?;
            if actual != expected {
                bail!("{name} does not match its digest in {manifest}");
            }
        }
    }
    let info = std::fs::read_to_string(dir.join("bag-info.txt"))?;
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
