//! The bag verifier: a bag whose files come from the fuzzer is written to a temporary
//! directory and verified. `verify` must return (almost always an error), never panic.
//!
//! Input: one byte of fix-ups, then the bag's files, each as a line `=== <name>` followed by
//! its contents (a seed is a real bag's files). Names are the tag files, the payload
//! `data/interactions.jsonl`, `data/other.txt` and `data` (a regular file in place of the
//! directory); anything else is ignored. The fix-ups (bits) recompute, after the fuzzer's
//! changes, what a real export would have written, so verification gets past the digests:
//!
//! - 1: each payload line that parses gets its true `content_sha256`;
//! - 2: `manifest-sha256.txt` lists the payload's true digest;
//! - 4: `bag-info.txt` gets the true Payload-Oxum, item count and content digest;
//! - 8: `tagmanifest-sha256.txt` lists the tag files' true digests;
//! - 16: `bagit.txt` becomes a symbolic link to `bag-info.txt`;
//! - 32: the payload becomes a named pipe (FIFO) with no writer;
//! - 64: `bag-info.txt` becomes a named pipe.

use std::path::Path;

use holdfast_client::bag;
use holdfast_client::json::JsonInteraction;
use sha2::{Digest, Sha256};

const NAMES: &[&str] = &[
    "bagit.txt",
    "bag-info.txt",
    "manifest-sha256.txt",
    "tagmanifest-sha256.txt",
    bag::PAYLOAD,
    "data/other.txt",
    "data",
];

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The files of the input, by name (the last of a name wins).
fn files(input: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut files: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in input.split_inclusive(|b| *b == b'\n') {
        if let Some(name) = line.strip_prefix(b"=== ") {
            let name = name.strip_suffix(b"\n").unwrap_or(name);
            current = NAMES.iter().find(|n| n.as_bytes() == name).map(|n| {
                files.retain(|(f, _)| f != n);
                files.push((n, Vec::new()));
                files.len() - 1
            });
        } else if let Some(index) = current {
            files[index].1.extend_from_slice(line);
        }
    }
    files
}

fn get<'a>(files: &'a [(&'static str, Vec<u8>)], name: &str) -> Option<&'a Vec<u8>> {
    files.iter().find(|(n, _)| *n == name).map(|(_, c)| c)
}

fn set(files: &mut Vec<(&'static str, Vec<u8>)>, name: &'static str, contents: Vec<u8>) {
    files.retain(|(n, _)| *n != name);
    files.push((name, contents));
}

fn fix_up(fixes: u8, files: &mut Vec<(&'static str, Vec<u8>)>) {
    let mut payload = get(files, bag::PAYLOAD).cloned().unwrap_or_default();
    if fixes & 1 != 0 {
        let mut fixed = Vec::new();
        for line in payload.split_inclusive(|b| *b == b'\n') {
            let text = String::from_utf8_lossy(line);
            match serde_json::from_str::<JsonInteraction>(text.trim_end_matches('\n')) {
                Ok(mut item) if item.content().is_some() => {
                    item.content_sha256 = item.content().map(|c| c.sha256_hex());
                    fixed.extend_from_slice(serde_json::to_string(&item).unwrap().as_bytes());
                    if line.ends_with(b"\n") {
                        fixed.push(b'\n');
                    }
                }
                _ => fixed.extend_from_slice(line),
            }
        }
        payload = fixed;
        set(files, bag::PAYLOAD, payload.clone());
    }
    if fixes & 2 != 0 {
        let manifest = format!("{}  {}\n", sha256_hex(&payload), bag::PAYLOAD);
        set(files, "manifest-sha256.txt", manifest.into_bytes());
    }
    if fixes & 4 != 0 {
        let mut digest = bag::TrailerDigest::default();
        for line in String::from_utf8_lossy(&payload).lines() {
            match bag::check_line(line, digest.count() + 1) {
                Ok((_, sha)) => digest.add(&sha),
                Err(_) => digest.add(""),
            }
        }
        let (items_digest, count) = digest.finish();
        let old = get(files, "bag-info.txt").cloned().unwrap_or_default();
        let mut info = format!(
            "Payload-Oxum: {}.1\nHoldfast-Item-Count: {count}\nHoldfast-Content-Digest: \
             {items_digest}\n",
            payload.len()
        )
        .into_bytes();
        info.extend_from_slice(&old);
        set(files, "bag-info.txt", info);
    }
    if fixes & 8 != 0 {
        let mut tags = String::new();
        for name in ["bagit.txt", "bag-info.txt", "manifest-sha256.txt"] {
            if let Some(contents) = get(files, name) {
                tags.push_str(&format!("{}  {name}\n", sha256_hex(contents)));
            }
        }
        set(files, "tagmanifest-sha256.txt", tags.into_bytes());
    }
}

fn write_bag(dir: &Path, fixes: u8, files: &[(&'static str, Vec<u8>)]) {
    if get(files, "data").is_none() {
        std::fs::create_dir(dir.join("data")).expect("create data/");
    }
    for (name, contents) in files {
        if name.starts_with("data/") && get(files, "data").is_some() {
            continue;
        }
        std::fs::write(dir.join(name), contents).expect("write a bag file");
    }
    if fixes & 16 != 0 {
        let _ = std::fs::remove_file(dir.join("bagit.txt"));
        std::os::unix::fs::symlink(dir.join("bag-info.txt"), dir.join("bagit.txt"))
            .expect("symlink");
    }
    for (bit, name) in [(32, bag::PAYLOAD), (64, "bag-info.txt")] {
        if fixes & bit != 0 && dir.join("data").is_dir() {
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
        }
    }
}

/// One input of the target (the fuzz binary and the corpus replay test call this).
pub fn run(data: &[u8]) {
    let Some((&fixes, rest)) = data.split_first() else {
        return;
    };
    let mut files = files(rest);
    fix_up(fixes, &mut files);
    // In memory where there is a tmpfs: creating and deleting a directory of files per
    // input on a disk is most of the time spent.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("a temporary directory");
    write_bag(dir.path(), fixes, &files);
    let result = bag::verify(dir.path());
    if std::env::var_os("HOLDFAST_FUZZ_DEBUG").is_some() {
        match &result {
            Ok(count) => eprintln!("verify: Ok({count})"),
            Err(error) => eprintln!("verify: Err({error:#})"),
        }
    }
}
