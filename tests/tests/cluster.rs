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
/// retains or holds them, no periodic passes (the test runs them), and the shared engines
/// (the `[cluster]` table last, so that a caller may add to it).
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

/// The key the test's nodes present to each other.
const NODE_KEY: &str = "test-node-key-0123456789abcdefghijklmnopqrstuv";

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
    // `name{a="1",b="2"}`: the lines of `name` with both labels, in any order.
    let (name, labels) = match metric.split_once('{') {
        Some((name, labels)) => (name, labels.trim_end_matches('}')),
        None => (metric, ""),
    };
    body.lines()
        .filter(|line| {
            line.strip_prefix(name).is_some_and(|rest| {
                rest.starts_with(['{', ' '])
                    && labels
                        .split(',')
                        .filter(|label| !label.is_empty())
                        .all(|label| rest.contains(label))
            })
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// With search in splits: a search on one node is answered by the leaf searches of both, its
/// pages (over the plan pinned by the first) hold every acknowledged item once; an export is
/// walked over the leaves too; a call between nodes without the cluster's node key is
/// refused, and one with it but malformed is refused by name.
async fn searches_fan_out_over_the_nodes(
    nodes: &[TestServer],
    case_id: &str,
    acked: &BTreeMap<String, String>,
) {
    let leaf_answers = r#"holdfast_split_leaf_answers_total{from="node",call="search"}"#;
    let asked_before: f64 = nodes.iter().map(|node| metric(node, leaf_answers)).sum();
    let loaded = "holdfast_search_plans_loaded_total";
    let loaded_before: f64 = nodes.iter().map(|node| metric(node, loaded)).sum();
    let mut reviewers = Vec::new();
    for node in nodes {
        reviewers.push(node.client(EDISCOVERY_TOKEN).await);
    }
    // Each search starts on another node, and each of its pages goes to the next node (as a
    // load balancer would send them): a page token works on every node.
    for start in 0..nodes.len() {
        let mut seen = std::collections::BTreeSet::new();
        let mut page_token = String::new();
        let mut pages = 0;
        let total = loop {
            let reviewer = &reviewers[(start + pages) % reviewers.len()];
            pages += 1;
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
    let loaded_now: f64 = nodes.iter().map(|node| metric(node, loaded)).sum();
    assert!(
        loaded_now > loaded_before,
        "no node answered a page of a search another node started"
    );

    // Exports and case holds walk the matches over the leaves: every node exports every
    // acknowledged item, once, and counts them for a hold.
    let id_answers = r#"holdfast_split_leaf_answers_total{from="node",call="ids"}"#;
    let asked_before: f64 = nodes.iter().map(|node| metric(node, id_answers)).sum();
    for node in nodes {
        let reviewer = node.client(EDISCOVERY_TOKEN).await;
        let mut stream = reviewer
            .export(pb::ExportRequest {
                case_id: case_id.to_string(),
                query: "clusterword".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut exported = Vec::new();
        let mut trailer = None;
        while let Some(message) = stream.message().await.unwrap() {
            match message.message {
                Some(pb::export_message::Message::Interaction(item)) => exported.push(item.id),
                Some(pb::export_message::Message::Trailer(t)) => trailer = Some(t),
                None => {}
            }
        }
        let trailer = trailer.expect("an export ends with a trailer");
        assert_eq!(trailer.count as usize, exported.len());
        assert!(
            exported.windows(2).all(|pair| pair[0] < pair[1]),
            "an export is in id order, each item once"
        );
        for id in acked.keys() {
            assert!(exported.contains(id), "{id} is not exported");
        }
    }
    let asked: f64 = nodes.iter().map(|node| metric(node, id_answers)).sum();
    assert!(
        asked > asked_before,
        "no export or hold asked another node for matching ids"
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
        if let Some(key) = &key {
            request
                .metadata_mut()
                .insert("x-holdfast-node-key", key.parse().unwrap());
        }
        let refused = client.search_splits(request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
        let mut request = tonic::Request::new(leaf::LeafIdsRequest {
            query: "clusterword".into(),
            limit: 10,
            ..Default::default()
        });
        if let Some(key) = &key {
            request
                .metadata_mut()
                .insert("x-holdfast-node-key", key.parse().unwrap());
        }
        let refused = client.matching_ids(request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    }

    // With the key, a well-formed call is answered (nothing named, nothing found), and each
    // malformed or oversized part is refused by name.
    fn keyed<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("x-holdfast-node-key", NODE_KEY.parse().unwrap());
        request
    }
    let well_formed = leaf::LeafIdsRequest {
        query: "clusterword".into(),
        mailboxes: vec!["m0@contoso.com".into()],
        limit: 10,
        count: true,
        ..Default::default()
    };
    let answer = client
        .matching_ids(keyed(well_formed.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.ids.is_empty() && answer.count == 0, "{answer:?}");
    let an_id = acked.keys().next().unwrap().clone();
    let malformed = [
        (
            "among",
            leaf::LeafIdsRequest {
                among: vec![an_id.clone(); 16_385],
                ..well_formed.clone()
            },
        ),
        (
            "limit",
            leaf::LeafIdsRequest {
                limit: 16_385,
                ..well_formed.clone()
            },
        ),
        (
            "after",
            leaf::LeafIdsRequest {
                after: "not-an-id".into(),
                ..well_formed.clone()
            },
        ),
        (
            "mailboxes",
            leaf::LeafIdsRequest {
                mailboxes: vec![String::new()],
                ..well_formed.clone()
            },
        ),
        (
            "splits",
            leaf::LeafIdsRequest {
                dead: vec![leaf::Tombstone {
                    partition: 99,
                    id: an_id.clone(),
                    sequence: 1,
                }],
                ..well_formed.clone()
            },
        ),
    ];
    for (field, request) in malformed {
        let refused = client.matching_ids(keyed(request)).await.expect_err(field);
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
        assert!(
            refused.message().starts_with(&format!("invalid {field}:")),
            "{field}: {refused}"
        );
    }
    let refused = client
        .search_splits(keyed(leaf::LeafSearchRequest {
            query: "clusterword".into(),
            top: 100_001,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    assert!(refused.message().starts_with("invalid top:"), "{refused}");
}

/// How many items a search for "clusterword" in the case finds now (0 while it fails).
async fn clusterword_total(reviewer: &HoldfastClient, case_id: &str) -> u64 {
    reviewer
        .search(pb::SearchRequest {
            case_id: case_id.to_string(),
            query: "clusterword".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.total)
        .unwrap_or(0)
}

async fn export_ids(
    client: &HoldfastClient,
    case_id: &str,
    query: &str,
    mailbox: &str,
) -> Vec<String> {
    let mut stream = client
        .export(pb::ExportRequest {
            case_id: case_id.to_string(),
            query: query.into(),
            mailboxes: vec![mailbox.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ids = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(pb::export_message::Message::Interaction(item)) = message.message {
            ids.push(item.id);
        }
    }
    ids
}

/// With search in splits: a case hold's count, and the sweeper's evaluation of its query,
/// are walked over the leaves. The items of a deleted mailbox that match the hold survive a
/// sweep; the others are destroyed.
async fn case_holds_are_evaluated_over_the_leaves(
    nodes: &[TestServer],
    sweeper: usize,
    case_id: &str,
    acked: &BTreeMap<String, String>,
) {
    let mailbox = "m2@contoso.com";
    let reviewer = nodes[1 - sweeper].client(EDISCOVERY_TOKEN).await;
    let held = export_ids(&reviewer, case_id, "\"round 0\"", mailbox).await;
    let all = export_ids(&reviewer, case_id, "clusterword", mailbox).await;
    assert!(!held.is_empty() && held.len() < all.len(), "{held:?}");
    // Read item by item, not through the index: every acknowledged item of round 0 is held.
    let admin = nodes[sweeper].client(ADMIN_TOKEN).await;
    for id in acked
        .iter()
        .filter(|(_, m)| *m == mailbox)
        .map(|(id, _)| id)
    {
        let item = admin.get(id).await.unwrap();
        let round_zero = item.prompt.contains("round 0 ");
        assert_eq!(held.contains(id), round_zero, "{id}: {}", item.prompt);
    }
    let hold = reviewer
        .place_case_hold(pb::PlaceCaseHoldRequest {
            case_id: case_id.to_string(),
            name: "round zero".into(),
            custodians: vec![mailbox.into()],
            query: "\"round 0\"".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(hold.items_held, held.len() as u64, "{hold:?}");
    nodes[1 - sweeper]
        .client(ADMIN_TOKEN)
        .await
        .delete_history(pb::DeleteHistoryRequest {
            mailbox_id: mailbox.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // The sweeper evaluates the hold by leaf id pages (its own or another node's), never by
    // a view of every split.
    let id_pages = "holdfast_split_leaf_id_pages_total";
    let pages_before: f64 = nodes.iter().map(|node| metric(node, id_pages)).sum();
    let stats = nodes[sweeper]
        .client(RETENTION_ADMIN_TOKEN)
        .await
        .run_sweep(pb::RunSweepRequest {})
        .await
        .unwrap();
    let pages: f64 = nodes.iter().map(|node| metric(node, id_pages)).sum();
    assert!(pages > pages_before, "the sweep read no leaf id page");
    assert_eq!(stats.unevaluable_holds, 0, "{stats:?}");
    assert_eq!(
        stats.destroyed,
        (all.len() - held.len()) as u64,
        "{stats:?}"
    );
    let reader = nodes[sweeper].client(ADMIN_TOKEN).await;
    for id in acked
        .iter()
        .filter(|(_, m)| *m == mailbox)
        .map(|(id, _)| id)
    {
        let got = reader.get(id).await;
        if held.contains(id) {
            assert!(got.is_ok(), "{id} is held, yet destroyed");
        } else {
            assert_eq!(got.unwrap_err().code(), Some(tonic::Code::NotFound), "{id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_lose_nothing_acknowledged_to_a_killed_node_or_a_database_restart() {
    let Some(engines) = engines() else { return };
    let secrets = tempfile::tempdir().unwrap();
    write_cluster_secrets(&engines, secrets.path()).await;
    std::fs::write(secrets.path().join("node.key"), NODE_KEY).unwrap();
    let bucket = format!("holdfast-cluster-{}", free_port());
    let mut nodes = Vec::new();
    for n in 1..=3 {
        // The nodes' key from a file (the test calls leaf searches with it).
        let config = format!(
            "{}node_key_file = \"{}/node.key\"\n",
            node_config(&format!("node{n}"), secrets.path(), &engines, &bucket),
            secrets.path().display()
        );
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
            let found = clusterword_total(&reviewer, &case.id).await;
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

    if splits_backend() {
        case_holds_are_evaluated_over_the_leaves(&nodes, sweeper, &case.id, &acked).await;
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

/// With `[tls]` and `cluster.node_ca_file`, nodes answer each other's leaf searches over TLS
/// with client certificates (the nodes' own): a search on one node is answered in part by the
/// other, and never falls back to reading that node's share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaf_searches_between_nodes_go_over_tls() {
    use holdfast_client::{ClientConfig, TlsOptions};
    let Some(engines) = engines() else { return };
    if std::env::var("HOLDFAST_TEST_BACKEND").as_deref() != Ok("cluster-splits") {
        return;
    }
    let secrets = tempfile::tempdir().unwrap();
    write_cluster_secrets(&engines, secrets.path()).await;
    // The nodes present the server certificate (for "localhost") to each other as clients
    // too; the test's client presents the client certificate.
    let pki = make_pki();
    let write = |name: &str, text: &str| {
        let path = secrets.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca_file = write("ca.pem", &pki.ca);
    let cert_file = write("node.pem", &pki.server_cert);
    let key_file = write("node.pem.key", &pki.server_key);
    let client_cert = write("client.pem", &pki.client_cert);
    let client_key = write("client.pem.key", &pki.client_key);
    let bucket = format!("holdfast-cluster-tls-{}", free_port());
    let mut nodes = Vec::new();
    for n in 1..=2 {
        // The node key derived from the database's page-token key (no node_key_file).
        let cluster = node_config(&format!("node{n}"), secrets.path(), &engines, &bucket);
        let config = format!(
            "{cluster}node_ca_file = {ca_file:?}\nnode_tls_domain = \"localhost\"\n\n[tls]\n\
             cert_file = {cert_file:?}\nkey_file = {key_file:?}\nclient_ca_file = {ca_file:?}\n",
        );
        nodes.push(TestServer::start_with_config(config).await);
    }
    let connect = |node: &TestServer, token: &str| {
        HoldfastClient::connect(ClientConfig {
            addr: format!("https://127.0.0.1:{}", node.port),
            token: token.into(),
            tls: Some(TlsOptions {
                ca_file: Some(ca_file.clone()),
                domain: Some("localhost".into()),
                client_cert_file: Some(client_cert.clone()),
                client_key_file: Some(client_key.clone()),
            }),
        })
    };
    let acked: Acked = Arc::default();
    let ingester = connect(&nodes[0], INGEST_TOKEN).await.unwrap();
    // Many mailboxes: their partitions are placed on both nodes.
    let mailbox = |i: usize| format!("t{i}@contoso.com");
    let items = (0..40)
        .map(|i| {
            InteractionBuilder::new(mailbox(i), format!("tls-{i}"))
                .app("Copilot")
                .prompt(format!("clusterword item {i}"))
                .response("noted")
                .build()
        })
        .collect();
    assert!(ingest(&ingester, items, &acked).await);
    let acked = acked.lock().unwrap().clone();
    let reviewer = connect(&nodes[1], EDISCOVERY_TOKEN).await.unwrap();
    let case = reviewer
        .create_case(pb::CreateCaseRequest {
            name: "tls".into(),
            description: String::new(),
            members: vec![],
            custodians: (0..40).map(mailbox).collect(),
        })
        .await
        .unwrap();
    let answered = r#"holdfast_split_leaf_answers_total{from="node",call="search"}"#;
    let fallback = r#"holdfast_split_leaf_answers_total{from="fallback",call="search"}"#;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // Both nodes must be live (each indexes its partitions) before a search fans out.
        let total = clusterword_total(&reviewer, &case.id).await;
        if total == acked.len() as u64 && metric(&nodes[1], answered) > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "found {total} of {}; leaf answers {}, fallbacks {}",
            acked.len(),
            metric(&nodes[1], answered),
            metric(&nodes[1], fallback)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        metric(&nodes[1], fallback),
        0.0,
        "a leaf call over TLS failed"
    );
    // A leaf call in plain text to a node's TLS port is refused (at connect or at the call).
    use holdfast_proto::cluster::v1 as leaf;
    let plain =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", nodes[0].port))
            .unwrap()
            .connect()
            .await;
    let refused = match plain {
        Err(_) => true,
        Ok(channel) => leaf::leaf_service_client::LeafServiceClient::new(channel)
            .search_splits(leaf::LeafSearchRequest {
                query: "clusterword".into(),
                top: 10,
                ..Default::default()
            })
            .await
            .is_err(),
    };
    assert!(refused, "a plain-text leaf call reached a TLS node");
}
