//! Erasure that erases (issue 8, item 13): once items are destroyed, their text leaves every
//! file of the data directory (RocksDB SST and write-ahead log files, tantivy segments)
//! within the configured bound, and `holdfast sweep --status` reports what is pending.
//!
//! Two things could hide surviving text from a plain byte scan, and the test deals with both:
//! - RocksDB block compression: zstd entropy-codes the literal bytes of a block, so a
//!   compressed SST can hold a word without containing its bytes. The test server stores its
//!   files uncompressed (`[storage] compression = "none"`), so text that survives in the store
//!   is visible to the byte scan of every file.
//! - tantivy's term dictionary is an FST, which stores a word's letters as transitions (common
//!   letters packed into state bytes), never as a byte run. So besides the byte scan, the test
//!   decodes the term dictionary of every segment that still has files in the index directory
//!   (live or not yet deleted) and looks for the word there.
//!
//! A second mailbox's marker, never destroyed, is the control: both scans must still find it
//! in the store and in the index afterwards, so a scan that sees nothing proves erasure, not
//! blindness.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use holdfast_client::{pb, InteractionBuilder};

const ALICE: &str = "alice@contoso.com";
const BOB: &str = "bob@contoso.com";
const BOUND_SECONDS: u64 = 4;

fn config() -> String {
    format!(
        "{}\n[retention]\nholds_area_minimum_age_hours = 0\nsweep_interval_seconds = 0\n\
         erasure_bound_seconds = {BOUND_SECONDS}\n\n[storage]\ncompression = \"none\"\n",
        default_config()
    )
}

/// A word no other test data contains (letters only, so it stays one word).
fn marker(tag: &str) -> String {
    let letters: String = (0..12)
        .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
        .collect();
    format!("zq{tag}{letters}")
}

/// Files under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if metadata.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|entry| entry.path()));
            }
        } else if metadata.is_file() {
            // A file may be deleted while we walk (compaction, merges): skip it then.
            if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|window| window == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found.sort();
    found
}

fn under(files: &[String], part: &str) -> bool {
    files.iter().any(|file| file.contains(part))
}

/// Segments with files in the index directory whose prompt or response term dictionary holds
/// a word containing `needle`.
fn segments_with_word(index_dir: &Path, needle: &str) -> Vec<String> {
    let Ok(index) = tantivy::Index::open_in_dir(index_dir) else {
        return Vec::new();
    };
    let schema = index.schema();
    let fields = ["prompt", "response"].map(|name| schema.get_field(name).expect("text field"));
    let mut stems: Vec<String> = std::fs::read_dir(index_dir)
        .expect("index directory")
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".term").map(str::to_string)
        })
        .collect();
    stems.sort();
    let mut found = Vec::new();
    for stem in stems {
        let Ok(id) = tantivy::index::SegmentId::from_uuid_string(&stem) else {
            continue;
        };
        // A segment deleted meanwhile (merged away) cannot be opened: it holds nothing.
        let segment = index.segment(index.new_segment_meta(id, 0));
        let Ok(reader) = tantivy::SegmentReader::open(&segment) else {
            continue;
        };
        let holds_word = fields.iter().any(|field| {
            let Ok(inverted) = reader.inverted_index(*field) else {
                return false;
            };
            let Ok(mut terms) = inverted.terms().stream() else {
                return false;
            };
            while terms.advance() {
                if terms
                    .key()
                    .windows(needle.len())
                    .any(|window| window == needle.as_bytes())
                {
                    return true;
                }
            }
            false
        });
        if holds_word {
            found.push(stem);
        }
    }
    found
}

async fn store(server: &TestServer, mailbox: &str, word: &str, count: usize) -> Vec<String> {
    let backend = server.client(INGEST_TOKEN).await;
    let inputs = (0..count)
        .map(|n| {
            InteractionBuilder::new(mailbox, format!("key-{n}"))
                .app("Teams")
                .prompt(format!("please summarise the {word} memo, part {n}"))
                .response(format!("the {word} memo says nothing new"))
                .build()
        })
        .collect();
    let results = backend.ingest(inputs).await.unwrap().results;
    assert!(results.iter().all(|r| !r.id.is_empty()));
    results.into_iter().map(|r| r.id).collect()
}

fn status(server: &TestServer) -> serde_json::Value {
    let output = server.cli(RETENTION_ADMIN_TOKEN, &["--json", "sweep", "--status"]);
    assert_eq!(output.code, 0, "{}", output.stderr);
    serde_json::from_str(output.stdout.trim()).expect("status is JSON")
}

#[tokio::test]
async fn destroyed_text_leaves_every_file_within_the_bound() {
    let server = TestServer::start_with_config(config()).await;
    let data_dir = server.data_dir();
    let destroyed = marker("gone");
    let kept = marker("kept");
    let ids = store(&server, ALICE, &destroyed, 40).await;
    store(&server, BOB, &kept, 5).await;

    // The scans see both words in the store (write-ahead log) and in the index (term
    // dictionaries) before anything is destroyed.
    let index_dir = data_dir.join("index");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let in_store = |word: &str| under(&files_containing(&data_dir, word.as_bytes()), "/store/");
        let in_index = |word: &str| !segments_with_word(&index_dir, word).is_empty();
        if [&destroyed, &kept]
            .iter()
            .all(|word| in_store(word) && in_index(word))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scans never saw the words: store {} {}, index {} {}",
            in_store(&destroyed),
            in_store(&kept),
            in_index(&destroyed),
            in_index(&kept)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Alice deletes her history; the sweeper destroys it.
    server
        .client(INGEST_TOKEN)
        .await
        .delete_history(pb::DeleteHistoryRequest {
            mailbox_id: ALICE.into(),
            thread_id: String::new(),
            before: None,
        })
        .await
        .unwrap();
    let stats = server
        .client(RETENTION_ADMIN_TOKEN)
        .await
        .run_sweep(pb::RunSweepRequest {})
        .await
        .unwrap();
    assert_eq!(stats.destroyed, ids.len() as u64);
    let status_after_sweep = status(&server);
    let erasure = &status_after_sweep["erasure"];
    assert_eq!(erasure["bound_seconds"], BOUND_SECONDS);
    // Either still pending (with its oldest time) or already erased: never lost track of.
    let pending = erasure["pending"].as_u64().unwrap();
    let erased = erasure["erased_total"].as_u64().unwrap();
    assert_eq!(pending + erased, ids.len() as u64, "{status_after_sweep}");
    if pending > 0 {
        assert!(erasure["oldest"].is_string(), "{status_after_sweep}");
    }

    // Within the bound (plus the time the check itself takes), nothing is pending.
    let deadline = Instant::now() + Duration::from_secs(BOUND_SECONDS + 60);
    loop {
        let erasure = status(&server)["erasure"].clone();
        if erasure["pending"] == 0 && erasure["erased_total"] == ids.len() as u64 {
            assert!(erasure["oldest"].is_null());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "erasure did not finish: {erasure}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let gone = files_containing(&data_dir, destroyed.as_bytes());
    assert!(gone.is_empty(), "destroyed text is still in {gone:?}");
    let gone = segments_with_word(&index_dir, &destroyed);
    assert!(
        gone.is_empty(),
        "destroyed words are still in segments {gone:?}"
    );
    let still = files_containing(&data_dir, kept.as_bytes());
    assert!(
        under(&still, "/store/"),
        "the control word must still be found in the store's files: {still:?}"
    );
    assert!(
        !segments_with_word(&index_dir, &kept).is_empty(),
        "the control word must still be found in the index"
    );
    // Bob's items are untouched.
    assert_eq!(
        list_all(&server.client(INGEST_TOKEN).await, BOB)
            .await
            .len(),
        5
    );
}
