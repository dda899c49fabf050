//! The sweeper end to end through gRPC: items leave the user's view at `delete_at`, wait in
//! the holds area and are destroyed (store, index, disposition record) exactly when retention
//! and every hold allow. The test server runs with a zero holds-area minimum age and passes
//! only on request (`RunSweep`); items are created in the past instead of waiting years.

use crate::common;

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use common::*;
use holdfast_client::{pb, InteractionBuilder};

const ALICE: &str = "alice@contoso.com";
const BOB: &str = "bob@contoso.com";

fn config(extra_retention: &str) -> String {
    format!(
        "{}\n[retention]\nholds_area_minimum_age_hours = 0\nsweep_interval_seconds = 0\n{extra_retention}\n",
        default_config()
    )
}

fn date(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
}

fn spec(name: &str, include: &[&str], action: pb::PolicyAction, days: u32) -> pb::PolicySpec {
    pb::PolicySpec {
        name: name.into(),
        org_wide: include.is_empty(),
        include: include.iter().map(|m| m.to_string()).collect(),
        action: action as i32,
        days,
        enabled: true,
        ..Default::default()
    }
}

async fn create_policy(server: &TestServer, spec: pb::PolicySpec) -> pb::RetentionPolicy {
    server
        .client(RETENTION_ADMIN_TOKEN)
        .await
        .create_policy(pb::CreatePolicyRequest { spec: Some(spec) })
        .await
        .unwrap()
}

/// Stores items (mailbox, created_at, prompt) and returns their ids in order.
async fn store(server: &TestServer, items: &[(&str, DateTime<Utc>, &str)]) -> Vec<String> {
    let backend = server.client(INGEST_TOKEN).await;
    let inputs = items
        .iter()
        .enumerate()
        .map(|(n, (mailbox, created, prompt))| {
            InteractionBuilder::new(*mailbox, format!("key-{n}-{}", created.timestamp()))
                .app("Teams")
                .created_at(*created)
                .prompt(*prompt)
                .response("noted")
                .build()
        })
        .collect();
    backend
        .ingest(inputs)
        .await
        .unwrap()
        .results
        .into_iter()
        .map(|r| r.id)
        .collect()
}

async fn sweep(server: &TestServer) -> pb::SweepStats {
    server
        .client(RETENTION_ADMIN_TOKEN)
        .await
        .run_sweep(pb::RunSweepRequest {})
        .await
        .unwrap()
}

async fn explain(server: &TestServer, id: &str) -> Option<pb::ExplainRetentionResponse> {
    match server
        .client(RETENTION_ADMIN_TOKEN)
        .await
        .explain_retention(pb::ExplainRetentionRequest { id: id.into() })
        .await
    {
        Ok(response) => Some(response),
        Err(status) if status.code() == Some(tonic::Code::NotFound) => None,
        Err(status) => panic!("explain failed: {status}"),
    }
}

async fn location(server: &TestServer, id: &str) -> Option<pb::Location> {
    explain(server, id)
        .await
        .map(|e| pb::Location::try_from(e.location).unwrap())
}

async fn dispositions(server: &TestServer, token: &str) -> Vec<pb::Disposition> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = server
            .client(token)
            .await
            .list_dispositions(pb::ListDispositionsRequest {
                mailbox_id: String::new(),
                page_size: 1000,
                page_token,
            })
            .await
            .unwrap();
        all.extend(page.dispositions);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

async fn open_case(server: &TestServer, custodians: &[&str], members: &[&str]) -> pb::Case {
    server
        .client(EDISCOVERY_TOKEN)
        .await
        .create_case(pb::CreateCaseRequest {
            name: format!("case {}", Utc::now().timestamp_nanos_opt().unwrap()),
            description: String::new(),
            members: members.iter().map(|m| m.to_string()).collect(),
            custodians: custodians.iter().map(|c| c.to_string()).collect(),
        })
        .await
        .unwrap()
}

/// Waits until `query` finds `expected` items in the case (the index commits asynchronously).
async fn search_until(server: &TestServer, case: &pb::Case, query: &str, expected: u64) {
    let client = server.client(EDISCOVERY_TOKEN).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let total = client
            .search(pb::SearchRequest {
                case_id: case.id.clone(),
                query: query.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .total;
        if total == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{query:?} found {total}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_only_3y_and_retain_then_delete_5y_move_then_destroy() {
    use pb::PolicyAction::{DeleteOnly, RetainThenDelete};
    let server = TestServer::start_with_config(config("")).await;
    let d3 = create_policy(&server, spec("d3", &[], DeleteOnly, 3 * 365)).await;
    let rd5 = create_policy(&server, spec("rd5", &[], RetainThenDelete, 5 * 365)).await;
    // Past both dates; past 3 years only; neither.
    let ids = store(
        &server,
        &[
            (ALICE, date(2019, 1, 1), "old budget"),
            (ALICE, date(2022, 6, 1), "middle budget"),
            (ALICE, date(2025, 6, 1), "recent budget"),
        ],
    )
    .await;
    let stats = sweep(&server).await;
    assert_eq!((stats.moved, stats.destroyed), (2, 1));

    assert_eq!(location(&server, &ids[0]).await, None);
    let middle = explain(&server, &ids[1]).await.unwrap();
    assert_eq!(middle.location, pb::Location::HoldsArea as i32);
    assert_eq!(middle.move_reason, pb::MoveReason::Expired as i32);
    assert!(!middle.destroyable);
    assert_eq!(location(&server, &ids[2]).await, Some(pb::Location::Active));
    // The user sees only the recent one; legal staff still find the retained one.
    let listed = server
        .client(INGEST_TOKEN)
        .await
        .list(pb::ListInteractionsRequest {
            mailbox_id: ALICE.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.interactions.len(), 1);
    assert_eq!(listed.interactions[0].id, ids[2]);
    let case = open_case(&server, &[ALICE], &[]).await;
    search_until(&server, &case, "budget", 2).await;

    // The disposition record: no content, the digest, the deciding policies.
    let records = dispositions(&server, AUDITOR_TOKEN).await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.id, ids[0]);
    assert_eq!(record.mailbox_id, ALICE);
    assert_eq!(record.reason, pb::MoveReason::Expired as i32);
    assert_eq!(record.content_sha256.len(), 64);
    let mut expected = vec![d3.id.clone(), rd5.id.clone()];
    expected.sort();
    assert_eq!(record.policies, expected);
    // A second pass has nothing to do.
    let again = sweep(&server).await;
    assert_eq!((again.moved, again.destroyed), (0, 0));
    // Roles: an ingest token may not read dispositions nor run a sweep.
    let backend = server.client(INGEST_TOKEN).await;
    let denied = backend
        .list_dispositions(pb::ListDispositionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Some(tonic::Code::PermissionDenied));
    let denied = backend.run_sweep(pb::RunSweepRequest {}).await.unwrap_err();
    assert_eq!(denied.code(), Some(tonic::Code::PermissionDenied));
}

#[tokio::test(flavor = "multi_thread")]
async fn explicit_deletion_wins_and_items_without_policy_stay() {
    use pb::PolicyAction::DeleteOnly;
    let server = TestServer::start_with_config(config("")).await;
    create_policy(&server, spec("org10", &[], DeleteOnly, 10 * 365)).await;
    create_policy(&server, spec("alice5", &[ALICE], DeleteOnly, 5 * 365)).await;
    let ids = store(
        &server,
        &[(ALICE, date(2019, 1, 1), "a"), (BOB, date(2019, 1, 1), "b")],
    )
    .await;
    let stats = sweep(&server).await;
    // Alice's moves at 5y (and, nothing retaining it, goes); bob keeps his until 10y.
    assert_eq!((stats.moved, stats.destroyed), (1, 1));
    assert_eq!(location(&server, &ids[0]).await, None);
    assert_eq!(location(&server, &ids[1]).await, Some(pb::Location::Active));

    // No policy, no default, no hold: kept forever.
    let server = TestServer::start_with_config(config("")).await;
    let ids = store(&server, &[(ALICE, date(2001, 1, 1), "ancient")]).await;
    let stats = sweep(&server).await;
    assert_eq!((stats.moved, stats.destroyed), (0, 0));
    assert_eq!(location(&server, &ids[0]).await, Some(pb::Location::Active));
}

#[tokio::test(flavor = "multi_thread")]
async fn default_retention_applies_only_without_a_policy() {
    use pb::PolicyAction::RetainOnly;
    let server = TestServer::start_with_config(config("default_retention_days = 365")).await;
    create_policy(&server, spec("keep-bob", &[BOB], RetainOnly, 0)).await;
    let ids = store(
        &server,
        &[(ALICE, date(2020, 1, 1), "a"), (BOB, date(2020, 1, 1), "b")],
    )
    .await;
    let stats = sweep(&server).await;
    assert_eq!(stats.destroyed, 1);
    assert_eq!(location(&server, &ids[0]).await, None);
    assert_eq!(location(&server, &ids[1]).await, Some(pb::Location::Active));
    let records = dispositions(&server, ADMIN_TOKEN).await;
    assert_eq!(records[0].policies, ["default"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn user_deleted_items_under_a_retaining_policy_stay_discoverable() {
    use pb::PolicyAction::RetainOnly;
    let server = TestServer::start_with_config(config("")).await;
    create_policy(&server, spec("keep10", &[ALICE], RetainOnly, 10 * 365)).await;
    let ids = store(
        &server,
        &[
            (ALICE, date(2024, 1, 1), "quarterly forecast"),
            (BOB, date(2024, 1, 1), "forecast"),
        ],
    )
    .await;
    for mailbox in [ALICE, BOB] {
        server
            .client(INGEST_TOKEN)
            .await
            .delete_history(pb::DeleteHistoryRequest {
                mailbox_id: mailbox.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let stats = sweep(&server).await;
    // Bob's goes (nothing retains it); alice's waits in the holds area until 2034.
    assert_eq!(stats.destroyed, 1);
    assert_eq!(location(&server, &ids[1]).await, None);
    let kept = explain(&server, &ids[0]).await.unwrap();
    assert_eq!(kept.move_reason, pb::MoveReason::UserDeleted as i32);
    assert_eq!(
        kept.retain_until.unwrap().seconds,
        (date(2024, 1, 1) + chrono::TimeDelta::days(3650)).timestamp()
    );
    let case = open_case(&server, &[ALICE, BOB], &[]).await;
    search_until(&server, &case, "forecast", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_litigation_hold_blocks_destruction_and_its_release_starts_a_delay_hold() {
    use pb::PolicyAction::DeleteOnly;
    let server = TestServer::start_with_config(config("")).await;
    create_policy(&server, spec("d30", &[], DeleteOnly, 30)).await;
    let ids = store(&server, &[(ALICE, date(2025, 1, 1), "x")]).await;
    let admin = server.client(RETENTION_ADMIN_TOKEN).await;
    let hold = admin
        .place_litigation_hold(pb::PlaceLitigationHoldRequest {
            mailbox_id: ALICE.into(),
            days: 0,
        })
        .await
        .unwrap();
    let stats = sweep(&server).await;
    assert_eq!(
        (stats.moved, stats.destroyed, stats.skipped_held),
        (1, 0, 1)
    );
    assert_eq!(
        location(&server, &ids[0]).await,
        Some(pb::Location::HoldsArea)
    );

    admin
        .release_hold(pb::HoldRef {
            id: hold.id.clone(),
        })
        .await
        .unwrap();
    let status = admin
        .get_mailbox_status(pb::GetMailboxStatusRequest {
            mailbox_id: ALICE.into(),
        })
        .await
        .unwrap();
    assert_eq!(status.holds.len(), 1);
    assert_eq!(status.holds[0].kind, pb::HoldKind::Delay as i32);
    assert_eq!((status.active_items, status.holds_area_items), (0, 1));
    assert_eq!(status.policies.len(), 1);
    let stats = sweep(&server).await;
    assert_eq!((stats.destroyed, stats.skipped_held), (0, 1));
    assert!(location(&server, &ids[0]).await.is_some());

    admin
        .clear_delay_hold(pb::HoldRef {
            id: status.holds[0].id.clone(),
        })
        .await
        .unwrap();
    let stats = sweep(&server).await;
    assert_eq!(stats.destroyed, 1);
    assert_eq!(location(&server, &ids[0]).await, None);
    let sweeper = admin
        .get_sweeper_status(pb::GetSweeperStatusRequest {})
        .await
        .unwrap();
    let totals = sweeper.totals.unwrap();
    assert_eq!((totals.moved, totals.destroyed), (1, 1));
    assert!(!sweeper.running);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_based_case_hold_keeps_matching_items_and_blocks_closing_the_case() {
    let server = TestServer::start_with_config(config("")).await;
    let ids = store(
        &server,
        &[
            (ALICE, date(2025, 1, 1), "merger with fabrikam"),
            (ALICE, date(2025, 1, 2), "lunch plans"),
        ],
    )
    .await;
    let case = open_case(&server, &[ALICE], &[]).await;
    search_until(&server, &case, "merger OR lunch", 2).await;
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let hold = reviewer
        .place_case_hold(pb::PlaceCaseHoldRequest {
            case_id: case.id.clone(),
            name: "merger".into(),
            query: "merger".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(hold.items_held, 1);
    assert_eq!(hold.custodians, [ALICE]);
    // A bad query is refused with its position.
    let refused = reviewer
        .place_case_hold(pb::PlaceCaseHoldRequest {
            case_id: case.id.clone(),
            name: "bad".into(),
            query: "merger AND (".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument));

    server
        .client(INGEST_TOKEN)
        .await
        .delete_history(pb::DeleteHistoryRequest {
            mailbox_id: ALICE.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let stats = sweep(&server).await;
    assert_eq!((stats.destroyed, stats.skipped_held), (1, 1));
    assert!(location(&server, &ids[0]).await.is_some());
    assert_eq!(location(&server, &ids[1]).await, None);

    let closing = reviewer.close_case(&case.id).await.unwrap_err();
    assert_eq!(closing.code(), Some(tonic::Code::FailedPrecondition));
    let released = reviewer
        .release_case_hold(pb::ReleaseCaseHoldRequest {
            case_id: case.id.clone(),
            hold_id: hold.id.clone(),
        })
        .await
        .unwrap();
    assert!(released.released_at.is_some());
    // The release left a delay hold on the custodian.
    let holds = server
        .client(RETENTION_ADMIN_TOKEN)
        .await
        .list_holds(pb::ListHoldsRequest {
            mailbox_id: ALICE.into(),
            include_released: false,
        })
        .await
        .unwrap()
        .holds;
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].kind, pb::HoldKind::Delay as i32);
    assert_eq!(sweep(&server).await.destroyed, 0);
    reviewer.close_case(&case.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_requests_are_capped_dry_run_first_and_audited_with_ids() {
    let server = TestServer::start_with_config(config("purge_max_per_mailbox = 2")).await;
    let ids = store(
        &server,
        &[
            (ALICE, date(2025, 1, 1), "the secret code is 1234"),
            (ALICE, date(2025, 1, 2), "secret again"),
            (ALICE, date(2025, 1, 3), "secret thrice"),
            (BOB, date(2025, 1, 1), "secret for bob"),
            (BOB, date(2025, 1, 1), "harmless"),
        ],
    )
    .await;
    let case = open_case(&server, &[ALICE, BOB], &["purger"]).await;
    search_until(&server, &case, "secret", 4).await;
    let purger = server.client(PURGE_TOKEN).await;
    let request = |dry_run| pb::PurgeRequest {
        case_id: case.id.clone(),
        query: "secret".into(),
        mailboxes: vec![],
        dry_run,
    };
    let dry = purger.purge(request(true)).await.unwrap();
    assert!(dry.dry_run);
    let alice = &dry.mailboxes[0];
    assert_eq!(
        (alice.matched, alice.selected, alice.moved, alice.capped),
        (3, 2, 0, true)
    );
    assert_eq!(dry.ids.len(), 3);
    assert_eq!(location(&server, &ids[0]).await, Some(pb::Location::Active));

    let done = purger.purge(request(false)).await.unwrap();
    assert_eq!(done.mailboxes[0].moved + done.mailboxes[1].moved, 3);
    // Oldest first within the cap.
    assert!(done.ids.contains(&ids[0]) && done.ids.contains(&ids[1]));
    assert!(!done.ids.contains(&ids[2]));
    let moved = explain(&server, &ids[0]).await.unwrap();
    assert_eq!(moved.move_reason, pb::MoveReason::PurgeRequested as i32);
    assert_eq!(location(&server, &ids[4]).await, Some(pb::Location::Active));

    // An empty query is refused; other roles may not purge.
    let refused = purger
        .purge(pb::PurgeRequest {
            query: " ".into(),
            ..request(false)
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument));
    let denied = server
        .client(EDISCOVERY_TOKEN)
        .await
        .purge(request(true))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Some(tonic::Code::PermissionDenied));

    let audit = server
        .client(AUDITOR_TOKEN)
        .await
        .query_audit_log(pb::QueryAuditLogRequest {
            action: "Purge".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let real = audit
        .entries
        .iter()
        .find(|e| e.parameters_json.contains("\"dry_run\":false") && e.result.starts_with("ok"))
        .expect("the purge is audited");
    assert!(real.parameters_json.contains(&ids[0]));
    // The moved items go when retention allows (nothing retains them here).
    assert_eq!(sweep(&server).await.destroyed, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn preview_policy_reports_per_mailbox_without_saving() {
    let server = TestServer::start_with_config(config("")).await;
    store(
        &server,
        &[
            (ALICE, date(2019, 1, 1), "a"),
            (ALICE, date(2026, 1, 1), "b"),
            (BOB, date(2019, 1, 1), "c"),
        ],
    )
    .await;
    let admin = server.client(RETENTION_ADMIN_TOKEN).await;
    let preview = admin
        .preview_policy(pb::PreviewPolicyRequest {
            policy_id: String::new(),
            spec: Some(spec("d1", &[ALICE], pb::PolicyAction::DeleteOnly, 365)),
        })
        .await
        .unwrap();
    assert_eq!(preview.mailboxes.len(), 1);
    let alice = &preview.mailboxes[0];
    assert_eq!(alice.mailbox_id, ALICE);
    assert_eq!((alice.items, alice.move_now, alice.destroyable), (2, 1, 1));
    assert_eq!(preview.items_examined, 2);
    let policies = admin
        .list_policies(pb::ListPoliciesRequest {})
        .await
        .unwrap()
        .policies;
    assert!(policies.is_empty());
    // An invalid spec is refused like CreatePolicy would.
    let refused = admin
        .preview_policy(pb::PreviewPolicyRequest {
            policy_id: String::new(),
            spec: Some(spec("bad", &[ALICE], pb::PolicyAction::DeleteOnly, 0)),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_policy_re_plans_stored_items() {
    let server = TestServer::start_with_config(config("")).await;
    let ids = store(&server, &[(ALICE, date(2019, 1, 1), "a")]).await;
    assert_eq!(sweep(&server).await.moved, 0);
    create_policy(&server, spec("d1", &[], pb::PolicyAction::DeleteOnly, 365)).await;
    let stats = sweep(&server).await;
    assert_eq!((stats.moved, stats.destroyed), (1, 1));
    assert_eq!(location(&server, &ids[0]).await, None);
}

/// `kill -9` in the middle of a large pass: after a restart every item is either fully there
/// (record and index) or fully gone (with its disposition record), and a new pass finishes.
#[tokio::test(flavor = "multi_thread")]
async fn kill_during_a_sweep_leaves_store_and_index_consistent() {
    const ITEMS: usize = 20_000;
    let mut server = TestServer::start_with_config(config("")).await;
    create_policy(&server, spec("d30", &[], pb::PolicyAction::DeleteOnly, 30)).await;
    let backend = server.client(INGEST_TOKEN).await;
    for chunk in 0..ITEMS / 1000 {
        let items = (0..1000)
            .map(|n| {
                InteractionBuilder::new(ALICE, format!("bulk-{chunk}-{n}"))
                    .app("Word")
                    .created_at(date(2020, 1, 1))
                    .prompt("bulk spillage record")
                    .build()
            })
            .collect();
        backend.ingest(items).await.unwrap();
    }
    let case = open_case(&server, &[ALICE], &[]).await;
    search_until(&server, &case, "spillage", ITEMS as u64).await;

    let admin = server.client(RETENTION_ADMIN_TOKEN).await;
    let pass = tokio::spawn(async move {
        let _ = admin.run_sweep(pb::RunSweepRequest {}).await;
    });
    // Kill as soon as the first destructions are visible: the pass is then under way.
    let auditor = server.client(AUDITOR_TOKEN).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let first = auditor
            .list_dispositions(pb::ListDispositionsRequest {
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        if !first.dispositions.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the pass destroyed nothing");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.kill9();
    let _ = pass.await;
    server.launch().await;

    let gone = dispositions(&server, AUDITOR_TOKEN).await.len() as u64;
    let status = server
        .client(RETENTION_ADMIN_TOKEN)
        .await
        .get_mailbox_status(pb::GetMailboxStatusRequest {
            mailbox_id: ALICE.into(),
        })
        .await
        .unwrap();
    let remaining = status.active_items + status.holds_area_items;
    eprintln!("after kill -9: {gone} destroyed, {remaining} remaining");
    assert_eq!(remaining + gone, ITEMS as u64, "records lost or duplicated");
    // The index shows exactly what the store holds.
    search_until(&server, &case, "spillage", remaining).await;
    let stats = sweep(&server).await;
    assert_eq!(stats.destroyed, remaining);
    search_until(&server, &case, "spillage", 0).await;
    assert_eq!(
        dispositions(&server, AUDITOR_TOKEN).await.len(),
        ITEMS,
        "one disposition record per destroyed item"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_drives_sweeps_holds_purges_and_shows_dispositions() {
    let server = TestServer::start_with_config(config("")).await;
    let ids = store(
        &server,
        &[
            (ALICE, date(2019, 1, 1), "old merger notes"),
            (ALICE, date(2019, 1, 2), "old lunch notes"),
            (BOB, date(2025, 1, 1), "spilled secret"),
        ],
    )
    .await;
    let case = open_case(&server, &[ALICE, BOB], &["purger"]).await;
    search_until(&server, &case, "notes OR secret", 3).await;

    let preview = server.cli(
        RETENTION_ADMIN_TOKEN,
        &[
            "--json",
            "policy",
            "preview",
            "--name",
            "d1",
            "--include",
            ALICE,
            "--action",
            "delete-only",
            "--days",
            "365",
        ],
    );
    assert_eq!(preview.code, 0, "{}", preview.stderr);
    let preview: serde_json::Value = serde_json::from_str(&preview.stdout).unwrap();
    assert_eq!(preview["total_move_now"], 2);

    let held = server.cli(
        EDISCOVERY_TOKEN,
        &[
            "--json", "case", "hold", "place", "--case", &case.id, "--name", "merger", "--query",
            "merger",
        ],
    );
    assert_eq!(held.code, 0, "{}", held.stderr);
    let held: serde_json::Value = serde_json::from_str(&held.stdout).unwrap();
    assert_eq!(held[0]["items_held"], 1);
    assert_eq!(held[0]["kind"], "case");

    let created = server.cli(
        RETENTION_ADMIN_TOKEN,
        &[
            "policy",
            "create",
            "--name",
            "d1",
            "--include",
            ALICE,
            "--action",
            "delete-only",
            "--days",
            "365",
        ],
    );
    assert_eq!(created.code, 0, "{}", created.stderr);

    let dry = server.cli(
        PURGE_TOKEN,
        &[
            "--json",
            "purge",
            "--case",
            &case.id,
            "--query",
            "secret",
            "--dry-run",
        ],
    );
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let dry: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    assert_eq!(dry["ids"], serde_json::json!([ids[2]]));
    assert_eq!(dry["mailboxes"][0]["moved"], 0);
    let purged = server.cli(
        PURGE_TOKEN,
        &["purge", "--case", &case.id, "--query", "secret"],
    );
    assert_eq!(purged.code, 0, "{}", purged.stderr);
    assert!(purged.stdout.contains(BOB), "{}", purged.stdout);

    let swept = server.cli(RETENTION_ADMIN_TOKEN, &["--json", "sweep"]);
    assert_eq!(swept.code, 0, "{}", swept.stderr);
    let swept: serde_json::Value = serde_json::from_str(&swept.stdout).unwrap();
    // Alice's two move; the lunch one and bob's purged one go; the merger one is held.
    assert_eq!(swept["moved"], 2);
    assert_eq!(swept["destroyed"], 2);
    assert_eq!(swept["skipped_held"], 1);
    let status = server.cli(AUDITOR_TOKEN, &["--json", "sweep", "--status"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["totals"]["destroyed"], 2);

    let records = server.cli(AUDITOR_TOKEN, &["--json", "dispositions"]);
    assert_eq!(records.code, 0, "{}", records.stderr);
    let records: serde_json::Value = serde_json::from_str(&records.stdout).unwrap();
    let records = records["dispositions"].as_array().unwrap().clone();
    assert_eq!(records.len(), 2);
    let reasons: Vec<&str> = records
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"purge_requested") && reasons.contains(&"expired"),
        "{reasons:?}"
    );
    assert!(!records.iter().any(|r| r.to_string().contains("lunch")));

    let mailbox = server.cli(RETENTION_ADMIN_TOKEN, &["mailbox", "status", ALICE]);
    assert_eq!(mailbox.code, 0, "{}", mailbox.stderr);
    assert!(
        mailbox.stdout.contains("holds-area items: 1"),
        "{}",
        mailbox.stdout
    );
    assert!(mailbox.stdout.contains("case"), "{}", mailbox.stdout);

    // Wrong role: exit code 1 with a clear message.
    let denied = server.cli(INGEST_TOKEN, &["sweep"]);
    assert_eq!(denied.code, 1);
    assert!(
        denied.stderr.contains("retention_admin"),
        "{}",
        denied.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_to_the_new_calls_is_refused_clearly() {
    let server = TestServer::start_with_config(config("")).await;
    let admin = server.client(RETENTION_ADMIN_TOKEN).await;
    let bad_token = admin
        .list_dispositions(pb::ListDispositionsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Some(tonic::Code::InvalidArgument));
    assert!(bad_token.message().contains("page_token"));
    let too_big = admin
        .list_dispositions(pb::ListDispositionsRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Some(tonic::Code::InvalidArgument));
    let bad_mailbox = admin
        .get_mailbox_status(pb::GetMailboxStatusRequest {
            mailbox_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_mailbox.code(), Some(tonic::Code::InvalidArgument));
    assert!(bad_mailbox.message().contains("mailbox_id"));
    let unknown_policy = admin
        .preview_policy(pb::PreviewPolicyRequest {
            policy_id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            spec: Some(spec("p", &[ALICE], pb::PolicyAction::DeleteOnly, 30)),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_policy.code(), Some(tonic::Code::NotFound));

    let case = open_case(&server, &[ALICE], &[]).await;
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let bad_hold = reviewer
        .release_case_hold(pb::ReleaseCaseHoldRequest {
            case_id: case.id.clone(),
            hold_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_hold.code(), Some(tonic::Code::InvalidArgument));
    let unknown_hold = reviewer
        .release_case_hold(pb::ReleaseCaseHoldRequest {
            case_id: case.id.clone(),
            hold_id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_hold.code(), Some(tonic::Code::NotFound));
    let outsider = reviewer
        .place_case_hold(pb::PlaceCaseHoldRequest {
            case_id: case.id.clone(),
            name: "h".into(),
            custodians: vec![BOB.into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(outsider.code(), Some(tonic::Code::InvalidArgument));
    let backwards = reviewer
        .place_case_hold(pb::PlaceCaseHoldRequest {
            case_id: case.id.clone(),
            name: "h".into(),
            created_from: Some(prost_types::Timestamp {
                seconds: date(2025, 2, 1).timestamp(),
                nanos: 0,
            }),
            created_to: Some(prost_types::Timestamp {
                seconds: date(2025, 1, 1).timestamp(),
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(backwards.code(), Some(tonic::Code::InvalidArgument));
    // The other reviewer is not a member of the case.
    let stranger = server
        .client(OTHER_REVIEWER_TOKEN)
        .await
        .place_case_hold(pb::PlaceCaseHoldRequest {
            case_id: case.id.clone(),
            name: "h".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Some(tonic::Code::PermissionDenied));
}
