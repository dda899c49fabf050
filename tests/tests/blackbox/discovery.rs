//! eDiscovery through the real server: cases, KQL search, export to BagIt, and the index's
//! catch-up and rebuild.

use crate::common;

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use common::*;
use holdfast_client::{pb, HoldfastClient, InteractionBuilder};

fn interaction(mailbox: &str, key: &str, prompt: &str, response: &str) -> pb::InteractionInput {
    InteractionBuilder::new(mailbox, key)
        .app("Teams")
        .thread("t-1")
        .created_at(Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap())
        .prompt(prompt)
        .response(response)
        .build()
}

async fn open_case(client: &HoldfastClient, custodians: &[&str]) -> pb::Case {
    client
        .create_case(pb::CreateCaseRequest {
            name: format!("Case {}", ulid_like()),
            description: "spillage review".into(),
            members: vec![],
            custodians: custodians.iter().map(|c| c.to_string()).collect(),
        })
        .await
        .unwrap()
}

fn ulid_like() -> String {
    format!("{:x}", Utc::now().timestamp_nanos_opt().unwrap())
}

fn search_request(case: &pb::Case, query: &str) -> pb::SearchRequest {
    pb::SearchRequest {
        case_id: case.id.clone(),
        query: query.into(),
        ..Default::default()
    }
}

/// Waits until `query` finds `expected` items (the index commits asynchronously).
async fn search_until(
    client: &HoldfastClient,
    case: &pb::Case,
    query: &str,
    expected: u64,
) -> pb::SearchResponse {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = match client.search(search_request(case, query)).await {
            Ok(response) => response,
            // The index is being rebuilt: the server says so rather than answer partially.
            Err(error) if error.code() == Some(tonic::Code::Unavailable) => {
                assert!(Instant::now() < deadline, "{query:?}: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(error) => panic!("{query:?}: {error}"),
        };
        if response.total == expected {
            return response;
        }
        assert!(
            Instant::now() < deadline,
            "{query:?} found {} items, expected {expected}",
            response.total
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cases_are_visible_to_their_members_only() {
    let server = TestServer::start().await;
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let other = server.client(OTHER_REVIEWER_TOKEN).await;
    let admin = server.client(EDISCOVERY_ADMIN_TOKEN).await;
    let case = open_case(&reviewer, &["alice@contoso.com"]).await;
    assert_eq!(case.members, ["reviewer"]);
    assert_eq!(case.status, pb::CaseStatus::Open as i32);

    let error = other.get_case(&case.id).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::PermissionDenied));
    let error = other
        .search(search_request(&case, "budget"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::PermissionDenied));
    assert!(other.list_cases().await.unwrap().is_empty());
    assert_eq!(admin.list_cases().await.unwrap().len(), 1);
    admin.get_case(&case.id).await.unwrap();
    let backend = server.client(INGEST_TOKEN).await;
    let error = backend.list_cases().await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::PermissionDenied));

    // Adding a member opens the case to them.
    let updated = reviewer
        .update_case(pb::UpdateCaseRequest {
            case_id: case.id.clone(),
            add_members: vec!["other-reviewer".into()],
            add_custodians: vec!["BOB@contoso.com".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(updated.custodians, ["alice@contoso.com", "bob@contoso.com"]);
    other.get_case(&case.id).await.unwrap();

    // Bad input.
    let error = reviewer.get_case("nope").await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::InvalidArgument));
    let error = reviewer
        .get_case("01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::NotFound));
    let error = reviewer
        .create_case(pb::CreateCaseRequest {
            name: case.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::AlreadyExists));
    let error = reviewer
        .create_case(pb::CreateCaseRequest {
            name: "x".into(),
            custodians: vec!["bad\u{7}mailbox".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::InvalidArgument));

    // A closed case refuses searches and changes.
    let closed = reviewer.close_case(&case.id).await.unwrap();
    assert_eq!(closed.status, pb::CaseStatus::Closed as i32);
    let error = reviewer
        .search(search_request(&case, "budget"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::FailedPrecondition));

    let auditor = server.client(AUDITOR_TOKEN).await;
    let actions: Vec<String> = auditor
        .query_audit_log(pb::QueryAuditLogRequest {
            actor: "reviewer".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["CreateCase", "UpdateCase", "CloseCase"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn search_finds_active_and_holds_area_items_and_is_audited() {
    let server = TestServer::start().await;
    let backend = server.client(INGEST_TOKEN).await;
    backend
        .ingest(vec![
            interaction(
                "alice@contoso.com",
                "a1",
                "Summarise the merger budget",
                "Here it is",
            ),
            interaction(
                "alice@contoso.com",
                "a2",
                "What is the budget for Q3?",
                "Unknown",
            ),
            interaction("bob@contoso.com", "b1", "budget review for bob", "ok"),
            interaction(
                "carol@contoso.com",
                "c1",
                "budget of carol",
                "not a custodian",
            ),
        ])
        .await
        .unwrap();
    backend
        .delete_history(pb::DeleteHistoryRequest {
            mailbox_id: "alice@contoso.com".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(list_all(&backend, "alice@contoso.com").await.is_empty());

    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let case = open_case(&reviewer, &["alice@contoso.com", "bob@contoso.com"]).await;
    // The moves are indexed shortly after the items themselves: wait for both.
    let deadline = Instant::now() + Duration::from_secs(10);
    let response = loop {
        let response = search_until(&reviewer, &case, "budget", 3).await;
        if response.counts_by_location.get("holds") == Some(&2) || Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(response.counts_by_mailbox["alice@contoso.com"], 2);
    assert_eq!(response.counts_by_location["holds"], 2);
    assert_eq!(response.counts_by_location["active"], 1);
    assert_eq!(response.counts_by_app["Teams"], 3);
    let held: Vec<_> = response
        .hits
        .iter()
        .filter(|h| h.location == pb::Location::HoldsArea as i32)
        .collect();
    assert_eq!(held.len(), 2);
    let snippet = &response.hits[0].snippets[0];
    let highlighted =
        &snippet.text[snippet.highlights[0].start as usize..snippet.highlights[0].end as usize];
    assert_eq!(highlighted.to_lowercase(), "budget");

    // A subset of custodians; a mailbox outside the case is refused.
    let mut subset = search_request(&case, "budget");
    subset.mailboxes = vec!["bob@contoso.com".into()];
    assert_eq!(reviewer.search(subset).await.unwrap().total, 1);
    let mut outside = search_request(&case, "budget");
    outside.mailboxes = vec!["carol@contoso.com".into()];
    let error = reviewer.search(outside).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::InvalidArgument));

    // Malformed queries get INVALID_ARGUMENT with a position.
    for (query, position) in [
        ("budget AND", 10),
        ("(budget", 7),
        ("bu*", 2),
        ("created>=2025-99-01", 9),
    ] {
        let error = reviewer
            .search(search_request(&case, query))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(tonic::Code::InvalidArgument), "{query}");
        assert!(
            error
                .to_string()
                .contains(&format!("at position {position}")),
            "{query}: {error}"
        );
    }

    let auditor = server.client(AUDITOR_TOKEN).await;
    let searches = auditor
        .query_audit_log(pb::QueryAuditLogRequest {
            action: "Search".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .entries;
    let last = searches
        .iter()
        .rev()
        .find(|e| e.result.starts_with("ok"))
        .unwrap();
    assert_eq!(last.actor, "reviewer");
    assert_eq!(last.target, case.id);
    assert!(
        last.parameters_json.contains("budget"),
        "{}",
        last.parameters_json
    );
    assert!(
        last.result.contains("1 hits") || last.result.contains("3 hits"),
        "{}",
        last.result
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn paging_is_stable_while_ingest_goes_on() {
    let server = TestServer::start().await;
    let backend = server.client(INGEST_TOKEN).await;
    let batch: Vec<_> = (0..25)
        .map(|n| {
            interaction(
                "dan@contoso.com",
                &format!("k{n:02}"),
                &format!("contract number {n}"),
                "ok",
            )
        })
        .collect();
    backend.ingest(batch).await.unwrap();
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let case = open_case(&reviewer, &["dan@contoso.com"]).await;
    search_until(&reviewer, &case, "contract", 25).await;

    let mut seen = Vec::new();
    let mut request = search_request(&case, "contract");
    request.page_size = 10;
    request.sort = pb::SearchSort::Oldest as i32;
    loop {
        let page = reviewer.search(request.clone()).await.unwrap();
        assert_eq!(page.total, 25, "the total of a snapshot does not move");
        seen.extend(page.hits.iter().map(|h| h.id.clone()));
        // More matching items arrive between pages.
        let more: Vec<_> = (0..5)
            .map(|n| {
                interaction(
                    "dan@contoso.com",
                    &format!("late{}-{n}", seen.len()),
                    "contract late",
                    "ok",
                )
            })
            .collect();
        backend.ingest(more).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert_eq!(seen.len(), 25);
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 25);

    // A token belongs to its search.
    let mut first = search_request(&case, "contract");
    first.page_size = 5;
    let token = reviewer.search(first).await.unwrap().next_page_token;
    let mut other = search_request(&case, "late");
    other.page_token = token;
    let error = reviewer.search(other).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::InvalidArgument));
}

#[tokio::test(flavor = "multi_thread")]
async fn export_writes_a_bag_that_verifies_resumes_and_detects_tampering() {
    let server = TestServer::start().await;
    let backend = server.client(INGEST_TOKEN).await;
    let batch: Vec<_> = (0..40)
        .map(|n| {
            interaction(
                "erin@contoso.com",
                &format!("k{n:02}"),
                &format!("invoice {n} 予算"),
                "paid",
            )
        })
        .collect();
    backend.ingest(batch).await.unwrap();
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let case = open_case(&reviewer, &["erin@contoso.com"]).await;
    search_until(&reviewer, &case, "invoice", 40).await;

    let out = server.dir.path().join("bag");
    let out_text = out.to_str().unwrap();
    let output = server.cli(
        EDISCOVERY_TOKEN,
        &[
            "export", "--case", &case.id, "--query", "invoice", "--out", out_text,
        ],
    );
    assert_eq!(output.code, 0, "{}{}", output.stdout, output.stderr);
    assert!(
        output.stdout.contains("exported 40 interactions"),
        "{}",
        output.stdout
    );
    let info = std::fs::read_to_string(out.join("bag-info.txt")).unwrap();
    assert!(
        info.contains(&format!("External-Identifier: {}", case.id)),
        "{info}"
    );
    assert!(info.contains("Holdfast-Query: invoice"), "{info}");
    assert!(info.contains("Holdfast-Principal: reviewer"), "{info}");
    assert!(info.contains("Holdfast-Item-Count: 40"), "{info}");
    let payload = std::fs::read_to_string(out.join("data/interactions.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(payload.lines().next().unwrap()).unwrap();
    assert_eq!(first["mailbox_id"], "erin@contoso.com");
    assert_eq!(first["content_sha256"].as_str().unwrap().len(), 64);
    let output = server.cli(EDISCOVERY_TOKEN, &["export", "verify", out_text]);
    assert_eq!(output.code, 0, "{}{}", output.stdout, output.stderr);

    // An interrupted export (half a line, no tag files) resumes to the same bag.
    let resumed = server.dir.path().join("resumed");
    std::fs::create_dir_all(resumed.join("data")).unwrap();
    let lines: Vec<&str> = payload.lines().collect();
    let partial = format!("{}\n{}", lines[..15].join("\n"), &lines[15][..40]);
    std::fs::write(resumed.join("data/interactions.jsonl"), partial).unwrap();
    let parameters = serde_json::json!({
        "case_id": case.id, "case_name": case.name, "query": "invoice", "mailboxes": [],
        "principal": "reviewer", "started_at": "2026-01-01T00:00:00Z"
    });
    std::fs::write(resumed.join("holdfast-export.json"), parameters.to_string()).unwrap();
    let output = server.cli(
        EDISCOVERY_TOKEN,
        &[
            "export",
            "--case",
            &case.id,
            "--query",
            "invoice",
            "--out",
            resumed.to_str().unwrap(),
        ],
    );
    assert_eq!(output.code, 0, "{}{}", output.stdout, output.stderr);
    assert_eq!(
        std::fs::read_to_string(resumed.join("data/interactions.jsonl")).unwrap(),
        payload
    );
    let output = server.cli(
        EDISCOVERY_TOKEN,
        &["export", "verify", resumed.to_str().unwrap()],
    );
    assert_eq!(output.code, 0, "{}{}", output.stdout, output.stderr);

    // A finished bag is not overwritten; a tampered one fails verification.
    let output = server.cli(
        EDISCOVERY_TOKEN,
        &[
            "export", "--case", &case.id, "--query", "invoice", "--out", out_text,
        ],
    );
    assert_eq!(output.code, 1);
    let tampered = payload.replacen("paid", "void", 1);
    std::fs::write(out.join("data/interactions.jsonl"), tampered).unwrap();
    let output = server.cli(EDISCOVERY_TOKEN, &["export", "verify", out_text]);
    assert_eq!(output.code, 4, "{}{}", output.stdout, output.stderr);
    assert!(output.stdout.contains("NOT valid"), "{}", output.stdout);

    // Exports are audited.
    let auditor = server.client(AUDITOR_TOKEN).await;
    let exports = auditor
        .query_audit_log(pb::QueryAuditLogRequest {
            action: "Export".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .entries;
    assert_eq!(exports.len(), 2);
    assert_eq!(exports[0].result, "started: 40 items");
    assert_eq!(exports[1].result, "started: 25 items");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_index_catches_up_after_kill_9_and_rebuilds_when_deleted() {
    let mut server = TestServer::start().await;
    let backend = server.client(INGEST_TOKEN).await;
    let mut acknowledged = 0u64;
    for round in 0..20 {
        let batch: Vec<_> = (0..100)
            .map(|n| {
                interaction(
                    "fay@contoso.com",
                    &format!("r{round}-{n}"),
                    "quarterly forecast memo",
                    "ok",
                )
            })
            .collect();
        backend.ingest(batch).await.unwrap();
        acknowledged += 100;
    }
    // Killed before the index could commit everything.
    server.kill9();
    server.launch().await;
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let case = open_case(&reviewer, &["fay@contoso.com"]).await;
    let before = search_until(&reviewer, &case, "forecast", acknowledged).await;
    let mut near = search_request(&case, "quarterly NEAR(2) memo");
    near.page_size = 1000;
    let near_before = reviewer.search(near.clone()).await.unwrap();
    if common::splits_backend() {
        // No local index to delete: the splits are in the bucket.
        assert_eq!(near_before.total, acknowledged);
        return;
    }

    assert!(server.terminate().success());
    std::fs::remove_dir_all(server.data_dir().join("index")).unwrap();
    server.launch().await;
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let after = search_until(&reviewer, &case, "forecast", acknowledged).await;
    assert_eq!(before.counts_by_mailbox, after.counts_by_mailbox);
    let near_after = reviewer.search(near).await.unwrap();
    // Relevance ties order differently after a rebuild; the matches are the same.
    assert_eq!(near_before.total, acknowledged);
    assert_eq!(near_after.total, near_before.total);
    assert_eq!(
        near_after.counts_by_location,
        near_before.counts_by_location
    );
    assert!(
        server.log().contains("rebuilding the search index"),
        "{}",
        server.log()
    );
}
