//! The fault loop: ingest, search, sweeps, user deletions and hold changes run at once while
//! the server is killed with SIGKILL at random moments, again and again. Afterwards:
//! - every acknowledged item is stored or has a disposition record (nothing acknowledged lost);
//! - nothing held or retained was destroyed;
//! - the sweeper was not disarmed: every unprotected, due item was destroyed;
//! - store and index agree after catch-up (export returns exactly the stored items);
//! - the audit chain verifies.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use common::*;
use holdfast_client::{pb, ClientConfig, HoldfastClient, InteractionBuilder};
use rand::Rng;

/// Only an org-wide delete-only policy of 1 day: its items are destroyed soon after ingest.
const FREE: &str = "free@contoso.com";
/// A litigation hold (forever) placed before any ingest.
const HELD: &str = "held@contoso.com";
/// A retain-only policy (forever) naming this mailbox.
const KEPT: &str = "kept@contoso.com";
/// A litigation hold placed before any ingest; more holds are placed and released during the
/// loop (each release leaves a delay hold).
const CHURN: &str = "churn@contoso.com";
const MAILBOXES: [&str; 4] = [FREE, HELD, KEPT, CHURN];

/// Kills per run; each comes after a random 0.3–2.5 s of load.
const KILLS: usize = 6;

fn config(sweep_interval_seconds: u32) -> String {
    format!(
        "{}\n[retention]\nholds_area_minimum_age_hours = 0\nsweep_interval_seconds = {sweep_interval_seconds}\n",
        default_config()
    )
}

/// A client for the current server, retrying while it restarts.
async fn connect(addr: &str, token: &str) -> HoldfastClient {
    loop {
        if let Ok(client) = HoldfastClient::connect(ClientConfig {
            addr: addr.to_string(),
            token: token.to_string(),
            tls: None,
        })
        .await
        {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn batch(worker: usize, number: u64) -> Vec<pb::InteractionInput> {
    let created = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
    (0..20)
        .map(|i| {
            let mailbox = MAILBOXES[(number as usize + i) % MAILBOXES.len()];
            InteractionBuilder::new(mailbox, format!("w{worker}-b{number}-{i}"))
                .created_at(created + chrono::Duration::seconds(number as i64 * 20 + i as i64))
                .app("Teams")
                .prompt(format!("faultloop prompt {worker} {number} {i}"))
                .response("faultloop response")
                .build()
        })
        .collect()
}

#[derive(Default)]
struct Acknowledged {
    /// id → mailbox of every item the server acknowledged (CREATED or DUPLICATE).
    items: Mutex<HashMap<String, String>>,
}

/// Sends batches until stopped; a batch is re-sent with the same client keys until the
/// server answers, so retries across crashes are exercised too.
async fn ingest_worker(
    addr: String,
    worker: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Acknowledged>,
) {
    let mut number = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let inputs = batch(worker, number);
        loop {
            let client = connect(&addr, INGEST_TOKEN).await;
            match client.ingest(inputs.clone()).await {
                Ok(response) => {
                    let mut items = acked.items.lock().unwrap();
                    for (result, input) in response.results.iter().zip(&inputs) {
                        let status = status_of(result);
                        assert!(
                            matches!(
                                status,
                                pb::IngestStatus::Created | pb::IngestStatus::Duplicate
                            ),
                            "re-sent item refused: {result:?}"
                        );
                        items.insert(result.id.clone(), input.mailbox_id.clone());
                    }
                    break;
                }
                Err(_) if stop.load(Ordering::Relaxed) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        number += 1;
        // A steady load rather than a flood: the checks afterwards look at every item.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Searches, sweeps, user deletions and hold changes, ignoring the errors a killed server
/// causes; counts the calls that succeeded.
async fn background_worker(
    addr: String,
    case_id: String,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) {
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let ok = match round % 4 {
            0 => connect(&addr, EDISCOVERY_ADMIN_TOKEN)
                .await
                .search(pb::SearchRequest {
                    case_id: case_id.clone(),
                    query: "faultloop".into(),
                    page_size: 10,
                    ..Default::default()
                })
                .await
                .is_ok(),
            1 => connect(&addr, RETENTION_ADMIN_TOKEN)
                .await
                .run_sweep(pb::RunSweepRequest {})
                .await
                .is_ok(),
            2 => connect(&addr, INGEST_TOKEN)
                .await
                .delete_history(pb::DeleteHistoryRequest {
                    mailbox_id: KEPT.into(),
                    ..Default::default()
                })
                .await
                .is_ok(),
            _ => {
                let retention = connect(&addr, RETENTION_ADMIN_TOKEN).await;
                match retention
                    .place_litigation_hold(pb::PlaceLitigationHoldRequest {
                        mailbox_id: CHURN.into(),
                        days: 0,
                    })
                    .await
                {
                    Ok(hold) => retention
                        .release_hold(pb::HoldRef { id: hold.id })
                        .await
                        .is_ok(),
                    Err(_) => false,
                }
            }
        };
        if ok {
            done.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn all_dispositions(client: &HoldfastClient) -> HashMap<String, String> {
    let mut all = HashMap::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_dispositions(pb::ListDispositionsRequest {
                mailbox_id: String::new(),
                page_size: 1000,
                page_token,
            })
            .await
            .expect("list dispositions");
        for disposition in page.dispositions {
            all.insert(disposition.id, disposition.mailbox_id);
        }
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

async fn exists(client: &HoldfastClient, id: &str) -> bool {
    match client
        .explain_retention(pb::ExplainRetentionRequest { id: id.into() })
        .await
    {
        Ok(_) => true,
        Err(status) if status.code() == Some(tonic::Code::NotFound) => false,
        Err(status) => panic!("explain {id}: {status}"),
    }
}

async fn exported_ids(client: &HoldfastClient, case_id: &str) -> HashSet<String> {
    let mut stream = client
        .export(pb::ExportRequest {
            case_id: case_id.into(),
            query: "created>=2000-01-01".into(),
            ..Default::default()
        })
        .await
        .expect("export");
    let mut ids = HashSet::new();
    let mut trailer = None;
    while let Some(message) = stream.message().await.expect("export stream") {
        match message.message {
            Some(pb::export_message::Message::Interaction(item)) => {
                ids.insert(item.id);
            }
            Some(pb::export_message::Message::Trailer(t)) => trailer = Some(t),
            None => {}
        }
    }
    let trailer = trailer.expect("export ends with a trailer");
    assert_eq!(trailer.count as usize, ids.len(), "trailer count");
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_kills_lose_nothing_acknowledged_and_destroy_nothing_protected() {
    let mut server = TestServer::start_with_config(config(1)).await;
    let addr = server.addr();

    // Protection first, so that every item of HELD, KEPT and CHURN is protected from birth.
    let retention = server.client(RETENTION_ADMIN_TOKEN).await;
    for (name, include, action, days) in [
        (
            "delete after a day",
            vec![],
            pb::PolicyAction::DeleteOnly,
            1,
        ),
        (
            "keep kept",
            vec![KEPT.to_string()],
            pb::PolicyAction::RetainOnly,
            0,
        ),
    ] {
        retention
            .create_policy(pb::CreatePolicyRequest {
                spec: Some(pb::PolicySpec {
                    name: name.into(),
                    org_wide: include.is_empty(),
                    include,
                    action: action as i32,
                    days,
                    enabled: true,
                    ..Default::default()
                }),
            })
            .await
            .expect("create policy");
    }
    for mailbox in [HELD, CHURN] {
        retention
            .place_litigation_hold(pb::PlaceLitigationHoldRequest {
                mailbox_id: mailbox.into(),
                days: 0,
            })
            .await
            .expect("litigation hold");
    }
    let case = server
        .client(EDISCOVERY_ADMIN_TOKEN)
        .await
        .create_case(pb::CreateCaseRequest {
            name: "fault loop".into(),
            custodians: MAILBOXES.iter().map(|m| m.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("create case");

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Acknowledged::default());
    let background_done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..2 {
        workers.push(tokio::spawn(ingest_worker(
            addr.clone(),
            worker,
            Arc::clone(&stop),
            Arc::clone(&acked),
        )));
    }
    workers.push(tokio::spawn(background_worker(
        addr.clone(),
        case.id.clone(),
        Arc::clone(&stop),
        Arc::clone(&background_done),
    )));

    for _ in 0..KILLS {
        let pause = rand::rng().random_range(300..2500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        server.kill9();
        server.launch().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    // The last kill lands while the workers finish; then a final start without background
    // sweeps, so that what is checked does not change under the checks.
    server.kill9();
    for worker in workers {
        worker.await.expect("worker");
    }
    server.config = config(0);
    server.launch().await;

    let acked: HashMap<String, String> = acked.items.lock().unwrap().clone();
    assert!(acked.len() > 100, "too little load: {} items", acked.len());
    assert!(
        background_done.load(Ordering::Relaxed) > 5,
        "the background calls never succeeded"
    );

    let admin = connect(&addr, RETENTION_ADMIN_TOKEN).await;
    // The sweeper still works after all the kills: finish every due move and destruction.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        admin
            .run_sweep(pb::RunSweepRequest {})
            .await
            .expect("sweep after the loop");
        let destroyed = all_dispositions(&connect(&addr, AUDITOR_TOKEN).await).await;
        let free_left = acked
            .iter()
            .filter(|(id, mailbox)| mailbox.as_str() == FREE && !destroyed.contains_key(*id))
            .count();
        if free_left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{free_left} due, unprotected items were never destroyed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let destroyed = all_dispositions(&connect(&addr, AUDITOR_TOKEN).await).await;
    for (id, mailbox) in &destroyed {
        assert_eq!(
            mailbox, FREE,
            "item {id} of the protected mailbox {mailbox} was destroyed"
        );
    }
    let mut stored = HashSet::new();
    for (id, mailbox) in &acked {
        if exists(&admin, id).await {
            stored.insert(id.clone());
        } else {
            assert!(
                destroyed.contains_key(id),
                "acknowledged item {id} of {mailbox} is neither stored nor disposed of"
            );
        }
    }

    // Store and index agree once the indexer has caught up.
    let reviewer = connect(&addr, EDISCOVERY_ADMIN_TOKEN).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let exported = exported_ids(&reviewer, &case.id).await;
        let missing = stored.iter().filter(|id| !exported.contains(*id)).count();
        let mut ghosts = 0;
        for id in &exported {
            if destroyed.contains_key(id) || !exists(&admin, id).await {
                ghosts += 1;
            }
        }
        if missing == 0 && ghosts == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "index and store disagree: {missing} stored items not found, {ghosts} found but not stored"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let verification = connect(&addr, AUDITOR_TOKEN)
        .await
        .verify_audit_log()
        .await
        .expect("verify audit");
    assert!(
        verification.intact,
        "audit chain broken at {}: {}",
        verification.first_bad_sequence, verification.problem
    );
}
