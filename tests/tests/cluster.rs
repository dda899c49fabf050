//! Cluster mode, black-box: three real `holdfast-server` nodes sharing the tests' PostgreSQL
//! and S3 gateway (SeaweedFS with Object Lock; `scripts/test.sh` starts both), one of them
//! killed with SIGKILL mid-ingest and PostgreSQL restarted under the survivors.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use holdfast_client::{pb, HoldfastClient, InteractionBuilder};

/// The config of node `node`: the tests' tokens, items destroyable as soon as nothing
/// retains or holds them, no periodic passes (the test runs them), and the shared engines.
fn node_config(node: &str, secrets: &std::path::Path, engines: &Engines, bucket: &str) -> String {
    format!(
        r#"{tokens}
[retention]
holds_area_minimum_age_hours = 0
sweep_interval_seconds = 0
{cluster}"#,
        tokens = default_config(),
        cluster = cluster_section(node, secrets, engines, bucket),
    )
}

fn batch(node: usize, round: usize) -> Vec<pb::InteractionInput> {
    (0..20)
        .map(|i| {
            InteractionBuilder::new(
                format!("m{}@contoso.com", i % 4),
                format!("n{node}-{round}-{i}"),
            )
            .app("Copilot")
            .prompt(format!("clusterword round {round} item {i}"))
            .response("noted")
            .build()
        })
        .collect()
}

/// Acknowledged items: id → mailbox.
type Acked = Arc<Mutex<BTreeMap<String, String>>>;

async fn ingest(client: &HoldfastClient, items: Vec<pb::InteractionInput>, acked: &Acked) -> bool {
    let mailboxes: Vec<String> = items.iter().map(|i| i.mailbox_id.clone()).collect();
    match client.ingest(items).await {
        Ok(response) => {
            let mut acked = acked.lock().unwrap();
            for result in &response.results {
                assert_eq!(status_of(result), pb::IngestStatus::Created, "{result:?}");
                acked.insert(result.id.clone(), mailboxes[result.index as usize].clone());
            }
            true
        }
        Err(_) => false,
    }
}

/// Which of `nodes` holds the sweeper lease: the one whose RunSweep runs a pass.
async fn sweeping_node(nodes: &[&TestServer]) -> Option<usize> {
    for (n, node) in nodes.iter().enumerate() {
        let client = node.client(RETENTION_ADMIN_TOKEN).await;
        match client.run_sweep(pb::RunSweepRequest {}).await {
            Ok(_) => return Some(n),
            Err(error) => assert_eq!(
                error.code(),
                Some(tonic::Code::FailedPrecondition),
                "{error}"
            ),
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_lose_nothing_acknowledged_to_a_killed_node_or_a_database_restart() {
    let Some(engines) = engines() else { return };
    let secrets = tempfile::tempdir().unwrap();
    write_cluster_secrets(&engines, secrets.path()).await;
    let bucket = format!("holdfast-cluster-{}", free_port());
    let mut nodes = Vec::new();
    for n in 1..=3 {
        let config = node_config(&format!("node{n}"), secrets.path(), &engines, &bucket);
        nodes.push(TestServer::start_with_config(config).await);
    }
    let acked: Acked = Arc::default();

    // Ingest through every node.
    for (n, node) in nodes.iter().enumerate() {
        let client = node.client(INGEST_TOKEN).await;
        assert!(
            ingest(&client, batch(n, 0), &acked).await,
            "node{n} refused a batch"
        );
    }
    // The sweeping node is killed mid-ingest (SIGKILL: nothing flushed).
    let refs: Vec<&TestServer> = nodes.iter().collect();
    let victim = sweeping_node(&refs).await.expect("one node sweeps");
    let victim_client = nodes[victim].client(INGEST_TOKEN).await;
    let victim_acked = Arc::clone(&acked);
    let writer = tokio::spawn(async move {
        let mut round = 1;
        while ingest(&victim_client, batch(9, round), &victim_acked).await {
            round += 1;
        }
        round
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut victim_node = nodes.remove(victim);
    victim_node.kill9();
    let rounds = writer.await.unwrap();
    assert!(
        rounds > 1,
        "the killed node acknowledged nothing before it died"
    );

    // PostgreSQL restarts under the survivors: every pooled connection is cut.
    if let Some(dir) = &engines.postgres_dir {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/postgres.sh");
        let restarted = std::process::Command::new(script)
            .arg("restart")
            .arg(dir)
            .status()
            .unwrap();
        assert!(restarted.success(), "PostgreSQL did not restart");
    } else {
        eprintln!("PostgreSQL not restarted: HOLDFAST_TEST_POSTGRES_DIR is not set");
    }
    // Survivors take writes again (a call on a cut connection may fail once: retried).
    for (n, node) in nodes.iter().enumerate() {
        let client = node.client(INGEST_TOKEN).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ingest(&client, batch(20 + n, 0), &acked).await {
            assert!(
                Instant::now() < deadline,
                "a survivor refuses writes after the restart"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Every acknowledged item is readable from every surviving node...
    let acked = acked.lock().unwrap().clone();
    for node in &nodes {
        let reader = node.client(ADMIN_TOKEN).await;
        for id in acked.keys() {
            let item = reader.get(id).await.unwrap_or_else(|e| panic!("{id}: {e}"));
            assert!(item.prompt.starts_with("clusterword"));
        }
    }
    // ... and searchable from each (its own index, fed by the shared feed).
    let custodians: Vec<String> = (0..4).map(|m| format!("m{m}@contoso.com")).collect();
    let case = nodes[0]
        .client(EDISCOVERY_TOKEN)
        .await
        .create_case(pb::CreateCaseRequest {
            name: "cluster".into(),
            description: String::new(),
            members: vec![],
            custodians: custodians.clone(),
        })
        .await
        .unwrap();
    for node in &nodes {
        let reviewer = node.client(EDISCOVERY_TOKEN).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = reviewer
                .search(pb::SearchRequest {
                    case_id: case.id.clone(),
                    query: "clusterword".into(),
                    ..Default::default()
                })
                .await
                .map(|r| r.total)
                .unwrap_or(0);
            // The killed node may have stored a batch whose answer never came: more may be
            // found than were acknowledged, never fewer.
            if found >= acked.len() as u64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a node finds {found} of {} items",
                acked.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The sweeper lease passes to a survivor once the dead node's expires.
    let refs: Vec<&TestServer> = nodes.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let sweeper = loop {
        if let Some(n) = sweeping_node(&refs).await {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "no survivor took the sweeper lease"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    // Nothing held is destroyed: m0 is on litigation hold; both m0 and m1 delete their history.
    let retention = nodes[1 - sweeper].client(RETENTION_ADMIN_TOKEN).await;
    retention
        .place_litigation_hold(pb::PlaceLitigationHoldRequest {
            mailbox_id: "m0@contoso.com".into(),
            days: 0,
        })
        .await
        .unwrap();
    let admin = nodes[1 - sweeper].client(ADMIN_TOKEN).await;
    for mailbox in ["m0@contoso.com", "m1@contoso.com"] {
        admin
            .delete_history(pb::DeleteHistoryRequest {
                mailbox_id: mailbox.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let stats = nodes[sweeper]
        .client(RETENTION_ADMIN_TOKEN)
        .await
        .run_sweep(pb::RunSweepRequest {})
        .await
        .unwrap();
    let of = |mailbox: &str| acked.iter().filter(move |(_, m)| *m == mailbox).count() as u64;
    assert!(stats.destroyed >= of("m1@contoso.com"), "{stats:?}");
    assert!(of("m1@contoso.com") > 0);
    for node in &nodes {
        let reader = node.client(ADMIN_TOKEN).await;
        for (id, mailbox) in &acked {
            let got = reader.get(id).await;
            match mailbox.as_str() {
                "m1@contoso.com" => assert_eq!(
                    got.unwrap_err().code(),
                    Some(tonic::Code::NotFound),
                    "{id} of m1 should be destroyed"
                ),
                _ => assert!(got.is_ok(), "{id} of {mailbox} was destroyed"),
            }
        }
    }

    // One audit chain, written by every node, verifies.
    let verification = nodes[0]
        .client(AUDITOR_TOKEN)
        .await
        .verify_audit_log()
        .await
        .unwrap();
    assert!(verification.intact, "{verification:?}");
    assert!(verification.num_entries > 5, "{verification:?}");
}
