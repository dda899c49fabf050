//! Online backup while ingest runs, and verified restore (`holdfast backup`,
//! `holdfast-server --restore`).

use crate::common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use holdfast_client::{pb, HoldfastClient};

const FIXED: &str = "fixed@contoso.com";
const STREAM: &str = "stream@contoso.com";

async fn case_over(client: &HoldfastClient, custodians: &[&str]) -> pb::Case {
    client
        .create_case(pb::CreateCaseRequest {
            name: format!("backup case {}", custodians.join(",")),
            description: String::new(),
            members: vec![],
            custodians: custodians.iter().map(|c| c.to_string()).collect(),
        })
        .await
        .unwrap()
}

/// Every hit id of `query` in the case, in the server's order (one page of up to 1,000).
async fn search_ids(
    client: &HoldfastClient,
    case_id: &str,
    query: &str,
) -> Result<(u64, Vec<String>), String> {
    let response = client
        .search(pb::SearchRequest {
            case_id: case_id.into(),
            query: query.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .map_err(|error| error.to_string())?;
    Ok((
        response.total,
        response.hits.into_iter().map(|hit| hit.id).collect(),
    ))
}

/// Polls until the search finds `expected` items (the index commits, or is rebuilt,
/// asynchronously; errors while it rebuilds are retried until the deadline).
async fn search_until(
    client: &HoldfastClient,
    case_id: &str,
    query: &str,
    expected: u64,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let last = search_ids(client, case_id, query).await;
        if let Ok((total, ids)) = &last {
            if *total == expected {
                return ids.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{query:?} never found {expected} items; last answer {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn backup_cli(server: &TestServer, out: &std::path::Path) -> CliOutput {
    server.cli(
        ADMIN_TOKEN,
        &["--json", "backup", "--out", out.to_str().unwrap()],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_during_ingest_restores_everything_acknowledged_before_it() {
    let server = TestServer::start().await;
    let ingest = server.client(INGEST_TOKEN).await;
    let reviewer = server.client(EDISCOVERY_ADMIN_TOKEN).await;

    // A mailbox that does not change after the backup: its search must answer the same.
    for chunk in 0..4 {
        let items = (0..50)
            .map(|i| item(FIXED, &format!("fixed-{chunk}-{i}")))
            .collect();
        ingest.ingest(items).await.unwrap();
    }
    let fixed_case = case_over(&reviewer, &[FIXED]).await;
    let before = search_until(&reviewer, &fixed_case.id, "prompt", 200).await;
    let stream_case = case_over(&reviewer, &[STREAM]).await;

    // Continuous ingest into another mailbox, recording every acknowledged key.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acknowledged, stop) = (Arc::clone(&acknowledged), Arc::clone(&stop));
        let client = server.client(INGEST_TOKEN).await;
        tokio::spawn(async move {
            let mut batch = 0;
            while !stop.load(Ordering::SeqCst) {
                let keys: Vec<String> = (0..20).map(|i| format!("s-{batch}-{i}")).collect();
                let items = keys.iter().map(|key| item(STREAM, key)).collect();
                let response = client.ingest(items).await.expect("ingest during backup");
                for (key, result) in keys.into_iter().zip(response.results) {
                    assert_eq!(status_of(&result), pb::IngestStatus::Created);
                    acknowledged.lock().unwrap().push(key);
                }
                batch += 1;
            }
        })
    };
    // Let ingest get going, then back up mid-stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() < 200 {
        assert!(Instant::now() < deadline, "ingest did not progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let acknowledged_before: BTreeSet<String> =
        acknowledged.lock().unwrap().iter().cloned().collect();
    let backups = tempfile::tempdir().unwrap();
    let out = backups.path().join("b1");
    let backup = backup_cli(&server, &out);
    assert_eq!(backup.code, 0, "{}{}", backup.stdout, backup.stderr);
    let after_backup = acknowledged.lock().unwrap().len();
    // Ingest went on during the backup and after it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() < after_backup + 40 {
        assert!(Instant::now() < deadline, "ingest stalled after the backup");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();

    let summary: serde_json::Value = serde_json::from_str(backup.stdout.trim()).unwrap();
    assert_eq!(summary["index_included"], false);
    let manifest_sha = summary["manifest_sha256"].as_str().unwrap().to_string();
    let head_sequence = summary["audit_sequence"].as_u64().unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    // The manifest digest the server reports is the file's.
    use sha2::Digest;
    let manifest_bytes = std::fs::read(out.join("manifest.json")).unwrap();
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&manifest_bytes)),
        manifest_sha
    );

    // A second backup into the same (now non-empty) directory is refused.
    let again = backup_cli(&server, &out);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);
    // The backup is audited.
    let auditor = server.client(AUDITOR_TOKEN).await;
    let entries = auditor
        .query_audit_log(pb::QueryAuditLogRequest {
            action: "Backup".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .entries;
    assert!(
        entries.iter().any(|entry| entry.result == "ok"),
        "{entries:?}"
    );

    // Restore into a new directory and start a server on it.
    let restored = TestServer::start_restored(&out).await;
    let restored_reviewer = restored.client(EDISCOVERY_ADMIN_TOKEN).await;
    let stored: BTreeSet<String> = list_all(&restored.client(INGEST_TOKEN).await, STREAM)
        .await
        .into_iter()
        .map(|item| item.client_key)
        .collect();
    let lost: Vec<&String> = acknowledged_before.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "acknowledged before the backup but lost: {lost:?}"
    );
    // The audit chain verifies and contains the backup's head.
    let verified = restored
        .client(AUDITOR_TOKEN)
        .await
        .verify_audit_log()
        .await
        .unwrap();
    assert!(verified.intact, "{}", verified.problem);
    assert!(verified.num_entries >= head_sequence);
    // The index is rebuilt from the store: the same search answers the same.
    let after = search_until(&restored_reviewer, &fixed_case.id, "prompt", 200).await;
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    assert_eq!(sorted(before), sorted(after));
    let streamed = search_until(
        &restored_reviewer,
        &stream_case.id,
        "prompt",
        stored.len() as u64,
    )
    .await;
    assert_eq!(streamed.len() as u64, (stored.len() as u64).min(1000));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_or_incomplete_backup_is_refused() {
    let server = TestServer::start().await;
    let ingest = server.client(INGEST_TOKEN).await;
    let items = (0..50).map(|i| item(FIXED, &format!("k-{i}"))).collect();
    ingest.ingest(items).await.unwrap();
    let backups = tempfile::tempdir().unwrap();
    let out = backups.path().join("b");
    let backup = backup_cli(&server, &out);
    assert_eq!(backup.code, 0, "{}", backup.stderr);

    let restore = |target: &std::path::Path| {
        Command::new(SERVER_BIN)
            .arg("--restore")
            .arg(&out)
            .arg("--restore-only")
            .arg("--data-dir")
            .arg(target)
            .arg("--metrics-listen")
            .arg("off")
            .output()
            .unwrap()
    };
    // Flip one byte of the largest store file.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let largest = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|file| file["size"].as_u64().unwrap())
        .unwrap()["path"]
        .as_str()
        .unwrap()
        .to_string();
    let victim = out.join(&largest);
    let original = std::fs::read(&victim).unwrap();
    let mut damaged = original.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x20;
    std::fs::write(&victim, &damaged).unwrap();
    let target = backups.path().join("restored");
    let refused = restore(&target);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains(&largest) && stderr.contains("SHA-256"),
        "{stderr}"
    );
    assert!(!target.join("store").exists(), "nothing restored");

    // A missing file and an extra file are refused too.
    std::fs::remove_file(&victim).unwrap();
    let refused = restore(&target);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("missing"), "{stderr}");
    std::fs::write(&victim, &original).unwrap();
    std::fs::write(out.join("store/EXTRA"), b"x").unwrap();
    let refused = restore(&target);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not in the manifest"));
    std::fs::remove_file(out.join("store/EXTRA")).unwrap();

    // Intact again: it restores, but never into a non-empty directory.
    let occupied = backups.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("something"), b"x").unwrap();
    let refused = restore(&occupied);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"));
    let done = restore(&target);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(target.join("store").is_dir());

    // A non-admin may not back up; a relative path is refused by the CLI.
    let refused = server.cli(INGEST_TOKEN, &["backup", "--out", "/tmp/never-written"]);
    assert_ne!(refused.code, 0);
    assert!(!std::path::Path::new("/tmp/never-written").exists());
    let refused = server.cli(ADMIN_TOKEN, &["backup", "--out", "relative"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("absolute"), "{}", refused.stderr);
}
