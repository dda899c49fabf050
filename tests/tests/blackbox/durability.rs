//! Restarts, `kill -9` and graceful shutdown on the same data directory.

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use holdfast_client::pb;

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_items_tokens_moves_and_the_audit_log() {
    let mut server = TestServer::start().await;
    let backend = server.client(INGEST_TOKEN).await;
    let admin = server.client(ADMIN_TOKEN).await;
    let batch: Vec<_> = (0..300)
        .map(|n| item("judy@contoso.com", &format!("k{n}")))
        .collect();
    let ids: Vec<String> = backend
        .ingest(batch.clone())
        .await
        .unwrap()
        .results
        .into_iter()
        .map(|r| r.id)
        .collect();
    let new_token = admin
        .create_token("later", vec![pb::Role::Ingest])
        .await
        .unwrap()
        .token;
    backend
        .delete_history(pb::DeleteHistoryRequest {
            mailbox_id: "judy@contoso.com".into(),
            thread_id: String::new(),
            before: None,
        })
        .await
        .unwrap();
    backend
        .ingest(vec![item("judy@contoso.com", "after-delete")])
        .await
        .unwrap();
    let audit_before = server
        .client(AUDITOR_TOKEN)
        .await
        .verify_audit_log()
        .await
        .unwrap();
    assert!(server.terminate().success());

    server.launch().await;
    let auditor = server.client(AUDITOR_TOKEN).await;
    let audit_after = auditor.verify_audit_log().await.unwrap();
    assert!(audit_after.intact);
    assert_eq!(audit_after.num_entries, audit_before.num_entries);
    assert_eq!(audit_after.head_hash, audit_before.head_hash);
    let backend = server.client(INGEST_TOKEN).await;
    let listed = list_all(&backend, "judy@contoso.com").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].client_key, "after-delete");
    let admin = server.client(ADMIN_TOKEN).await;
    for (id, input) in ids.iter().zip(&batch) {
        let stored = admin.get(id).await.unwrap();
        assert_eq!(stored.prompt, input.prompt);
        assert_eq!(stored.location, pb::Location::HoldsArea as i32);
    }
    // Idempotency survives the restart.
    let again = backend.ingest(batch[..10].to_vec()).await.unwrap().results;
    assert!(again
        .iter()
        .all(|r| status_of(r) == pb::IngestStatus::Duplicate));
    // So do API tokens and the audit chain, which continues from its head (the 300
    // privileged reads above were audited too).
    let later = server.client(&new_token).await;
    later
        .ingest(vec![item("judy@contoso.com", "by-later")])
        .await
        .unwrap();
    backend
        .delete_history(pb::DeleteHistoryRequest {
            mailbox_id: "nobody@contoso.com".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let audit_more = auditor.verify_audit_log().await.unwrap();
    assert!(audit_more.intact);
    assert_eq!(audit_more.num_entries, audit_before.num_entries + 300 + 1);
}

type Acked = Arc<Mutex<HashMap<String, (String, pb::InteractionInput)>>>;

/// Writers that record every item the server acknowledged, until the server goes away.
fn start_writers(
    client: &holdfast_client::HoldfastClient,
    acked: &Acked,
    writers: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|writer| {
            let client = client.clone();
            let acked = Arc::clone(acked);
            tokio::spawn(async move {
                for round in 0.. {
                    let batch: Vec<_> = (0..100)
                        .map(|n| item(&format!("w{writer}@contoso.com"), &format!("r{round}-{n}")))
                        .collect();
                    let Ok(response) = client.ingest(batch.clone()).await else {
                        return;
                    };
                    let mut acked = acked.lock().unwrap();
                    for (result, input) in response.results.into_iter().zip(batch) {
                        assert_eq!(status_of(&result), pb::IngestStatus::Created);
                        acked.insert(
                            format!("{}/{}", input.mailbox_id, input.client_key),
                            (result.id, input),
                        );
                    }
                }
            })
        })
        .collect()
}

async fn check_acknowledged_items_survived(server: &TestServer, acked: &Acked) {
    let admin = server.client(ADMIN_TOKEN).await;
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 1000,
        "only {} items were acknowledged",
        acked.len()
    );
    for (id, input) in acked.values() {
        let stored = admin
            .get(id)
            .await
            .unwrap_or_else(|e| panic!("acknowledged {id} lost: {e}"));
        assert_eq!(stored.client_key, input.client_key);
        assert_eq!(stored.prompt, input.prompt);
    }
    // And nothing was stored twice: each mailbox lists exactly its acknowledged items
    // (plus at most the in-flight batches that were written but never acknowledged).
    let backend = server.client(INGEST_TOKEN).await;
    for writer in 0..4 {
        let mailbox = format!("w{writer}@contoso.com");
        let listed = list_all(&backend, &mailbox).await;
        let mine = acked
            .keys()
            .filter(|k| k.starts_with(&format!("{mailbox}/")))
            .count();
        assert!(
            listed.len() >= mine && listed.len() <= mine + 100,
            "{mailbox}: {} listed, {mine} acked",
            listed.len()
        );
        let mut keys: Vec<_> = listed.iter().map(|i| &i.client_key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), listed.len());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_right_after_acknowledged_batches_loses_nothing() {
    let mut server = TestServer::start().await;
    let client = server.client(INGEST_TOKEN).await;
    let acked: Acked = Arc::default();
    let writers = start_writers(&client, &acked, 4);
    while acked.lock().unwrap().len() < 3000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Batches are still in flight: kill without warning.
    server.kill9();
    for writer in writers {
        writer.await.unwrap();
    }
    server.launch().await;
    check_acknowledged_items_survived(&server, &acked).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_writes_and_exits_cleanly() {
    let mut server = TestServer::start().await;
    let client = server.client(INGEST_TOKEN).await;
    let acked: Acked = Arc::default();
    let writers = start_writers(&client, &acked, 4);
    while acked.lock().unwrap().len() < 2000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(
        server.log().contains("holdfast-server stopped"),
        "{}",
        server.log()
    );
    server.launch().await;
    check_acknowledged_items_survived(&server, &acked).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_batching_ingester_retries_across_a_crash_without_duplicates() {
    let mut server = TestServer::start().await;
    let client = server.client(INGEST_TOKEN).await;
    let options = holdfast_client::IngesterOptions {
        batch_size: 100,
        max_attempts: 100,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        ..Default::default()
    };
    let ingester = holdfast_client::BatchingIngester::start(client.clone(), options);
    let producer = tokio::spawn(async move {
        let mut tickets = Vec::new();
        for n in 0..5000 {
            tickets.push(
                ingester
                    .submit(item("kim@contoso.com", &format!("k{n}")))
                    .await
                    .unwrap(),
            );
            if n % 500 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut ids = Vec::new();
        for ticket in tickets {
            ids.push(ticket.wait().await.unwrap());
        }
        (ids, ingester.finish().await)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.launch().await;
    let (results, summary) = producer.await.unwrap();
    assert!(results.iter().all(|r| matches!(
        status_of(r),
        pb::IngestStatus::Created | pb::IngestStatus::Duplicate
    )));
    assert_eq!(summary.created + summary.duplicate, 5000, "{summary:?}");
    assert_eq!(summary.failed, 0);
    let listed = list_all(&server.client(INGEST_TOKEN).await, "kim@contoso.com").await;
    assert_eq!(listed.len(), 5000, "every item exactly once");
}
