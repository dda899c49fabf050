//! The `holdfast` CLI against the real server.

use crate::common;

use common::*;

fn write_jsonl(dir: &std::path::Path, lines: &[String]) -> std::path::PathBuf {
    let path = dir.join("items.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn line(mailbox: &str, key: &str, created: &str) -> String {
    serde_json::json!({
        "mailbox_id": mailbox, "client_key": key, "thread_id": "conv-1", "app": "Teams",
        "created_at": created, "prompt": format!("hello {key}"), "response": "hi there",
        "model": {"provider": "openai", "name": "gpt-4o", "version": "1"},
        "attributes": {"source": "cli-test"}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_a_jsonl_file_then_list_get_and_delete() {
    let server = TestServer::start().await;
    let lines = vec![
        line("lee@contoso.com", "a", "2018-03-01T10:00:00Z"),
        line("lee@contoso.com", "b", "2018-03-02T10:00:00Z"),
        "{not json".to_string(),
        line("lee@contoso.com", "c", "2099-01-01T00:00:00Z"),
        line("lee@contoso.com", "d", "2018-03-03T10:00:00Z"),
    ];
    let file = write_jsonl(server.dir.path(), &lines);
    let output = server.cli(INGEST_TOKEN, &["ingest", "--file", file.to_str().unwrap()]);
    assert_eq!(output.code, 3, "{}{}", output.stdout, output.stderr);
    assert!(
        output
            .stdout
            .contains("5 lines: 3 created, 0 duplicate, 1 rejected, 0 failed, 1 not valid JSON"),
        "{}",
        output.stdout
    );
    assert!(
        output.stderr.contains("line 3: not valid JSON"),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("line 4: rejected: created_at"),
        "{}",
        output.stderr
    );

    // Again: everything already there is a duplicate.
    let output = server.cli(
        INGEST_TOKEN,
        &["--json", "ingest", "--file", file.to_str().unwrap()],
    );
    let report: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    assert_eq!(report["duplicate"], 3);
    assert_eq!(report["created"], 0);

    let output = server.cli(
        INGEST_TOKEN,
        &["--json", "list", "--mailbox", "lee@contoso.com"],
    );
    assert_eq!(output.code, 0, "{}", output.stderr);
    let page: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    let items = page["interactions"].as_array().unwrap();
    let keys: Vec<&str> = items
        .iter()
        .map(|i| i["client_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["d", "b", "a"]);
    let id = items[0]["id"].as_str().unwrap().to_string();

    let output = server.cli(INGEST_TOKEN, &["get", &id]);
    assert_eq!(output.code, 0, "{}", output.stderr);
    assert!(output.stdout.contains("hello d"));
    assert!(output.stdout.contains("location:    active"));
    let output = server.cli(INGEST_TOKEN, &["--json", "get", &id]);
    let item: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    assert_eq!(item["attributes"]["source"], "cli-test");
    assert_eq!(item["model"]["name"], "gpt-4o");

    let output = server.cli(
        INGEST_TOKEN,
        &["list", "--mailbox", "lee@contoso.com", "--limit", "2"],
    );
    assert!(
        output.stdout.contains("next page: --page-token"),
        "{}",
        output.stdout
    );

    let output = server.cli(
        INGEST_TOKEN,
        &[
            "delete-history",
            "--mailbox",
            "lee@contoso.com",
            "--before",
            "2018-03-03",
        ],
    );
    assert_eq!(output.code, 0, "{}", output.stderr);
    assert!(
        output.stdout.contains("moved 2 interaction(s)"),
        "{}",
        output.stdout
    );
    let output = server.cli(ADMIN_TOKEN, &["get", &id]);
    assert!(output.stdout.contains("location:    active"));

    // Bad input: a clear message and exit code 1.
    let output = server.cli(
        INGEST_TOKEN,
        &[
            "list",
            "--mailbox",
            "lee@contoso.com",
            "--from",
            "yesterday",
        ],
    );
    assert_eq!(output.code, 1);
    assert!(output.stderr.contains("not a time"), "{}", output.stderr);
    let output = server.cli(INGEST_TOKEN, &["get", "nope"]);
    assert_eq!(output.code, 1);
    assert!(
        output.stderr.contains("INVALID_ARGUMENT"),
        "{}",
        output.stderr
    );
    let output = server.cli(EDISCOVERY_TOKEN, &["list", "--mailbox", "lee@contoso.com"]);
    assert_eq!(output.code, 1);
    assert!(
        output.stderr.contains("PERMISSION_DENIED"),
        "{}",
        output.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_and_audit_commands() {
    let server = TestServer::start().await;
    let output = server.cli(
        ADMIN_TOKEN,
        &[
            "token", "create", "--name", "bot", "--role", "ingest", "--role", "auditor",
        ],
    );
    assert_eq!(output.code, 0, "{}", output.stderr);
    let token = output.stdout.trim().to_string();
    assert!(token.starts_with("hf_"));

    let output = server.cli(&token, &["audit", "verify"]);
    assert_eq!(output.code, 0, "{}", output.stderr);
    assert!(
        output.stdout.contains("audit log intact"),
        "{}",
        output.stdout
    );

    let output = server.cli(ADMIN_TOKEN, &["token", "list"]);
    assert!(
        output.stdout.contains("bot") && output.stdout.contains("ingest,auditor"),
        "{}",
        output.stdout
    );
    let output = server.cli(
        ADMIN_TOKEN,
        &["--json", "audit", "query", "--action", "CreateToken"],
    );
    let page: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    assert_eq!(page["entries"][0]["target"], "bot");
    assert_eq!(page["entries"][0]["parameters"]["roles"][0], "ingest");

    let output = server.cli(ADMIN_TOKEN, &["token", "revoke", "bot"]);
    assert_eq!(output.code, 0, "{}", output.stderr);
    let output = server.cli(&token, &["audit", "verify"]);
    assert_eq!(output.code, 1);
    assert!(
        output.stderr.contains("UNAUTHENTICATED"),
        "{}",
        output.stderr
    );

    let output = server.cli(
        ADMIN_TOKEN,
        &["token", "create", "--name", "x", "--role", "superuser"],
    );
    assert_eq!(output.code, 2, "clap usage error");
}

#[test]
fn token_hash_prints_the_sha256_for_the_config_file() {
    use std::io::Write;
    let mut child = std::process::Command::new(CLI_BIN)
        .args(["token", "hash"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hf_secret\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().trim(),
        sha256_hex("hf_secret")
    );
}

#[test]
fn no_token_anywhere_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_cli(&["list", "--mailbox", "a@b.c"], &[], Some(dir.path()));
    assert_eq!(output.code, 1);
    assert!(
        output.stderr.contains("no token given"),
        "{}",
        output.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_with_the_wrong_role_stops_at_once() {
    let server = TestServer::start().await;
    let lines: Vec<String> = (0..5000)
        .map(|n| line("mo@contoso.com", &format!("k{n}"), "2018-03-01T10:00:00Z"))
        .collect();
    let file = write_jsonl(server.dir.path(), &lines);
    let output = server.cli(AUDITOR_TOKEN, &["ingest", "--file", file.to_str().unwrap()]);
    assert_eq!(output.code, 1, "{}{}", output.stdout, output.stderr);
    assert!(
        output.stderr.contains("the server refused the ingest"),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("PERMISSION_DENIED"),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.lines().count() < 10,
        "one clear error, not one per line"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn case_and_search_commands() {
    let server = TestServer::start().await;
    let lines = vec![line("ria@contoso.com", "a", "2018-03-01T10:00:00Z")];
    let file = write_jsonl(server.dir.path(), &lines);
    let output = server.cli(INGEST_TOKEN, &["ingest", "--file", file.to_str().unwrap()]);
    assert_eq!(output.code, 0, "{}", output.stderr);

    let output = server.cli(
        EDISCOVERY_TOKEN,
        &[
            "--json",
            "case",
            "create",
            "--name",
            "Review",
            "--custodian",
            "ria@contoso.com",
        ],
    );
    assert_eq!(output.code, 0, "{}", output.stderr);
    let case: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    let case_id = case["id"].as_str().unwrap().to_string();
    assert_eq!(case["members"][0], "reviewer");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let output = server.cli(
            EDISCOVERY_TOKEN,
            &["--json", "search", "--case", &case_id, "hello"],
        );
        assert_eq!(output.code, 0, "{}", output.stderr);
        let page: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
        if page["total"] == 1 {
            assert_eq!(page["hits"][0]["location"], "active");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not searchable");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = server.cli(EDISCOVERY_TOKEN, &["search", "--case", &case_id, "hello"]);
    assert!(
        output.stdout.contains("1 matching interactions"),
        "{}",
        output.stdout
    );
    assert!(output.stdout.contains("[hello]"), "{}", output.stdout);
    let output = server.cli(
        EDISCOVERY_TOKEN,
        &["search", "--case", &case_id, "hello AND"],
    );
    assert_eq!(output.code, 1);
    assert!(
        output.stderr.contains("INVALID_ARGUMENT") && output.stderr.contains("position 9"),
        "{}",
        output.stderr
    );
    let output = server.cli(EDISCOVERY_TOKEN, &["case", "close", &case_id]);
    assert_eq!(output.code, 0, "{}", output.stderr);
    assert!(output.stdout.contains("closed"), "{}", output.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_hold_and_explain_commands() {
    let server = TestServer::start().await;
    let lines = vec![line("sam@contoso.com", "a", "2018-03-01T10:00:00Z")];
    let file = write_jsonl(server.dir.path(), &lines);
    server.cli(INGEST_TOKEN, &["ingest", "--file", file.to_str().unwrap()]);
    let output = server.cli(
        INGEST_TOKEN,
        &["--json", "list", "--mailbox", "sam@contoso.com"],
    );
    let page: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    let id = page["interactions"][0]["id"].as_str().unwrap().to_string();

    let output = server.cli(
        RETENTION_ADMIN_TOKEN,
        &[
            "--json",
            "policy",
            "create",
            "--name",
            "keep 7y",
            "--include",
            "sam@contoso.com",
            "--action",
            "retain-then-delete",
            "--days",
            "2555",
        ],
    );
    assert_eq!(output.code, 0, "{}", output.stderr);
    let policy: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    assert_eq!(policy["action"], "retain_then_delete");
    let policy_id = policy["id"].as_str().unwrap().to_string();
    let output = server.cli(RETENTION_ADMIN_TOKEN, &["policy", "lock", &policy_id]);
    assert_eq!(output.code, 0, "{}", output.stderr);
    let output = server.cli(RETENTION_ADMIN_TOKEN, &["policy", "delete", &policy_id]);
    assert_eq!(output.code, 1);
    assert!(
        output.stderr.contains("FAILED_PRECONDITION"),
        "{}",
        output.stderr
    );
    let output = server.cli(
        RETENTION_ADMIN_TOKEN,
        &[
            "policy",
            "create",
            "--name",
            "bad",
            "--include",
            "x@y.z",
            "--action",
            "delete-only",
            "--forever",
        ],
    );
    assert_eq!(output.code, 1);
    assert!(output.stderr.contains("finite"), "{}", output.stderr);

    let output = server.cli(
        RETENTION_ADMIN_TOKEN,
        &["hold", "place", "--mailbox", "sam@contoso.com"],
    );
    assert_eq!(output.code, 0, "{}", output.stderr);
    assert!(
        output.stdout.contains("litigation") && output.stdout.contains("forever"),
        "{}",
        output.stdout
    );

    let output = server.cli(RETENTION_ADMIN_TOKEN, &["explain", &id]);
    assert_eq!(output.code, 0, "{}", output.stderr);
    assert!(
        output.stdout.contains("retained until: 2025-02-27"),
        "{}",
        output.stdout
    );
    assert!(output.stdout.contains("held by hold"), "{}", output.stdout);
    assert!(
        output.stdout.contains("destroyable now: no"),
        "{}",
        output.stdout
    );
}
