//! Ingest, read, list and delete through the real server and client.

use crate::common;

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::*;
use holdfast_client::builder::timestamp;
use holdfast_client::{pb, BatchingIngester, IngesterOptions, InteractionBuilder};

fn full_item() -> pb::InteractionInput {
    InteractionBuilder::new("Alice@Contoso.com", "req-42")
        .thread("thread-7")
        .app("Teams")
        .created_at(
            Utc.with_ymd_and_hms(2025, 3, 1, 9, 30, 15).unwrap() + Duration::microseconds(123_456),
        )
        .prompt("Summarise the Q3 budget, please. Résumé: 予算の要約")
        .response("")
        .model("openai", "gpt-4o", "2024-08-06")
        .plugin("BingWebSearch", "Bing web search", "1.2")
        .plugin("contoso-crm", "CRM lookup", "0.9")
        .accessed_resource(pb::AccessedResource {
            id: "res-1".into(),
            name: "Budget.xlsx".into(),
            r#type: "file".into(),
            url: "https://contoso.sharepoint.com/Budget.xlsx".into(),
            action: "read".into(),
            sensitivity_label: "Confidential".into(),
        })
        .context("https://contoso.sharepoint.com/Plan.docx", "document")
        .safety(pb::Safety {
            jailbreak_detected: true,
            cross_prompt_injection_detected: false,
            content_filtered: true,
            categories: vec!["violence".into(), "self-harm".into()],
        })
        .sensitivity_label("General")
        .attribute("tenant", "contoso")
        .attribute("request_region", "eu-west")
        .build()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_field_round_trips() {
    let server = TestServer::start().await;
    let client = server.client(INGEST_TOKEN).await;
    let input = full_item();
    let response = client.ingest(vec![input.clone()]).await.unwrap();
    assert_eq!(response.results.len(), 1);
    let result = &response.results[0];
    assert_eq!(status_of(result), pb::IngestStatus::Created, "{result:?}");

    let stored = client.get(&result.id).await.unwrap();
    assert_eq!(stored.id, result.id);
    assert_eq!(stored.mailbox_id, "alice@contoso.com", "stored lower-cased");
    assert_eq!(stored.client_key, input.client_key);
    assert_eq!(stored.thread_id, input.thread_id);
    assert_eq!(stored.app, input.app);
    assert_eq!(stored.created_at, input.created_at);
    assert_eq!(stored.prompt, input.prompt);
    assert_eq!(stored.response, "");
    assert_eq!(stored.model, input.model);
    assert_eq!(stored.plugins, input.plugins);
    assert_eq!(stored.accessed_resources, input.accessed_resources);
    assert_eq!(stored.contexts, input.contexts);
    assert_eq!(stored.safety, input.safety);
    assert_eq!(stored.sensitivity_label, input.sensitivity_label);
    assert_eq!(stored.attributes, input.attributes);
    assert_eq!(stored.location, pb::Location::Active as i32);
    assert_eq!(stored.content_sha256.len(), 64);
    let received = stored.received_at.unwrap();
    assert!((Utc::now().timestamp() - received.seconds).abs() < 60);
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotent_retry_and_conflicting_duplicate() {
    let server = TestServer::start().await;
    let client = server.client(INGEST_TOKEN).await;
    let original = item("bob@contoso.com", "k1");
    let first = client.ingest(vec![original.clone()]).await.unwrap().results[0].clone();
    assert_eq!(status_of(&first), pb::IngestStatus::Created);

    // Same key, same content, different case of mailbox: the original id, nothing new.
    let mut retry = original.clone();
    retry.mailbox_id = "BOB@contoso.com".into();
    let again = client.ingest(vec![retry]).await.unwrap().results[0].clone();
    assert_eq!(status_of(&again), pb::IngestStatus::Duplicate);
    assert_eq!(again.id, first.id);

    // Same key, different content: refused, never overwritten.
    let mut changed = original.clone();
    changed.prompt = "something else".into();
    let conflict = client.ingest(vec![changed]).await.unwrap().results[0].clone();
    assert_eq!(status_of(&conflict), pb::IngestStatus::Rejected);
    assert_eq!(conflict.code, pb::RejectCode::AlreadyExists as i32);
    assert_eq!(conflict.id, first.id);
    assert!(
        !conflict.reason.contains("something else"),
        "no content in errors"
    );

    let stored = client.get(&first.id).await.unwrap();
    assert_eq!(stored.prompt, original.prompt);
    assert_eq!(list_all(&client, "bob@contoso.com").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_inside_one_batch_and_across_concurrent_batches() {
    let server = TestServer::start().await;
    let client = server.client(INGEST_TOKEN).await;
    let a = item("carol@contoso.com", "same");
    let mut b = a.clone();
    b.response = "different".into();
    let results = client
        .ingest(vec![a.clone(), a.clone(), b])
        .await
        .unwrap()
        .results;
    assert_eq!(status_of(&results[0]), pb::IngestStatus::Created);
    assert_eq!(status_of(&results[1]), pb::IngestStatus::Duplicate);
    assert_eq!(results[1].id, results[0].id);
    assert_eq!(status_of(&results[2]), pb::IngestStatus::Rejected);
    assert_eq!(results[2].code, pb::RejectCode::AlreadyExists as i32);

    // Ten callers race to store one new key: exactly one creates it.
    let racer = item("carol@contoso.com", "raced");
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = client.clone();
        let racer = racer.clone();
        tasks.push(tokio::spawn(async move {
            client.ingest(vec![racer]).await.unwrap().results[0].clone()
        }));
    }
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let result = task.await.unwrap();
        if status_of(&result) == pb::IngestStatus::Created {
            created += 1;
        }
        ids.insert(result.id);
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    assert_eq!(list_all(&client, "carol@contoso.com").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_validation_rule_rejects_with_nothing_stored() {
    let server = TestServer::start().await;
    let client = server.client(INGEST_TOKEN).await;
    let mailbox = "dave@contoso.com";
    let secret = "TOP-SECRET-PROMPT-TEXT";
    let mut cases: Vec<(&str, pb::InteractionInput)> = Vec::new();
    let base = || {
        let mut i = item(mailbox, "k");
        i.prompt = secret.into();
        i
    };
    let mut c = base();
    c.prompt = format!("{secret}{}", "x".repeat(1 << 20));
    cases.push(("prompt", c));
    let mut c = base();
    c.response = "y".repeat((1 << 20) + 1);
    cases.push(("response", c));
    let mut c = base();
    c.created_at = Some(timestamp(Utc::now() + Duration::minutes(10)));
    cases.push(("created_at", c));
    let mut c = base();
    c.created_at = None;
    cases.push(("created_at", c));
    let mut c = base();
    c.mailbox_id = "bad\u{1}mailbox".into();
    cases.push(("mailbox_id", c));
    let mut c = base();
    c.mailbox_id = format!("{}@x.com", "m".repeat(320));
    cases.push(("mailbox_id", c));
    let mut c = base();
    c.mailbox_id = String::new();
    cases.push(("mailbox_id", c));
    let mut c = base();
    c.client_key = String::new();
    cases.push(("client_key", c));
    let mut c = base();
    c.attributes = (0..65)
        .map(|n| (format!("k{n}"), "v".into()))
        .collect::<HashMap<_, _>>();
    cases.push(("attributes", c));
    let mut c = base();
    c.app = String::new();
    cases.push(("app", c));

    for (index, (field, input)) in cases.into_iter().enumerate() {
        let mut input = input;
        input.client_key = if field == "client_key" {
            String::new()
        } else {
            format!("k{index}")
        };
        let result = client.ingest(vec![input]).await.unwrap().results[0].clone();
        assert_eq!(
            status_of(&result),
            pb::IngestStatus::Rejected,
            "case {field}"
        );
        assert_eq!(
            result.code,
            pb::RejectCode::InvalidArgument as i32,
            "case {field}"
        );
        assert_eq!(result.field, field, "case {field}: {}", result.reason);
        assert!(result.id.is_empty());
        assert!(
            !result.reason.contains(secret),
            "content leaked into an error"
        );
    }
    assert!(
        list_all(&client, mailbox).await.is_empty(),
        "nothing stored"
    );
    assert!(
        !server.log().contains(secret),
        "content leaked into the log"
    );

    // One bad item never fails the others.
    let mut bad = item(mailbox, "bad");
    bad.created_at = Some(timestamp(Utc::now() + Duration::days(1)));
    let results = client
        .ingest(vec![item(mailbox, "good-1"), bad, item(mailbox, "good-2")])
        .await
        .unwrap()
        .results;
    let statuses: Vec<_> = results.iter().map(status_of).collect();
    assert_eq!(
        statuses,
        [
            pb::IngestStatus::Created,
            pb::IngestStatus::Rejected,
            pb::IngestStatus::Created
        ]
    );
    assert_eq!(
        results.iter().map(|r| r.index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(list_all(&client, mailbox).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_batch_is_refused_whole() {
    let server = TestServer::start().await;
    let client = server.client(INGEST_TOKEN).await;
    let batch: Vec<_> = (0..1001)
        .map(|n| item("erin@contoso.com", &format!("k{n}")))
        .collect();
    let error = client.ingest(batch).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::InvalidArgument), "{error}");
    assert!(error.to_string().contains("1001"), "{error}");
    assert!(list_all(&client, "erin@contoso.com").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_is_newest_first_with_stable_paging_and_filters() {
    let server = TestServer::start().await;
    let client = server.client(INGEST_TOKEN).await;
    let mailbox = "frank@contoso.com";
    let base: DateTime<Utc> = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let batch: Vec<_> = (0..30)
        .map(|n| {
            InteractionBuilder::new(mailbox, format!("k{n:02}"))
                .app("Word")
                .thread(if n % 2 == 0 { "even" } else { "odd" })
                .created_at(base + Duration::days(n))
                .prompt(format!("p{n}"))
                .build()
        })
        .collect();
    client.ingest(batch).await.unwrap();

    // Page through 7 at a time while new, older items arrive: pages stay consistent.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut late = 0;
    loop {
        let page = client
            .list(pb::ListInteractionsRequest {
                mailbox_id: mailbox.into(),
                page_size: 7,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(page.interactions.iter().map(|i| i.client_key.clone()));
        // An item newer than everything listed must not shift later pages.
        let newer = InteractionBuilder::new(mailbox, format!("late{late}"))
            .app("Word")
            .created_at(base + Duration::days(100 + late))
            .prompt("late")
            .build();
        late += 1;
        client.ingest(vec![newer]).await.unwrap();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = (0..30).rev().map(|n| format!("k{n:02}")).collect();
    assert_eq!(seen, expected);

    let page = client
        .list(pb::ListInteractionsRequest {
            mailbox_id: mailbox.into(),
            thread_id: "odd".into(),
            created_from: Some(timestamp(base + Duration::days(5))),
            created_to: Some(timestamp(base + Duration::days(11))),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let keys: Vec<_> = page
        .interactions
        .iter()
        .map(|i| i.client_key.as_str())
        .collect();
    assert_eq!(keys, ["k09", "k07", "k05"], "from inclusive, to exclusive");

    for (request, field) in [
        (
            pb::ListInteractionsRequest {
                mailbox_id: mailbox.into(),
                page_token: "garbage".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            pb::ListInteractionsRequest {
                mailbox_id: mailbox.into(),
                page_size: 5000,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::ListInteractionsRequest {
                mailbox_id: String::new(),
                ..Default::default()
            },
            "mailbox_id",
        ),
    ] {
        let error = client.list(request).await.unwrap_err();
        assert_eq!(error.code(), Some(tonic::Code::InvalidArgument), "{error}");
        assert!(error.to_string().contains(field), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_history_moves_items_to_the_holds_area() {
    let server = TestServer::start().await;
    let client = server.client(INGEST_TOKEN).await;
    let admin = server.client(ADMIN_TOKEN).await;
    let mailbox = "grace@contoso.com";
    let base = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
    let batch: Vec<_> = (0..6)
        .map(|n| {
            InteractionBuilder::new(mailbox, format!("k{n}"))
                .app("Outlook")
                .thread(if n < 3 { "t-a" } else { "t-b" })
                .created_at(base + Duration::days(n))
                .prompt("p")
                .build()
        })
        .collect();
    let ids: Vec<String> = client
        .ingest(batch)
        .await
        .unwrap()
        .results
        .into_iter()
        .map(|r| r.id)
        .collect();
    client
        .ingest(vec![item("other@contoso.com", "x")])
        .await
        .unwrap();

    // Thread t-b, created before day 5: k3 and k4.
    let moved = client
        .delete_history(pb::DeleteHistoryRequest {
            mailbox_id: mailbox.into(),
            thread_id: "t-b".into(),
            before: Some(timestamp(base + Duration::days(5))),
        })
        .await
        .unwrap();
    assert_eq!(moved.num_moved, 2);
    let listed: Vec<_> = list_all(&client, mailbox)
        .await
        .into_iter()
        .map(|i| i.client_key)
        .collect();
    assert_eq!(listed, ["k5", "k2", "k1", "k0"]);
    let thread_b = client
        .list(pb::ListInteractionsRequest {
            mailbox_id: mailbox.into(),
            thread_id: "t-b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(thread_b.interactions.len(), 1);

    // The user's principal cannot see a moved item; an admin sees it, in the holds area.
    let error = client.get(&ids[3]).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::NotFound));
    let held = admin.get(&ids[3]).await.unwrap();
    assert_eq!(held.location, pb::Location::HoldsArea as i32);
    assert_eq!(held.move_reason, pb::MoveReason::UserDeleted as i32);
    assert!(held.moved_at.is_some());

    // Everything else of the mailbox; other mailboxes untouched.
    let moved = client
        .delete_history(pb::DeleteHistoryRequest {
            mailbox_id: "GRACE@contoso.com".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(moved.num_moved, 4);
    assert!(list_all(&client, mailbox).await.is_empty());
    assert_eq!(list_all(&client, "other@contoso.com").await.len(), 1);
    // Deleting again moves nothing; a re-sent item stays a duplicate and stays hidden.
    let again = client
        .delete_history(pb::DeleteHistoryRequest {
            mailbox_id: mailbox.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(again.num_moved, 0);
    let mut resent = InteractionBuilder::new(mailbox, "k0")
        .app("Outlook")
        .thread("t-a")
        .created_at(base)
        .prompt("p")
        .build();
    resent.created_at = Some(timestamp(base));
    let result = client.ingest(vec![resent]).await.unwrap().results[0].clone();
    assert_eq!(status_of(&result), pb::IngestStatus::Duplicate);
    assert!(list_all(&client, mailbox).await.is_empty());

    // Audited, with the count and without content.
    let auditor = server.client(AUDITOR_TOKEN).await;
    let entries = auditor
        .query_audit_log(pb::QueryAuditLogRequest {
            action: "DeleteHistory".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .entries;
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].actor, "backend");
    assert_eq!(entries[0].target, mailbox);
    assert!(
        entries[0].result.contains("moved 2"),
        "{}",
        entries[0].result
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ids_and_unknown_ids() {
    let server = TestServer::start().await;
    let client = server.client(INGEST_TOKEN).await;
    let error = client.get("not-an-id").await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::InvalidArgument));
    let error = client.get("01ARZ3NDEKTSV4RRFFQ69G5FAV").await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::NotFound));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ingest_stream_answers_every_batch_in_order() {
    let server = TestServer::start().await;
    let client = server.client(INGEST_TOKEN).await;
    let batches: Vec<pb::IngestRequest> = (0..20u64)
        .map(|sequence| pb::IngestRequest {
            sequence,
            interactions: (0..50)
                .map(|n| item("heidi@contoso.com", &format!("s{sequence}-{n}")))
                .collect(),
        })
        .collect();
    let mut responses = client
        .ingest_stream(tokio_stream::iter(batches))
        .await
        .unwrap();
    let mut sequences = Vec::new();
    while let Some(response) = responses.message().await.unwrap() {
        assert_eq!(response.results.len(), 50);
        assert!(response
            .results
            .iter()
            .all(|r| status_of(r) == pb::IngestStatus::Created));
        sequences.push(response.sequence);
    }
    assert_eq!(sequences, (0..20).collect::<Vec<_>>());
    assert_eq!(list_all(&client, "heidi@contoso.com").await.len(), 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_batching_ingester_never_duplicates_on_resend() {
    let server = TestServer::start().await;
    let client = server.client(INGEST_TOKEN).await;
    let options = IngesterOptions {
        batch_size: 64,
        max_buffered: 100,
        ..IngesterOptions::default()
    };
    for round in 0..2 {
        let ingester = BatchingIngester::start(client.clone(), options.clone());
        let mut tickets = Vec::new();
        for n in 0..500 {
            tickets.push(
                ingester
                    .submit(item("ivan@contoso.com", &format!("k{n}")))
                    .await
                    .unwrap(),
            );
        }
        for ticket in tickets {
            let result = ticket.wait().await.unwrap();
            let expected = if round == 0 {
                pb::IngestStatus::Created
            } else {
                pb::IngestStatus::Duplicate
            };
            assert_eq!(status_of(&result), expected);
        }
        let summary = ingester.finish().await;
        assert_eq!(summary.created + summary.duplicate, 500);
        assert_eq!(summary.rejected + summary.failed, 0);
    }
    assert_eq!(list_all(&client, "ivan@contoso.com").await.len(), 500);
}

/// Issue 8 (review of the hardening): a DeleteHistory whose caller goes away (a tiny
/// grpc-timeout) must not move items without an audit entry. Whatever moment the deadline
/// cuts the call, either nothing moved, or the move is audited.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_delete_history_is_still_audited() {
    let server = TestServer::start().await;
    let client = server.client(INGEST_TOKEN).await;
    let auditor = server.client(AUDITOR_TOKEN).await;
    let channel = tonic::transport::Endpoint::from_shared(server.addr())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = pb::interaction_service_client::InteractionServiceClient::new(channel);
    for (round, timeout_ms) in [1u64, 5, 20, 100].into_iter().enumerate() {
        let mailbox = format!("cut{round}@contoso.com");
        for batch in 0..2 {
            let items: Vec<_> = (0..1000)
                .map(|n| item(&mailbox, &format!("k{batch}-{n}")))
                .collect();
            client.ingest(items).await.unwrap();
        }
        let mut request = tonic::Request::new(pb::DeleteHistoryRequest {
            mailbox_id: mailbox.clone(),
            ..Default::default()
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {INGEST_TOKEN}").parse().unwrap(),
        );
        request.set_timeout(std::time::Duration::from_millis(timeout_ms));
        let _ = raw.delete_history(request).await;
        // Poll until the move shows its audit entry; if none ever comes, nothing may have
        // moved.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let audited = auditor
                .query_audit_log(pb::QueryAuditLogRequest {
                    action: "DeleteHistory".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .entries
                .into_iter()
                .any(|entry| entry.target == mailbox);
            let remaining = list_all(&client, &mailbox).await.len();
            if audited {
                break;
            }
            if std::time::Instant::now() > deadline {
                assert_eq!(
                    remaining, 2000,
                    "items were moved (cut after {timeout_ms} ms) but the move was never audited"
                );
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Issue 8 (review): a case change whose caller goes away (a tiny grpc-timeout) must not be
/// saved without its audit entry. Whatever moment the deadline cuts the call, either the
/// member was not added, or the addition is audited.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_case_update_is_still_audited() {
    let server = TestServer::start().await;
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let auditor = server.client(AUDITOR_TOKEN).await;
    let case = reviewer
        .create_case(pb::CreateCaseRequest {
            name: "cut short".into(),
            custodians: vec!["alice@contoso.com".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(server.addr())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = pb::discovery_service_client::DiscoveryServiceClient::new(channel);
    for (round, timeout_us) in [1u64, 200, 1000, 5000].into_iter().enumerate() {
        let member = format!("member{round}");
        let mut request = tonic::Request::new(pb::UpdateCaseRequest {
            case_id: case.id.clone(),
            add_members: vec![member.clone()],
            ..Default::default()
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {EDISCOVERY_TOKEN}").parse().unwrap(),
        );
        request.set_timeout(std::time::Duration::from_micros(timeout_us));
        let _ = raw.update_case(request).await;
        // Wait until the change is audited; if no entry ever comes, the member must not
        // have been added.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let audited = auditor
                .query_audit_log(pb::QueryAuditLogRequest {
                    action: "UpdateCase".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .entries
                .into_iter()
                .any(|entry| entry.parameters_json.contains(&member));
            if audited {
                break;
            }
            if std::time::Instant::now() > deadline {
                let members = reviewer.get_case(&case.id).await.unwrap().members;
                assert!(
                    !members.contains(&member),
                    "{member} was added (cut after {timeout_us} µs) but never audited"
                );
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
