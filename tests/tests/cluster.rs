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

/// The sum of the samples of `metric` (with `labels`, e.g. `{from="node"}`) `node` exports.
fn metric(node: &TestServer, metric: &str) -> f64 {
    use std::io::{Read, Write};
    let port = node
        .config
        .split("metrics_listen = \"127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|port| port.parse::<u16>().ok())
        .expect("the node exports metrics");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body.lines()
        .filter(|line| line.starts_with(metric))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// With search in splits: a search on one node is answered by the leaf searches of both, its
/// pages (over the plan pinned by the first) hold every acknowledged item once, and a call
/// between nodes without the cluster's node key is refused.
async fn searches_fan_out_over_the_nodes(
    nodes: &[TestServer],
    case_id: &str,
    acked: &BTreeMap<String, String>,
) {
    let leaf_answers = r#"holdfast_split_leaf_answers_total{from="node"}"#;
    let asked_before: f64 = nodes.iter().map(|node| metric(node, leaf_answers)).sum();
    for node in nodes {
        let reviewer = node.client(EDISCOVERY_TOKEN).await;
        let mut seen = std::collections::BTreeSet::new();
        let mut page_token = String::new();
        let total = loop {
            let page = reviewer
                .search(pb::SearchRequest {
                    case_id: case_id.to_string(),
                    query: "clusterword".into(),
                    page_size: 7,
                    page_token: page_token.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
            for hit in &page.hits {
                assert!(seen.insert(hit.id.clone()), "{} on two pages", hit.id);
            }
            if page.next_page_token.is_empty() {
                break page.total;
            }
            page_token = page.next_page_token;
        };
        assert_eq!(seen.len() as u64, total);
        for id in acked.keys() {
            assert!(seen.contains(id), "{id} is on no page");
        }
    }
    let asked: f64 = nodes.iter().map(|node| metric(node, leaf_answers)).sum();
    assert!(
        asked > asked_before,
        "no search asked another node for a leaf search"
    );

    // The leaf service opens only to the node key, never to a token.
    use holdfast_proto::cluster::v1 as leaf;
    let address = format!("http://127.0.0.1:{}", nodes[0].port);
    let channel = tonic::transport::Endpoint::from_shared(address)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = leaf::leaf_service_client::LeafServiceClient::new(channel);
    for key in [None, Some("0".repeat(64))] {
        let mut request = tonic::Request::new(leaf::LeafSearchRequest {
            query: "clusterword".into(),
            top: 10,
            ..Default::default()
        });
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        request
            .metadata_mut()
            .insert("authorization", bearer.parse().unwrap());
        if let Some(key) = key {
            request
                .metadata_mut()
                .insert("x-holdfast-node-key", key.parse().unwrap());
        }
        let refused = client.search_splits(request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    }
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

    if splits_backend() {
        searches_fan_out_over_the_nodes(&nodes, &case.id, &acked).await;
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
