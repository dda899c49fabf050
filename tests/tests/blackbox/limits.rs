//! Issue 8, defects 2, 5, 6 (auth) and 8 (config), over the real server binary: stalled
//! exports cannot starve the server, a flood of bad tokens is cheap and audited in aggregate,
//! a revoked token stops writing on an open stream, no admin token is minted for an existing
//! data directory, and out-of-range config values are refused at start.

use crate::common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::*;
use holdfast_client::{pb, HoldfastClient, InteractionBuilder};

/// Long enough for any healthy answer on a loaded CI machine; a starved server never answers.
const DEADLINE: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer within {DEADLINE:?}"))
}

fn config_with(extra: &str) -> String {
    format!("{}\n{extra}", default_config())
}

/// A case over `mailbox` with `count` large items matching "ledger", all indexed.
async fn case_with_large_items(server: &TestServer, mailbox: &str, count: usize) -> pb::Case {
    let backend = server.client(INGEST_TOKEN).await;
    let text = "ledger ".repeat(15_000); // ~100 KiB per item: exports outgrow every window
    let batch: Vec<_> = (0..count)
        .map(|n| {
            InteractionBuilder::new(mailbox, format!("big-{n}"))
                .created_at(chrono::Utc::now() - chrono::TimeDelta::hours(1))
                .app("Word")
                .prompt(text.clone())
                .response("ok")
                .build()
        })
        .collect();
    let response = backend.ingest(batch).await.unwrap();
    assert!(response
        .results
        .iter()
        .all(|r| status_of(r) == pb::IngestStatus::Created));
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let case = reviewer
        .create_case(pb::CreateCaseRequest {
            name: format!("stall {mailbox}"),
            custodians: vec![mailbox.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let found = reviewer
            .search(pb::SearchRequest {
                case_id: case.id.clone(),
                query: "ledger".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        if found.total == count as u64 {
            return case;
        }
        assert!(Instant::now() < deadline, "items were not indexed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens `count` exports on one connection and never reads them.
async fn stalled_exports(
    reviewer: &HoldfastClient,
    case_id: &str,
    count: usize,
) -> Vec<tonic::Streaming<pb::ExportMessage>> {
    let mut streams = Vec::new();
    for n in 0..count {
        let stream = within(&format!("export {n}"), async {
            reviewer
                .export(pb::ExportRequest {
                    case_id: case_id.into(),
                    query: "ledger".into(),
                    ..Default::default()
                })
                .await
        })
        .await
        .unwrap_or_else(|error| panic!("export {n} refused: {error}"));
        streams.push(stream);
    }
    streams
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_exports_cannot_starve_ingest_audit_or_reads() {
    let server = TestServer::start().await;
    // ~10 MiB per export: more than the windows and buffers between producer and client.
    let case = case_with_large_items(&server, "stall@contoso.com", 100).await;
    // One connection for the exports (its client never reads), others for the rest.
    let exporter = server.client(EDISCOVERY_TOKEN).await;
    let streams = stalled_exports(&exporter, &case.id, 24).await;

    // The 25th export of the same principal is refused, not queued.
    let refused = within("the 25th export", async {
        exporter
            .export(pb::ExportRequest {
                case_id: case.id.clone(),
                query: "ledger".into(),
                ..Default::default()
            })
            .await
    })
    .await
    .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(tonic::Code::ResourceExhausted),
        "{refused}"
    );

    // Ingest, the audit log and store reads still answer.
    let backend = server.client(INGEST_TOKEN).await;
    let written = within(
        "ingest",
        backend.ingest(vec![item("free@contoso.com", "k1")]),
    )
    .await
    .unwrap();
    assert_eq!(status_of(&written.results[0]), pb::IngestStatus::Created);
    let read = within("a store read", backend.get(&written.results[0].id))
        .await
        .unwrap();
    assert_eq!(read.id, written.results[0].id);
    assert_eq!(
        within("a listing", list_all(&backend, "free@contoso.com"))
            .await
            .len(),
        1
    );
    let auditor = server.client(AUDITOR_TOKEN).await;
    let exports = within(
        "the audit log",
        auditor.query_audit_log(pb::QueryAuditLogRequest {
            action: "Export".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .entries;
    assert_eq!(exports.len(), 24);
    assert!(
        within("verify", auditor.verify_audit_log())
            .await
            .unwrap()
            .intact
    );
    // Another principal can still export, and read it to the end.
    let other = server.client(EDISCOVERY_ADMIN_TOKEN).await;
    let mut stream = within("another principal's export", async {
        other
            .export(pb::ExportRequest {
                case_id: case.id.clone(),
                query: "ledger".into(),
                ..Default::default()
            })
            .await
    })
    .await
    .unwrap();
    let mut items = 0;
    let trailer = loop {
        let message = within("export message", stream.message())
            .await
            .unwrap()
            .expect("a trailer before the end");
        match message.message.unwrap() {
            pb::export_message::Message::Interaction(_) => items += 1,
            pb::export_message::Message::Trailer(trailer) => break trailer,
        }
    };
    assert_eq!((items, trailer.count), (100, 100));
    drop(streams);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_the_client_stops_reading_times_out_and_frees_its_place() {
    let server = TestServer::start_with_config(config_with(
        "[concurrency]\nexport_idle_timeout_seconds = 1\n",
    ))
    .await;
    // ~10 MiB per export: more than the windows and buffers between producer and client.
    let case = case_with_large_items(&server, "idle@contoso.com", 100).await;
    let exporter = server.client(EDISCOVERY_TOKEN).await;
    let streams = stalled_exports(&exporter, &case.id, 24).await;
    // Once the stalled producers give up, the principal may export again.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let attempt = exporter
            .export(pb::ExportRequest {
                case_id: case.id.clone(),
                query: "ledger".into(),
                ..Default::default()
            })
            .await;
        match attempt {
            Ok(_) => break,
            Err(error) => {
                assert_eq!(
                    error.code(),
                    Some(tonic::Code::ResourceExhausted),
                    "{error}"
                );
                assert!(Instant::now() < deadline, "stalled exports never timed out");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // The stalled streams, read at last (all at once: they share one connection's window).
    // Those whose producer gave up end with DEADLINE_EXCEEDED after what was queued, never
    // like a complete export; those that had not yet (reading lets them go on) complete.
    let endings = futures::future::join_all(streams.into_iter().map(|mut stream| async move {
        let mut n = 0u64;
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    n += 1;
                    if let Some(pb::export_message::Message::Trailer(trailer)) = message.message {
                        return Err(trailer.count);
                    }
                }
                Ok(None) => panic!("an export ended with neither a trailer nor an error"),
                Err(status) => return Ok((status.code(), n)),
            }
        }
    }));
    let mut timed_out = 0;
    for ending in within("the stalled streams", endings).await {
        match ending {
            Ok((code, items)) => {
                assert_eq!(code, tonic::Code::DeadlineExceeded);
                assert!(items < 100, "all items and then an error");
                timed_out += 1;
            }
            Err(count) => assert_eq!(count, 100),
        }
    }
    assert!(timed_out > 0, "no stalled export timed out");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_bad_tokens_is_rate_limited_and_audited_as_one_entry() {
    let mut server = TestServer::start_with_config(config_with(
        "[concurrency]\nrefusal_window_seconds = 3600\nunauthenticated_tarpit_ms = 0\n",
    ))
    .await;
    let attacker = server.client("hf_not_a_real_token").await;
    let (mut unauthenticated, mut limited) = (0, 0);
    for n in 0..1000 {
        let error = attacker
            .ingest(vec![item("victim@contoso.com", &format!("x{n}"))])
            .await
            .unwrap_err();
        match error.code() {
            Some(tonic::Code::Unauthenticated) => unauthenticated += 1,
            Some(tonic::Code::ResourceExhausted) => limited += 1,
            other => panic!("unexpected answer {other:?}: {error}"),
        }
    }
    assert_eq!(unauthenticated + limited, 1000);
    assert!(limited > 0, "the flood was never rate-limited");
    // An authorised caller from the same address is not affected.
    let backend = server.client(INGEST_TOKEN).await;
    let written = backend
        .ingest(vec![item("victim@contoso.com", "real")])
        .await
        .unwrap();
    assert_eq!(status_of(&written.results[0]), pb::IngestStatus::Created);
    assert_eq!(list_all(&backend, "victim@contoso.com").await.len(), 1);

    // The window in progress is audited at shutdown: one entry with the whole count.
    let status = server.terminate();
    assert!(status.success(), "{status}");
    server.launch().await;
    let auditor = server.client(AUDITOR_TOKEN).await;
    let all = auditor
        .query_audit_log(pb::QueryAuditLogRequest::default())
        .await
        .unwrap()
        .entries;
    let refusals: Vec<_> = all
        .iter()
        .filter(|e| e.action == "UnauthenticatedCalls")
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let entry = refusals[0];
    assert_eq!(entry.actor, "anonymous");
    assert_eq!(entry.target, "127.0.0.1");
    let parameters: serde_json::Value = serde_json::from_str(&entry.parameters_json).unwrap();
    assert_eq!(parameters["count"], 1000);
    assert_eq!(parameters["rate_limited"], limited);
    assert_eq!(parameters["by_action"]["Ingest"], 1000);
    assert!(
        all.len() < 10,
        "the flood grew the audit log: {}",
        all.len()
    );
    assert!(auditor.verify_audit_log().await.unwrap().intact);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_past_its_rate_waits_for_each_refusal() {
    let server = TestServer::start_with_config(config_with(
        "[concurrency]\nunauthenticated_per_second = 1\nunauthenticated_burst = 1\n\
         unauthenticated_tarpit_ms = 400\n",
    ))
    .await;
    let attacker = server.client("hf_not_a_real_token").await;
    let first = attacker.who_am_i().await.unwrap_err();
    assert_eq!(first.code(), Some(tonic::Code::Unauthenticated), "{first}");
    // The bucket is empty now: the next answer is held back (a lower bound, not a timing
    // of the server's speed).
    let asked = Instant::now();
    let limited = attacker.who_am_i().await.unwrap_err();
    assert_eq!(
        limited.code(),
        Some(tonic::Code::ResourceExhausted),
        "{limited}"
    );
    assert!(
        asked.elapsed() >= Duration::from_millis(400),
        "{:?}",
        asked.elapsed()
    );
    // A caller with a valid token is answered at once meanwhile.
    let admin = server.client(ADMIN_TOKEN).await;
    within("who am i", admin.who_am_i()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_anonymous_oversized_request_is_refused_from_its_headers() {
    let server = TestServer::start().await;
    // Larger than the largest request the server decodes (16 MiB): without the gate the
    // server read and decoded it first, then refused it for its size, not for its token.
    let huge = InteractionBuilder::new("victim@contoso.com", "huge")
        .prompt("x".repeat(20 << 20))
        .response("ok")
        .build();
    for token in ["hf_not_a_real_token", ""] {
        let attacker = server.client(token).await;
        let error = within(
            "an oversized anonymous call",
            attacker.ingest(vec![huge.clone()]),
        )
        .await
        .unwrap_err();
        assert_eq!(
            error.code(),
            Some(tonic::Code::Unauthenticated),
            "token {token:?}: {error}"
        );
    }
    // Real callers are not affected.
    let backend = server.client(INGEST_TOKEN).await;
    let written = backend
        .ingest(vec![item("victim@contoso.com", "real")])
        .await
        .unwrap();
    assert_eq!(status_of(&written.results[0]), pb::IngestStatus::Created);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_token_stops_writing_on_an_open_ingest_stream() {
    let server = TestServer::start().await;
    let admin = server.client(ADMIN_TOKEN).await;
    let created = admin
        .create_token("streamer", vec![pb::Role::Ingest])
        .await
        .unwrap();
    let streamer = server.client(&created.token).await;
    let (batches, receiver) = tokio::sync::mpsc::channel(4);
    let mut responses = streamer
        .ingest_stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap();
    let batch = |key: &str| pb::IngestRequest {
        interactions: vec![item("stream@contoso.com", key)],
        sequence: 0,
    };
    batches.send(batch("before")).await.unwrap();
    let first = within("the first batch", responses.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status_of(&first.results[0]), pb::IngestStatus::Created);

    admin.revoke_token("streamer").await.unwrap();
    batches.send(batch("after")).await.unwrap();
    let refused = within("the batch after revocation", responses.message())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    let backend = server.client(INGEST_TOKEN).await;
    let stored: Vec<String> = list_all(&backend, "stream@contoso.com")
        .await
        .into_iter()
        .map(|i| i.client_key)
        .collect();
    assert_eq!(stored, ["before"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_token_stops_an_open_export() {
    let server = TestServer::start().await;
    let case = case_with_large_items(&server, "revoked@contoso.com", 120).await;
    let admin = server.client(ADMIN_TOKEN).await;
    let created = admin
        .create_token("contractor", vec![pb::Role::Ediscovery])
        .await
        .unwrap();
    server
        .client(EDISCOVERY_TOKEN)
        .await
        .update_case(pb::UpdateCaseRequest {
            case_id: case.id.clone(),
            add_members: vec!["contractor".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let contractor = server.client(&created.token).await;
    let mut stream = contractor
        .export(pb::ExportRequest {
            case_id: case.id.clone(),
            query: "ledger".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let first = within("the first item", stream.message()).await.unwrap();
    assert!(first.is_some());
    admin.revoke_token("contractor").await.unwrap();
    // What was already read or queued may still arrive; then the export ends with an error,
    // never with the trailer of a complete export.
    let mut received = 1;
    let ended = loop {
        match within("the export after revocation", stream.message()).await {
            Ok(Some(message)) => {
                assert!(
                    !matches!(
                        message.message,
                        Some(pb::export_message::Message::Trailer(_))
                    ),
                    "the export completed after its token was revoked"
                );
                received += 1;
            }
            Ok(None) => panic!("the export ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::PermissionDenied, "{ended}");
    assert!(received < 120, "every item was exported: {received}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_removed_from_the_case_stops_an_open_export() {
    let server = TestServer::start().await;
    let case = case_with_large_items(&server, "removed@contoso.com", 120).await;
    let owner = server.client(EDISCOVERY_TOKEN).await;
    owner
        .update_case(pb::UpdateCaseRequest {
            case_id: case.id.clone(),
            add_members: vec!["other-reviewer".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let reviewer = server.client(OTHER_REVIEWER_TOKEN).await;
    let mut stream = reviewer
        .export(pb::ExportRequest {
            case_id: case.id.clone(),
            query: "ledger".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(within("the first item", stream.message())
        .await
        .unwrap()
        .is_some());
    owner
        .update_case(pb::UpdateCaseRequest {
            case_id: case.id.clone(),
            remove_members: vec!["other-reviewer".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let ended = loop {
        match within("the export after removal", stream.message()).await {
            Ok(Some(message)) => assert!(
                !matches!(
                    message.message,
                    Some(pb::export_message::Message::Trailer(_))
                ),
                "the export completed after its caller left the case"
            ),
            Ok(None) => panic!("the export ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::PermissionDenied, "{ended}");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_every_token_does_not_mint_an_admin_token_on_restart() {
    let mut server = TestServer::start_with_config("metrics_listen = \"off\"\n".into()).await;
    let token_file = server.data_dir().join("admin.token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let admin = server.client(token.trim()).await;
    admin.revoke_token("admin").await.unwrap();
    assert_eq!(
        admin.who_am_i().await.unwrap_err().code(),
        Some(tonic::Code::Unauthenticated)
    );
    let status = server.terminate();
    assert!(status.success(), "{status}");
    std::fs::remove_file(&token_file).unwrap();
    server.launch().await;
    assert!(!token_file.exists(), "a new admin token was minted");
    assert!(
        server.log().contains("no token can call this server"),
        "{}",
        server.log()
    );
    let old = server.client(token.trim()).await;
    assert_eq!(
        old.who_am_i().await.unwrap_err().code(),
        Some(tonic::Code::Unauthenticated)
    );
}

#[test]
fn out_of_range_config_values_are_refused_at_start() {
    for (section, key, value) in [
        ("retention", "default_retention_days", "4000000000"),
        (
            "retention",
            "sweep_interval_seconds",
            "18446744073709551615",
        ),
        ("limits", "max_future_skew_seconds", "9223372036854775807"),
        ("concurrency", "exports_per_principal", "0"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("holdfast.toml");
        std::fs::write(
            &config,
            format!("metrics_listen = \"off\"\n[{section}]\n{key} = {value}\n"),
        )
        .unwrap();
        let output = std::process::Command::new(SERVER_BIN)
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{section}.{key} = {value} was accepted"
        );
        assert!(
            stderr.contains(&format!("{section}.{key} must be within")),
            "{section}.{key}: {stderr}"
        );
    }
}
