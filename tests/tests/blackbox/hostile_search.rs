//! A hostile caller against search, paging, cases and holds (issue 8: defects 1, 3, 6, 7, 8
//! and 10), through the real server binary.

use crate::common;

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use common::*;
use holdfast_client::{pb, ClientError, HoldfastClient, InteractionBuilder};
use sha2::{Digest, Sha256};

const ANN: &str = "ann@contoso.com";

fn interaction(mailbox: &str, key: &str, prompt: &str) -> pb::InteractionInput {
    InteractionBuilder::new(mailbox, key)
        .app("Teams")
        .created_at(Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap())
        .prompt(prompt)
        .response("noted")
        .build()
}

async fn open_case(client: &HoldfastClient, custodians: &[&str], members: &[&str]) -> pb::Case {
    client
        .create_case(pb::CreateCaseRequest {
            name: format!("case {}", Utc::now().timestamp_nanos_opt().unwrap()),
            description: String::new(),
            members: members.iter().map(|m| m.to_string()).collect(),
            custodians: custodians.iter().map(|c| c.to_string()).collect(),
        })
        .await
        .unwrap()
}

fn search_request(case: &pb::Case, query: &str) -> pb::SearchRequest {
    pb::SearchRequest {
        case_id: case.id.clone(),
        query: query.into(),
        ..Default::default()
    }
}

/// Waits until `query` finds `expected` items (the index commits asynchronously).
async fn search_until(client: &HoldfastClient, case: &pb::Case, query: &str, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let total = client
            .search(search_request(case, query))
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

/// The error is INVALID_ARGUMENT and names `field`.
fn assert_invalid(result: Result<impl std::fmt::Debug, ClientError>, field: &str) {
    let error = result.expect_err("refused");
    assert_eq!(error.code(), Some(tonic::Code::InvalidArgument), "{error}");
    assert!(error.to_string().contains(field), "{error}");
}

/// The plain-hex page token of the server before tokens were authenticated: snapshot,
/// offset and a fingerprint of the search, which that server computed like this.
fn old_search_token(snapshot: u64, offset: u64, case_id: &str, query: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(case_id.as_bytes());
    hasher.update([0]);
    hasher.update(query.as_bytes());
    hasher.update([0]);
    hasher.update(ANN.as_bytes());
    hasher.update(b"Relevance");
    let fingerprint = u64::from_be_bytes(hasher.finalize()[..8].try_into().unwrap());
    let mut bytes = Vec::new();
    for part in [snapshot, offset, fingerprint] {
        bytes.extend_from_slice(&part.to_be_bytes());
    }
    hex::encode(bytes)
}

/// `token` with one character changed (still URL-safe base64 or hex).
fn tampered(token: &str, at: usize) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_search_token_with_a_huge_offset_is_refused_and_the_server_lives() {
    let server = TestServer::start().await;
    let backend = server.client(INGEST_TOKEN).await;
    let batch: Vec<_> = (0..3)
        .map(|n| interaction(ANN, &format!("k{n}"), "contract draft"))
        .collect();
    backend.ingest(batch).await.unwrap();
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let case = open_case(&reviewer, &[ANN], &[]).await;
    search_until(&reviewer, &case, "contract", 3).await;
    let mut first = search_request(&case, "contract");
    first.page_size = 1;
    let page = reviewer.search(first.clone()).await.unwrap();
    assert!(!page.next_page_token.is_empty());

    // The old server trusted this offset and reserved 2 * 2^40 slots: the process aborted.
    // Every snapshot id it could have pinned by now is tried.
    for snapshot in 1..=40 {
        let mut forged = first.clone();
        forged.page_token = old_search_token(snapshot, 1 << 40, &case.id, "contract");
        assert_invalid(reviewer.search(forged).await, "page_token");
    }
    // A genuine token, changed in any one place, is refused too.
    let genuine = page.next_page_token.clone();
    for at in [0, genuine.len() / 2, genuine.len() - 1] {
        let mut request = first.clone();
        request.page_token = tampered(&genuine, at);
        assert_invalid(reviewer.search(request).await, "page_token");
    }
    // Truncated, or for another query.
    let mut request = first.clone();
    request.page_token = genuine[..genuine.len() - 4].to_string();
    assert_invalid(reviewer.search(request).await, "page_token");
    let mut other = search_request(&case, "draft");
    other.page_size = 1;
    other.page_token = genuine.clone();
    assert_invalid(reviewer.search(other).await, "page_token");

    // The server is alive and the genuine token still works.
    let mut next = first.clone();
    next.page_token = genuine;
    let second = reviewer.search(next).await.unwrap();
    assert_eq!(second.hits.len(), 1);
    assert_ne!(second.hits[0].id, page.hits[0].id);
    search_until(&reviewer, &case, "contract", 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_audit_and_disposition_tokens_are_authenticated_and_bound() {
    let server = TestServer::start().await;
    let backend = server.client(INGEST_TOKEN).await;
    let batch: Vec<_> = (0..3)
        .map(|n| interaction(ANN, &format!("k{n}"), "hello"))
        .collect();
    let ids: Vec<String> = backend
        .ingest(batch)
        .await
        .unwrap()
        .results
        .into_iter()
        .map(|r| r.id)
        .collect();
    let list = |token: String, mailbox: &str| pb::ListInteractionsRequest {
        mailbox_id: mailbox.into(),
        page_size: 1,
        page_token: token,
        ..Default::default()
    };
    let page = backend.list(list(String::new(), ANN)).await.unwrap();
    let token = page.next_page_token.clone();
    assert!(!token.is_empty());
    // The old cursor was plain hex of (created_at µs, id): any such string was taken.
    let mut old_cursor = i64::MAX.to_be_bytes().to_vec();
    old_cursor.extend_from_slice(&[0; 16]);
    assert_invalid(
        backend.list(list(hex::encode(old_cursor), ANN)).await,
        "page_token",
    );
    assert_invalid(
        backend
            .list(list(tampered(&token, token.len() / 2), ANN))
            .await,
        "page_token",
    );
    // A token of one mailbox's listing does not page another's.
    assert_invalid(
        backend.list(list(token.clone(), "bob@contoso.com")).await,
        "page_token",
    );
    let mut seen = page.interactions.len();
    let mut next = token;
    while !next.is_empty() {
        let page = backend.list(list(next, ANN)).await.unwrap();
        seen += page.interactions.len();
        next = page.next_page_token;
    }
    assert_eq!(seen, ids.len());

    let auditor = server.client(AUDITOR_TOKEN).await;
    let audit = |token: String| pb::QueryAuditLogRequest {
        page_size: 1,
        page_token: token,
        ..Default::default()
    };
    // Enough entries for two pages: two audited actions (refusals without a token are
    // audited once per window, not at once).
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    for _ in 0..2 {
        open_case(&reviewer, &[ANN], &[]).await;
    }
    let page = auditor.query_audit_log(audit(String::new())).await.unwrap();
    let token = page.next_page_token.clone();
    assert!(!token.is_empty());
    // The old token was the next sequence number in decimal.
    assert_invalid(
        auditor.query_audit_log(audit("1".into())).await,
        "page_token",
    );
    assert_invalid(
        auditor
            .query_audit_log(audit(tampered(&token, token.len() / 2)))
            .await,
        "page_token",
    );
    // A token of another call is refused, naming that call.
    let error = backend
        .list(list(token.clone(), ANN))
        .await
        .expect_err("an audit token does not page a listing");
    assert!(error.to_string().contains("QueryAuditLog"), "{error}");
    let mut filtered = audit(token.clone());
    filtered.actor = "anonymous".into();
    assert_invalid(auditor.query_audit_log(filtered).await, "page_token");
    auditor.query_audit_log(audit(token)).await.unwrap();

    // The old dispositions token was "purged_at µs.id".
    let retention = auditor.clone();
    let old = pb::ListDispositionsRequest {
        page_token: format!("0.{}", ids[0]),
        ..Default::default()
    };
    let error = retention.list_dispositions(old).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(tonic::Code::InvalidArgument),
        "{error:?}"
    );
    assert!(error.message().contains("page_token"), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn extreme_dates_in_a_query_are_a_clear_error_with_a_position() {
    let server = TestServer::start().await;
    server
        .client(INGEST_TOKEN)
        .await
        .ingest(vec![interaction(ANN, "k0", "budget")])
        .await
        .unwrap();
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let case = open_case(&reviewer, &[ANN], &[]).await;
    search_until(&reviewer, &case, "budget", 1).await;
    for query in [
        "created:+262142-12-31",
        "budget created<=+262142-12-31",
        "sent>+262142-12-31",
        "received:2025-01-01..+262142-12-31",
        "created>=+999999999-01-01",
    ] {
        let error = reviewer
            .search(search_request(&case, query))
            .await
            .expect_err(query);
        assert_eq!(
            error.code(),
            Some(tonic::Code::InvalidArgument),
            "{query}: {error}"
        );
        assert!(error.to_string().contains("position"), "{query}: {error}");
    }
    // The last representable day itself is fine as a lower bound.
    assert_eq!(
        reviewer
            .search(search_request(&case, "created>=+262142-12-31"))
            .await
            .unwrap()
            .total,
        0
    );
    search_until(&reviewer, &case, "budget", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_case_calls_are_audited() {
    let server = TestServer::start().await;
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let outsider = server.client(OTHER_REVIEWER_TOKEN).await;
    let case = open_case(&reviewer, &[ANN], &[]).await;
    let denied = |result: Result<(), ClientError>| {
        assert_eq!(
            result.expect_err("not a member").code(),
            Some(tonic::Code::PermissionDenied)
        );
    };
    denied(outsider.get_case(&case.id).await.map(|_| ()));
    denied(
        outsider
            .search(search_request(&case, "budget"))
            .await
            .map(|_| ()),
    );
    denied(
        outsider
            .export(pb::ExportRequest {
                case_id: case.id.clone(),
                query: "budget".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    denied(
        outsider
            .update_case(pb::UpdateCaseRequest {
                case_id: case.id.clone(),
                add_members: vec!["other-reviewer".into()],
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    denied(outsider.close_case(&case.id).await.map(|_| ()));
    let discovery = outsider.clone();
    let status = discovery
        .list_case_holds(pb::ListCaseHoldsRequest {
            case_id: case.id.clone(),
            include_released: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Some(tonic::Code::PermissionDenied));

    let entries = server
        .client(AUDITOR_TOKEN)
        .await
        .query_audit_log(pb::QueryAuditLogRequest {
            actor: "other-reviewer".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .entries;
    let mut actions: Vec<&str> = entries
        .iter()
        .filter(|e| e.target == case.id)
        .filter(|e| e.result.starts_with("denied") || e.result.starts_with("refused"))
        .map(|e| e.action.as_str())
        .collect();
    actions.sort();
    assert_eq!(
        actions,
        [
            "CloseCase",
            "Export",
            "GetCase",
            "ListCaseHolds",
            "Search",
            "UpdateCase"
        ],
        "{entries:#?}"
    );
    // Still a member-only case: nothing changed.
    assert_eq!(
        reviewer.get_case(&case.id).await.unwrap().members,
        ["reviewer"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_a_case_races_neither_updates_nor_hold_placement() {
    let server = TestServer::start().await;
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    for round in 0..15 {
        let case = open_case(&reviewer, &[ANN], &[]).await;
        let close = reviewer.close_case(&case.id);
        let update = reviewer.update_case(pb::UpdateCaseRequest {
            case_id: case.id.clone(),
            description: format!("round {round}"),
            ..Default::default()
        });
        let discovery = reviewer.clone();
        let hold = discovery.place_case_hold(pb::PlaceCaseHoldRequest {
            case_id: case.id.clone(),
            name: "race".into(),
            ..Default::default()
        });
        let (closed, _, placed) = tokio::join!(close, update, hold);
        let now = reviewer.get_case(&case.id).await.unwrap();
        let active = reviewer
            .list_case_holds(pb::ListCaseHoldsRequest {
                case_id: case.id.clone(),
                include_released: false,
            })
            .await
            .unwrap()
            .holds;
        if closed.is_ok() {
            // A racing update never reopens a closed case.
            assert_eq!(now.status, pb::CaseStatus::Closed as i32, "round {round}");
        }
        if now.status == pb::CaseStatus::Closed as i32 {
            // A closed case never has an active hold.
            assert!(active.is_empty(), "round {round}: {active:?}");
            assert!(
                placed.is_err(),
                "round {round}: a hold was placed on a closing case"
            );
        } else {
            assert_eq!(active.len(), 1, "round {round}");
            assert!(placed.is_ok());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hold_whose_query_cannot_be_evaluated_is_refused_not_saved() {
    let server = TestServer::start().await;
    // One item with 10,050 distinct words starting with "zqh": past the prefix limit.
    let words: Vec<String> = (0..10_050).map(|n| format!("zqh{n}")).collect();
    server
        .client(INGEST_TOKEN)
        .await
        .ingest(vec![interaction(ANN, "wide", &words.join(" "))])
        .await
        .unwrap();
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let case = open_case(&reviewer, &[ANN], &[]).await;
    search_until(&reviewer, &case, "zqh10049", 1).await;
    let discovery = reviewer.clone();
    let place = |query: &str| pb::PlaceCaseHoldRequest {
        case_id: case.id.clone(),
        name: "wide".into(),
        query: query.into(),
        ..Default::default()
    };
    let refused = discovery.place_case_hold(place("zqh*")).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(tonic::Code::InvalidArgument),
        "{refused:?}"
    );
    assert!(refused.message().contains("query"), "{refused:?}");
    assert!(refused.message().contains("10000"), "{refused:?}");
    let refused = discovery
        .place_case_hold(place("zqh1 AND location:active"))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(tonic::Code::InvalidArgument),
        "{refused:?}"
    );
    assert!(refused.message().contains("location:"), "{refused:?}");

    // Nothing was saved: no hold, and the case closes.
    let holds = discovery
        .list_case_holds(pb::ListCaseHoldsRequest {
            case_id: case.id.clone(),
            include_released: true,
        })
        .await
        .unwrap()
        .holds;
    assert!(holds.is_empty(), "{holds:?}");
    let entries = server
        .client(AUDITOR_TOKEN)
        .await
        .query_audit_log(pb::QueryAuditLogRequest {
            action: "PlaceCaseHold".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .entries;
    assert_eq!(entries.len(), 2);
    assert!(
        entries.iter().all(|e| e.result.starts_with("refused")),
        "{entries:#?}"
    );
    // A narrower prefix is fine.
    let hold = discovery.place_case_hold(place("zqh1004*")).await.unwrap();
    assert_eq!(hold.items_held, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn search_and_purge_during_an_index_rebuild_are_unavailable_never_partial() {
    if common::splits_backend() {
        // No local index to rebuild: the splits are in the bucket (their bootstrap is
        // tested in server/src/search/splits.rs).
        return;
    }
    let mut server = TestServer::start().await;
    let backend = server.client(INGEST_TOKEN).await;
    let filler = "the quarterly memo covers revenue costs headcount and plans ".repeat(20);
    let mut stored = 0u64;
    for round in 0..12 {
        let batch: Vec<_> = (0..1000)
            .map(|n| interaction(ANN, &format!("r{round}-{n}"), &filler))
            .collect();
        backend.ingest(batch).await.unwrap();
        stored += 1000;
    }
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let case = open_case(&reviewer, &[ANN], &["purger"]).await;
    search_until(&reviewer, &case, "memo", stored).await;

    assert!(server.terminate().success());
    std::fs::remove_dir_all(server.data_dir().join("index")).unwrap();
    server.launch().await;
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let purger = server.client(PURGE_TOKEN).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut unavailable = 0;
    loop {
        let purge = purger
            .purge(pb::PurgeRequest {
                case_id: case.id.clone(),
                query: "memo".into(),
                dry_run: true,
                ..Default::default()
            })
            .await;
        match purge {
            Ok(response) => {
                let matched: u64 = response.mailboxes.iter().map(|m| m.matched).sum();
                assert_eq!(matched, stored, "a purge saw a partial index");
            }
            Err(status) => {
                assert_eq!(status.code(), Some(tonic::Code::Unavailable), "{status:?}");
                assert!(status.message().contains("retry"), "{status:?}");
            }
        }
        match reviewer.search(search_request(&case, "memo")).await {
            Ok(response) => {
                assert_eq!(response.total, stored, "a search saw a partial index");
                break;
            }
            Err(error) => {
                assert_eq!(error.code(), Some(tonic::Code::Unavailable), "{error}");
                assert!(error.to_string().contains("retry"), "{error}");
                unavailable += 1;
            }
        }
        assert!(Instant::now() < deadline, "the rebuild did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("searches answered UNAVAILABLE during the rebuild: {unavailable}");
}
