//! Authentication, roles, tokens and the tamper-evident audit log.

use crate::common;

use common::*;
use holdfast_client::{pb, ClientConfig, HoldfastClient};

#[tokio::test(flavor = "multi_thread")]
async fn missing_unknown_and_wrong_role_tokens_are_refused_and_audited() {
    let mut server = TestServer::start().await;

    let unknown = server.client("hf_not_a_real_token").await;
    let error = unknown.ingest(vec![item("a@b.c", "k")]).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::Unauthenticated), "{error}");

    // No authorization header at all: the raw generated client.
    let channel = tonic::transport::Endpoint::from_shared(server.addr())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = pb::interaction_service_client::InteractionServiceClient::new(channel);
    let status = raw
        .list_interactions(pb::ListInteractionsRequest {
            mailbox_id: "a@b.c".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("Bearer"), "{}", status.message());

    // Wrong roles.
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let error = reviewer.ingest(vec![item("a@b.c", "k")]).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::PermissionDenied));
    // Refused from its headers: a message past the size limit is never decoded (that would
    // answer OUT_OF_RANGE), so no principal but the backend can make the server allocate for
    // an ingest batch.
    let mut huge = item("a@b.c", "k-huge");
    huge.prompt = "x".repeat(20 << 20);
    let error = reviewer.ingest(vec![huge]).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::PermissionDenied), "{error}");
    let backend = server.client(INGEST_TOKEN).await;
    let error = backend.verify_audit_log().await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::PermissionDenied));
    let error = backend
        .create_token("x", vec![pb::Role::Admin])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::PermissionDenied));
    let auditor = server.client(AUDITOR_TOKEN).await;
    let error = auditor
        .delete_history(pb::DeleteHistoryRequest {
            mailbox_id: "a@b.c".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::PermissionDenied));
    // Nothing was stored by the refused ingests.
    assert!(list_all(&backend, "a@b.c").await.is_empty());

    // Calls without a valid token are audited per source and window (at the latest when the
    // server stops); refusals of known principals one by one.
    let status = server.terminate();
    assert!(status.success(), "{status}");
    server.launch().await;
    let auditor = server.client(AUDITOR_TOKEN).await;
    let entries = auditor
        .query_audit_log(pb::QueryAuditLogRequest::default())
        .await
        .unwrap()
        .entries;
    let denied: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e.result.starts_with("denied"))
        .map(|e| (e.actor.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        denied,
        [
            ("reviewer", "Ingest"),
            ("reviewer", "Ingest"),
            ("backend", "VerifyAuditLog"),
            ("backend", "CreateToken"),
            ("auditor", "DeleteHistory"),
            ("anonymous", "UnauthenticatedCalls"),
        ]
    );
    let anonymous = entries.last().unwrap();
    assert_eq!(anonymous.target, "127.0.0.1");
    let parameters: serde_json::Value = serde_json::from_str(&anonymous.parameters_json).unwrap();
    assert_eq!(parameters["count"], 2);
    assert_eq!(parameters["by_action"]["Ingest"], 1);
    assert_eq!(parameters["by_action"]["ListInteractions"], 1);
    let verification = auditor.verify_audit_log().await.unwrap();
    assert!(verification.intact, "{verification:?}");
    assert_eq!(verification.num_entries, entries.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_created_listed_used_and_revoked() {
    let server = TestServer::start().await;
    let admin = server.client(ADMIN_TOKEN).await;
    let created = admin
        .create_token("backend-2", vec![pb::Role::Ingest])
        .await
        .unwrap();
    assert!(created.token.starts_with("hf_"));
    let info = created.info.unwrap();
    assert_eq!(info.source, "api");
    assert_eq!(info.created_by, "test-admin");

    let backend2 = server.client(&created.token).await;
    let result = backend2
        .ingest(vec![item("z@contoso.com", "k")])
        .await
        .unwrap();
    assert_eq!(status_of(&result.results[0]), pb::IngestStatus::Created);

    let names: Vec<String> = admin
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(names.contains(&"backend-2".to_string()), "{names:?}");
    // Only hashes are stored: the plaintext appears nowhere in the data directory's files.
    let error = admin
        .create_token("backend-2", vec![pb::Role::Ingest])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::AlreadyExists));
    let error = admin
        .create_token("bad name!", vec![pb::Role::Ingest])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::InvalidArgument));
    let error = admin.create_token("no-roles", vec![]).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::InvalidArgument));
    let error = admin.revoke_token("backend").await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(tonic::Code::FailedPrecondition),
        "config tokens stay"
    );
    let error = admin.revoke_token("nobody").await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::NotFound));

    admin.revoke_token("backend-2").await.unwrap();
    let error = backend2
        .ingest(vec![item("z@contoso.com", "k2")])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::Unauthenticated));

    let auditor = server.client(AUDITOR_TOKEN).await;
    let actions: Vec<(String, String, String)> = auditor
        .query_audit_log(pb::QueryAuditLogRequest {
            actor: "test-admin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| (e.action, e.target, e.result))
        .collect();
    assert_eq!(actions.len(), 7, "{actions:?}");
    assert_eq!(actions[0].0, "CreateToken");
    assert_eq!(actions[0].2, "ok");
    assert!(actions[1].2.starts_with("error"), "{actions:?}");
    assert_eq!(
        actions[6],
        ("RevokeToken".into(), "backend-2".into(), "ok".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn first_start_without_tokens_writes_a_private_admin_token() {
    let server = TestServer::start_with_config("metrics_listen = \"127.0.0.1:0\"\n".into()).await;
    let path = server.data_dir().join("admin.token");
    let token = std::fs::read_to_string(&path).expect("admin.token written");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let admin = server.client(token.trim()).await;
    let tokens = admin.list_tokens().await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].name, "admin");
    // The CLI finds the token file through --data-dir.
    let output = run_cli(
        &[
            "--addr",
            &server.addr(),
            "--data-dir",
            server.data_dir().to_str().unwrap(),
            "token",
            "list",
        ],
        &[],
        None,
    );
    assert_eq!(output.code, 0, "{}", output.stderr);
    assert!(output.stdout.contains("admin"));
}

#[tokio::test(flavor = "multi_thread")]
async fn paged_audit_queries_and_filters() {
    let server = TestServer::start().await;
    let backend = server.client(INGEST_TOKEN).await;
    for n in 0..5 {
        backend
            .delete_history(pb::DeleteHistoryRequest {
                mailbox_id: format!("m{n}@contoso.com"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let auditor = server.client(AUDITOR_TOKEN).await;
    let mut targets = Vec::new();
    let mut token = String::new();
    loop {
        let page = auditor
            .query_audit_log(pb::QueryAuditLogRequest {
                action: "DeleteHistory".into(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.entries.len() <= 2);
        targets.extend(page.entries.into_iter().map(|e| e.target));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = (0..5).map(|n| format!("m{n}@contoso.com")).collect();
    assert_eq!(targets, expected);
    let error = auditor
        .query_audit_log(pb::QueryAuditLogRequest {
            page_token: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::InvalidArgument));
}

/// Opens the server's RocksDB offline, as an attacker with disk access would.
fn tamper(data_dir: &std::path::Path, edit: impl FnOnce(&rocksdb::DB)) {
    let path = data_dir.join("store");
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).unwrap();
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, cfs).unwrap();
    edit(&db);
    db.flush_wal(true).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_chain_detects_an_edited_or_removed_entry() {
    for attack in ["edit", "remove"] {
        let mut server = TestServer::start().await;
        let backend = server.client(INGEST_TOKEN).await;
        for n in 0..4 {
            backend
                .delete_history(pb::DeleteHistoryRequest {
                    mailbox_id: format!("victim{n}@contoso.com"),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let auditor = server.client(AUDITOR_TOKEN).await;
        let before = auditor.verify_audit_log().await.unwrap();
        assert!(before.intact);
        assert_eq!(before.num_entries, 4);
        server.terminate();

        tamper(&server.data_dir(), |db| {
            let cf = db.cf_handle("audit").unwrap();
            let key = 2u64.to_be_bytes();
            if attack == "edit" {
                let value = db.get_cf(cf, key).unwrap().unwrap();
                let text = String::from_utf8(value).unwrap();
                let edited = text.replace("victim1@contoso.com", "someone@contoso.com");
                assert_ne!(text, edited);
                db.put_cf(cf, key, edited).unwrap();
            } else {
                db.delete_cf(cf, key).unwrap();
            }
        });

        server.launch().await;
        let auditor = server.client(AUDITOR_TOKEN).await;
        let after = auditor.verify_audit_log().await.unwrap();
        assert!(!after.intact, "{attack}: {after:?}");
        assert_eq!(after.first_bad_sequence, 2, "{attack}: {after:?}");
        assert_eq!(after.num_entries, 1);
        // The CLI reports it with its own exit code.
        let output = server.cli(AUDITOR_TOKEN, &["audit", "verify"]);
        assert_eq!(output.code, 4, "{}{}", output.stdout, output.stderr);
        assert!(output.stdout.contains("BROKEN"), "{}", output.stdout);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_server_is_a_clear_error() {
    let port = free_port();
    let error = match HoldfastClient::connect(ClientConfig {
        addr: format!("http://127.0.0.1:{port}"),
        token: "t".into(),
        tls: None,
    })
    .await
    {
        Ok(_) => panic!("connected to nothing"),
        Err(error) => error,
    };
    assert!(error.to_string().contains("cannot connect"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_administrator_reading_a_users_history_is_audited() {
    let server = TestServer::start().await;
    let backend = server.client(INGEST_TOKEN).await;
    let result = backend
        .ingest(vec![item("nina@contoso.com", "k")])
        .await
        .unwrap();
    let id = result.results[0].id.clone();
    // The backend acting for its user: not audited.
    list_all(&backend, "nina@contoso.com").await;
    backend.get(&id).await.unwrap();
    let admin = server.client(ADMIN_TOKEN).await;
    list_all(&admin, "nina@contoso.com").await;
    admin.get(&id).await.unwrap();
    let entries = server
        .client(AUDITOR_TOKEN)
        .await
        .query_audit_log(pb::QueryAuditLogRequest::default())
        .await
        .unwrap()
        .entries;
    let seen: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("test-admin", "ListInteractions", "nina@contoso.com"),
            ("test-admin", "GetInteraction", id.as_str()),
        ]
    );
    assert!(!entries[1].parameters_json.contains("prompt of k"));
}
