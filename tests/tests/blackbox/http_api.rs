//! The HTTP/JSON API through a real HTTP client against the real server: every endpoint,
//! every answer checked against the server's own OpenAPI document, errors as JSON with the
//! gRPC code's name, and the same results as gRPC.

use crate::common;

use std::time::{Duration, Instant};

use common::web::{HttpAnswer, HttpApi, OpenApi};
use common::*;
use holdfast_client::pb;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

struct Api {
    http: HttpApi,
    openapi: OpenApi,
}

impl Api {
    async fn new(server: &TestServer) -> Api {
        let http = HttpApi::new(server.http_addr());
        let document = http.get("/api/openapi.json", "").await;
        assert_eq!(document.status, 200, "{}", document.text());
        let openapi = OpenApi(document.json());
        assert!(
            openapi.0["openapi"].as_str().unwrap_or("").starts_with('3'),
            "{}",
            openapi.0["openapi"]
        );
        Api { http, openapi }
    }

    /// Sends JSON (or nothing, for GET) and checks the answer against the document.
    async fn call(
        &self,
        method: &str,
        template: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> HttpAnswer {
        let answer = match body {
            Some(body) => self.http.json(method, path, token, body).await,
            None => self.http.send(method, path, token, None, Vec::new()).await,
        };
        self.openapi.check(method, template, &answer);
        answer
    }
}

/// Searches over HTTP until the index has `expected` hits.
async fn search_until(api: &Api, case_id: &str, query: &str, expected: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = api
            .call(
                "POST",
                "/api/v1/cases/{case_id}/search",
                &format!("/api/v1/cases/{case_id}/search"),
                EDISCOVERY_TOKEN,
                Some(json!({ "query": query })),
            )
            .await;
        if answer.status == 200 && answer.json()["total"] == expected {
            return answer.json();
        }
        assert!(
            Instant::now() < deadline,
            "{query:?}: {} {}",
            answer.status,
            answer.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_discovery_endpoint_answers_as_its_openapi_document_says() {
    let server = TestServer::start_with_http().await;
    let api = Api::new(&server).await;
    let ingest = server.client(INGEST_TOKEN).await;
    let mut items = Vec::new();
    for i in 0..5 {
        items.push(teams_item(
            "alice@contoso.com",
            &format!("a-{i}"),
            "quarterly budget",
        ));
    }
    items.push(teams_item("bob@contoso.com", "b-0", "budget for bob"));
    items.push(teams_item("carol@contoso.com", "c-0", "budget for carol"));
    ingest.ingest(items).await.unwrap();

    let me = api
        .call(
            "GET",
            "/api/v1/whoami",
            "/api/v1/whoami",
            EDISCOVERY_TOKEN,
            None,
        )
        .await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["name"], "reviewer");
    assert_eq!(me.json()["roles"], json!(["ediscovery"]));

    // Cases: create, list, read, change.
    let created = api
        .call(
            "POST",
            "/api/v1/cases",
            "/api/v1/cases",
            EDISCOVERY_TOKEN,
            Some(
                json!({ "name": "HTTP review", "custodians": ["Alice@contoso.com"],
                         "members": ["purger"] }),
            ),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let case = created.json();
    let case_id = case["id"].as_str().unwrap().to_string();
    assert_eq!(case["status"], "open");
    assert_eq!(case["custodians"], json!(["alice@contoso.com"]));
    assert_eq!(case["members"], json!(["purger", "reviewer"]));
    let case_path = format!("/api/v1/cases/{case_id}");

    let listed = api
        .call(
            "GET",
            "/api/v1/cases",
            "/api/v1/cases",
            EDISCOVERY_TOKEN,
            None,
        )
        .await;
    assert_eq!(listed.status, 200);
    assert!(listed.json()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == case["id"]));
    // Another reviewer sees no case of which it is not a member, and cannot open it by id.
    let theirs = api
        .call(
            "GET",
            "/api/v1/cases",
            "/api/v1/cases",
            OTHER_REVIEWER_TOKEN,
            None,
        )
        .await;
    assert_eq!(theirs.json()["cases"], json!([]));
    let refused = api
        .call(
            "GET",
            "/api/v1/cases/{case_id}",
            &case_path,
            OTHER_REVIEWER_TOKEN,
            None,
        )
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["code"], "PERMISSION_DENIED");

    let read = api
        .call(
            "GET",
            "/api/v1/cases/{case_id}",
            &case_path,
            EDISCOVERY_TOKEN,
            None,
        )
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["name"], "HTTP review");
    let changed = api
        .call(
            "PATCH",
            "/api/v1/cases/{case_id}",
            &case_path,
            EDISCOVERY_TOKEN,
            Some(json!({ "add_custodians": ["bob@contoso.com"], "description": "spillage" })),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(
        changed.json()["custodians"],
        json!(["alice@contoso.com", "bob@contoso.com"])
    );
    assert_eq!(changed.json()["description"], "spillage");

    // Search: carol is not a custodian, so 6 of the 7 items; the same as over gRPC.
    let page = search_until(&api, &case_id, "budget", 6).await;
    assert_eq!(page["counts_by_mailbox"]["alice@contoso.com"], 5);
    assert_eq!(page["counts_by_mailbox"]["bob@contoso.com"], 1);
    let hit = &page["hits"][0];
    assert_eq!(hit["location"], "active");
    let snippet = &hit["snippets"][0];
    let start = snippet["highlights"][0]["start"].as_u64().unwrap() as usize;
    let end = snippet["highlights"][0]["end"].as_u64().unwrap() as usize;
    assert_eq!(
        &snippet["text"].as_str().unwrap().as_bytes()[start..end],
        b"budget"
    );
    let reviewer = server.client(EDISCOVERY_TOKEN).await;
    let grpc = reviewer
        .search(pb::SearchRequest {
            case_id: case_id.clone(),
            query: "budget".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(grpc.total, 6);

    // Paging: two hits a page, following next_page_token to the end, every id once.
    let search_path = format!("{case_path}/search");
    let mut seen = std::collections::BTreeSet::new();
    let mut token = String::new();
    for _ in 0..10 {
        let answer = api
            .call(
                "POST",
                "/api/v1/cases/{case_id}/search",
                &search_path,
                EDISCOVERY_TOKEN,
                Some(json!({ "query": "budget", "sort": "newest", "page_size": 2,
                             "page_token": token })),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let page = answer.json();
        for hit in page["hits"].as_array().unwrap() {
            assert!(seen.insert(hit["id"].as_str().unwrap().to_string()));
        }
        token = page["next_page_token"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 6);

    // Export: NDJSON, every item then the trailer, whose digest covers the items sent.
    let export = api
        .call(
            "POST",
            "/api/v1/cases/{case_id}/export",
            &format!("{case_path}/export"),
            EDISCOVERY_TOKEN,
            Some(json!({ "query": "budget" })),
        )
        .await;
    assert_eq!(export.status, 200, "{}", export.text());
    assert_eq!(export.headers["x-holdfast-export-total"], "6");
    let lines: Vec<Value> = export
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 7, "{}", export.text());
    let mut digest = Sha256::new();
    for line in &lines[..6] {
        let item = &line["interaction"];
        assert!(item["content"]["prompt"]
            .as_str()
            .unwrap()
            .contains("budget"));
        digest.update(item["content_sha256"].as_str().unwrap().as_bytes());
        digest.update(b"\n");
    }
    assert_eq!(lines[6]["trailer"]["count"], 6);
    assert_eq!(
        lines[6]["trailer"]["digest"],
        hex::encode(digest.finalize())
    );

    // Case holds: place (with the items it holds), list, and the case cannot close.
    let holds_path = format!("{case_path}/holds");
    let hold = api
        .call(
            "POST",
            "/api/v1/cases/{case_id}/holds",
            &holds_path,
            EDISCOVERY_TOKEN,
            Some(json!({ "name": "budget hold", "query": "budget",
                         "created_from": "2025-01-01T00:00:00Z" })),
        )
        .await;
    assert_eq!(hold.status, 201, "{}", hold.text());
    let hold = hold.json();
    assert_eq!(hold["kind"], "case");
    assert_eq!(hold["items_held"], 6);
    assert_eq!(hold["created_from"], "2025-01-01T00:00:00Z");
    let listed = api
        .call(
            "GET",
            "/api/v1/cases/{case_id}/holds",
            &holds_path,
            EDISCOVERY_TOKEN,
            None,
        )
        .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json()["holds"][0]["id"], hold["id"]);
    let close_path = format!("{case_path}/close");
    let refused = api
        .call(
            "POST",
            "/api/v1/cases/{case_id}/close",
            &close_path,
            EDISCOVERY_TOKEN,
            None,
        )
        .await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["code"], "FAILED_PRECONDITION");

    // Purge (dry run) by a member holding the purge role.
    let purge = api
        .call(
            "POST",
            "/api/v1/cases/{case_id}/purge",
            &format!("{case_path}/purge"),
            PURGE_TOKEN,
            Some(json!({ "query": "budget", "dry_run": true })),
        )
        .await;
    assert_eq!(purge.status, 200, "{}", purge.text());
    assert_eq!(purge.json()["dry_run"], true);
    assert_eq!(purge.json()["ids"].as_array().unwrap().len(), 6);

    // Release the hold (a delay hold takes its place), then the case closes.
    let release = api
        .call(
            "POST",
            "/api/v1/cases/{case_id}/holds/{hold_id}/release",
            &format!("{holds_path}/{}/release", hold["id"].as_str().unwrap()),
            EDISCOVERY_TOKEN,
            None,
        )
        .await;
    assert_eq!(release.status, 200, "{}", release.text());
    assert!(release.json()["released_at"].is_string());
    let released = api
        .call(
            "GET",
            "/api/v1/cases/{case_id}/holds",
            &format!("{holds_path}?include_released=true"),
            EDISCOVERY_TOKEN,
            None,
        )
        .await;
    assert_eq!(released.json()["holds"].as_array().unwrap().len(), 1);
    let closed = api
        .call(
            "POST",
            "/api/v1/cases/{case_id}/close",
            &close_path,
            EDISCOVERY_TOKEN,
            None,
        )
        .await;
    assert_eq!(closed.status, 200, "{}", closed.text());
    assert_eq!(closed.json()["status"], "closed");
    assert!(closed.json()["closed_at"].is_string());

    // What was done over HTTP is in the audit log like any other call.
    let auditor = server.client(AUDITOR_TOKEN).await;
    let entries = auditor
        .query_audit_log(pb::QueryAuditLogRequest {
            actor: "reviewer".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = entries.entries.iter().map(|e| e.action.as_str()).collect();
    for action in [
        "CreateCase",
        "UpdateCase",
        "Search",
        "Export",
        "PlaceCaseHold",
        "ReleaseCaseHold",
        "CloseCase",
    ] {
        assert!(
            actions.contains(&action),
            "{action} not audited: {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_json_errors_with_the_grpc_code_and_field() {
    let server = TestServer::start_with_http().await;
    let api = Api::new(&server).await;
    let created = api
        .call(
            "POST",
            "/api/v1/cases",
            "/api/v1/cases",
            EDISCOVERY_TOKEN,
            Some(json!({ "name": "errors", "custodians": ["alice@contoso.com"] })),
        )
        .await;
    let case_id = created.json()["id"].as_str().unwrap().to_string();
    let search_path = format!("/api/v1/cases/{case_id}/search");
    let search = "/api/v1/cases/{case_id}/search";

    // No token, and an unknown one: 401 with a Bearer challenge.
    for token in ["", "hf_not_a_token"] {
        let answer = api
            .call("GET", "/api/v1/cases", "/api/v1/cases", token, None)
            .await;
        assert_eq!(answer.status, 401, "{}", answer.text());
        assert_eq!(answer.json()["code"], "UNAUTHENTICATED");
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
    }
    // A token without the role: 403, and the refusal is audited.
    let answer = api
        .call("GET", "/api/v1/cases", "/api/v1/cases", INGEST_TOKEN, None)
        .await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["code"], "PERMISSION_DENIED");
    let auditor = server.client(AUDITOR_TOKEN).await;
    let refusals = auditor
        .query_audit_log(pb::QueryAuditLogRequest {
            actor: "backend".into(),
            action: "ListCases".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        refusals
            .entries
            .iter()
            .any(|e| e.result.starts_with("denied")),
        "{:?}",
        refusals.entries
    );

    // A bad query names the field.
    let answer = api
        .call(
            "POST",
            search,
            &search_path,
            EDISCOVERY_TOKEN,
            Some(json!({ "query": "budget AND (" })),
        )
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["code"], "INVALID_ARGUMENT");
    assert_eq!(answer.json()["field"], "query");
    // So do a bad page size, an unknown sort, and a forged page token.
    for (body, field) in [
        (json!({ "query": "x", "page_size": 5000 }), "page_size"),
        (json!({ "query": "x", "sort": "sideways" }), "sort"),
        (
            json!({ "query": "x", "page_token": "deadbeef" }),
            "page_token",
        ),
    ] {
        let answer = api
            .call("POST", search, &search_path, EDISCOVERY_TOKEN, Some(body))
            .await;
        assert_eq!(answer.status, 400, "{}", answer.text());
        assert_eq!(answer.json()["field"], field, "{}", answer.text());
    }
    // Bodies that are not the JSON the endpoint takes.
    let answer = api
        .http
        .send(
            "POST",
            &search_path,
            EDISCOVERY_TOKEN,
            Some("application/json"),
            b"{not json".to_vec(),
        )
        .await;
    api.openapi.check("POST", search, &answer);
    assert_eq!(
        (answer.status, answer.json()["field"].clone()),
        (400, json!("body"))
    );
    let answer = api
        .call(
            "POST",
            search,
            &search_path,
            EDISCOVERY_TOKEN,
            Some(json!({ "qurey": "x" })),
        )
        .await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.json()["message"].as_str().unwrap().contains("qurey"),
        "{}",
        answer.text()
    );
    let answer = api
        .http
        .send(
            "POST",
            &search_path,
            EDISCOVERY_TOKEN,
            Some("text/plain"),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    // Past the size limit: 413, nothing read beyond it (over HTTP/2, where an answer may come
    // before the body is sent).
    let h2 = HttpApi::new_h2(server.http_addr());
    let huge = vec![b' '; 20 << 20];
    let answer = h2
        .send(
            "POST",
            &search_path,
            EDISCOVERY_TOKEN,
            Some("application/json"),
            huge.clone(),
        )
        .await;
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert_eq!(answer.json()["code"], "OUT_OF_RANGE");
    // Without a token the same body is refused from the headers: 401, not 413.
    let answer = h2
        .send("POST", &search_path, "", Some("application/json"), huge)
        .await;
    assert_eq!(answer.status, 401);

    // Ids: malformed is INVALID_ARGUMENT naming it, unknown is NOT_FOUND.
    let answer = api
        .call(
            "GET",
            "/api/v1/cases/{case_id}",
            "/api/v1/cases/nope",
            EDISCOVERY_TOKEN,
            None,
        )
        .await;
    assert_eq!(
        (answer.status, answer.json()["field"].clone()),
        (400, json!("case_id"))
    );
    let answer = api
        .call(
            "GET",
            "/api/v1/cases/{case_id}",
            "/api/v1/cases/01ARZ3NDEKTSV4RRFFQ69G5FAV",
            EDISCOVERY_TOKEN,
            None,
        )
        .await;
    assert_eq!(
        (answer.status, answer.json()["code"].clone()),
        (404, json!("NOT_FOUND"))
    );
    // A duplicate case name: 409 ALREADY_EXISTS.
    let answer = api
        .call(
            "POST",
            "/api/v1/cases",
            "/api/v1/cases",
            EDISCOVERY_TOKEN,
            Some(json!({ "name": "Errors" })),
        )
        .await;
    assert_eq!(
        (answer.status, answer.json()["code"].clone()),
        (409, json!("ALREADY_EXISTS"))
    );
    // A hold query naming a location is refused before anything is saved.
    let answer = api
        .call(
            "POST",
            "/api/v1/cases/{case_id}/holds",
            &format!("/api/v1/cases/{case_id}/holds"),
            EDISCOVERY_TOKEN,
            Some(json!({ "name": "h", "query": "location:active" })),
        )
        .await;
    assert_eq!(
        (answer.status, answer.json()["field"].clone()),
        (400, json!("query"))
    );
    // An unknown endpoint is a JSON 404 too.
    let answer = api.http.get("/api/v1/nothing-here", EDISCOVERY_TOKEN).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["code"], "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_interaction_audit_and_token_endpoints_answer_as_documented() {
    let server = TestServer::start_with_http().await;
    let api = Api::new(&server).await;
    let ingest = server.client(INGEST_TOKEN).await;
    let stored = ingest
        .ingest(vec![
            teams_item("dana@contoso.com", "d-0", "first"),
            teams_item("dana@contoso.com", "d-1", "second"),
        ])
        .await
        .unwrap();
    let id = stored.results[0].id.clone();

    // Policies: create, read, list, change, preview, lock; a locked policy cannot shrink.
    let policy = api
        .call(
            "POST",
            "/api/v1/policies",
            "/api/v1/policies",
            RETENTION_ADMIN_TOKEN,
            Some(json!({ "name": "Keep a year", "org_wide": true,
                         "action": "retain_only", "days": 365 })),
        )
        .await;
    assert_eq!(policy.status, 201, "{}", policy.text());
    let policy_id = policy.json()["id"].as_str().unwrap().to_string();
    let policy_path = format!("/api/v1/policies/{policy_id}");
    let one = "/api/v1/policies/{policy_id}";
    let read = api
        .call("GET", one, &policy_path, RETENTION_ADMIN_TOKEN, None)
        .await;
    assert_eq!(read.json()["action"], "retain_only");
    assert_eq!(read.json()["days"], 365);
    let listed = api
        .call(
            "GET",
            "/api/v1/policies",
            "/api/v1/policies",
            AUDITOR_TOKEN,
            None,
        )
        .await;
    assert_eq!(listed.json()["policies"].as_array().unwrap().len(), 1);
    let longer = json!({ "name": "Keep two years", "org_wide": true,
                         "action": "retain_only", "days": 730 });
    let preview = api
        .call(
            "POST",
            "/api/v1/policies/preview",
            "/api/v1/policies/preview",
            RETENTION_ADMIN_TOKEN,
            Some(json!({ "policy_id": policy_id, "spec": longer })),
        )
        .await;
    assert_eq!(preview.status, 200, "{}", preview.text());
    assert_eq!(preview.json()["items_examined"], 2);
    let changed = api
        .call(
            "PUT",
            one,
            &policy_path,
            RETENTION_ADMIN_TOKEN,
            Some(longer),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(changed.json()["days"], 730);
    let locked = api
        .call(
            "POST",
            "/api/v1/policies/{policy_id}/lock",
            &format!("{policy_path}/lock"),
            RETENTION_ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(locked.json()["locked"], true);
    let shorter = api
        .call(
            "PUT",
            one,
            &policy_path,
            RETENTION_ADMIN_TOKEN,
            Some(json!({ "name": "Keep two years", "org_wide": true,
                         "action": "retain_only", "days": 30 })),
        )
        .await;
    assert_eq!(shorter.status, 400, "{}", shorter.text());
    assert_eq!(shorter.json()["code"], "FAILED_PRECONDITION");
    let deleted = api
        .call("DELETE", one, &policy_path, RETENTION_ADMIN_TOKEN, None)
        .await;
    assert_eq!(deleted.json()["code"], "FAILED_PRECONDITION");
    let bad_action = api
        .call(
            "POST",
            "/api/v1/policies",
            "/api/v1/policies",
            RETENTION_ADMIN_TOKEN,
            Some(json!({ "name": "x", "action": "shred" })),
        )
        .await;
    assert_eq!(bad_action.json()["field"], "action");

    // Litigation hold: place, list, release (a delay hold follows), clear the delay hold.
    let hold = api
        .call(
            "POST",
            "/api/v1/holds",
            "/api/v1/holds",
            RETENTION_ADMIN_TOKEN,
            Some(json!({ "mailbox_id": "dana@contoso.com" })),
        )
        .await;
    assert_eq!(hold.status, 201, "{}", hold.text());
    assert_eq!(hold.json()["kind"], "litigation");
    let hold_id = hold.json()["id"].as_str().unwrap().to_string();
    let status = api
        .call(
            "GET",
            "/api/v1/mailboxes/{mailbox_id}/status",
            "/api/v1/mailboxes/dana@contoso.com/status",
            RETENTION_ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(status.status, 200, "{}", status.text());
    assert_eq!(status.json()["active_items"], 2);
    assert_eq!(status.json()["holds"][0]["id"], hold_id.as_str());
    assert_eq!(status.json()["policies"][0]["id"], policy_id.as_str());
    let explained = api
        .call(
            "GET",
            "/api/v1/interactions/{id}/explain",
            &format!("/api/v1/interactions/{id}/explain"),
            RETENTION_ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(explained.status, 200, "{}", explained.text());
    // Metadata and reasons only: an explanation never carries the item's content.
    assert!(!explained.text().contains("first"), "{}", explained.text());
    let reasons = explained.json()["reasons"].to_string();
    assert!(reasons.contains(&hold_id), "{reasons}");
    assert!(reasons.contains(&policy_id), "{reasons}");
    let released = api
        .call(
            "POST",
            "/api/v1/holds/{hold_id}/release",
            &format!("/api/v1/holds/{hold_id}/release"),
            RETENTION_ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(released.status, 200, "{}", released.text());
    let holds = api
        .call(
            "GET",
            "/api/v1/holds",
            "/api/v1/holds?mailbox_id=dana@contoso.com",
            RETENTION_ADMIN_TOKEN,
            None,
        )
        .await;
    let delay = holds.json()["holds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["kind"] == "delay")
        .cloned()
        .expect("a delay hold after the release");
    let cleared = api
        .call(
            "POST",
            "/api/v1/holds/{hold_id}/clear",
            &format!("/api/v1/holds/{}/clear", delay["id"].as_str().unwrap()),
            RETENTION_ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(cleared.status, 200, "{}", cleared.text());

    // The sweeper: a pass now, its status; dispositions (none destroyed).
    let swept = api
        .call(
            "POST",
            "/api/v1/sweeper/run",
            "/api/v1/sweeper/run",
            RETENTION_ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(swept.status, 200, "{}", swept.text());
    assert_eq!(swept.json()["destroyed"], 0);
    let sweeper = api
        .call(
            "GET",
            "/api/v1/sweeper",
            "/api/v1/sweeper",
            AUDITOR_TOKEN,
            None,
        )
        .await;
    assert_eq!(sweeper.status, 200, "{}", sweeper.text());
    let dispositions = api
        .call(
            "GET",
            "/api/v1/dispositions",
            "/api/v1/dispositions",
            AUDITOR_TOKEN,
            None,
        )
        .await;
    assert_eq!(dispositions.json()["dispositions"], json!([]));

    // A user's interactions: read, list, delete history (ingest role).
    let item = api
        .call(
            "GET",
            "/api/v1/interactions/{id}",
            &format!("/api/v1/interactions/{id}"),
            INGEST_TOKEN,
            None,
        )
        .await;
    assert_eq!(item.status, 200, "{}", item.text());
    assert_eq!(item.json()["content"]["prompt"], "first");
    let list_path = "/api/v1/mailboxes/{mailbox_id}/interactions";
    let page = api
        .call(
            "GET",
            list_path,
            "/api/v1/mailboxes/dana@contoso.com/interactions?page_size=1",
            INGEST_TOKEN,
            None,
        )
        .await;
    assert_eq!(page.json()["interactions"].as_array().unwrap().len(), 1);
    let token = page.json()["next_page_token"].as_str().unwrap().to_string();
    assert!(!token.is_empty());
    let rest = api
        .call(
            "GET",
            list_path,
            &format!(
                "/api/v1/mailboxes/dana@contoso.com/interactions?page_size=1&page_token={token}"
            ),
            INGEST_TOKEN,
            None,
        )
        .await;
    assert_eq!(rest.status, 200, "{}", rest.text());
    assert_eq!(rest.json()["interactions"].as_array().unwrap().len(), 1);
    let deleted = api
        .call(
            "POST",
            "/api/v1/mailboxes/{mailbox_id}/delete-history",
            "/api/v1/mailboxes/dana@contoso.com/delete-history",
            INGEST_TOKEN,
            Some(json!({})),
        )
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.json()["num_moved"], 2);
    // Gone from the user's view, still readable by an administrator (and audited).
    let gone = api
        .call(
            "GET",
            "/api/v1/interactions/{id}",
            &format!("/api/v1/interactions/{id}"),
            INGEST_TOKEN,
            None,
        )
        .await;
    assert_eq!(gone.status, 404);
    let held = api
        .call(
            "GET",
            "/api/v1/interactions/{id}",
            &format!("/api/v1/interactions/{id}"),
            ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(held.json()["location"], "holds_area");
    assert_eq!(held.json()["move_reason"], "user_deleted");

    // The audit log: filtered, paged, verified.
    let audit_path = "/api/v1/audit";
    let first = api
        .call(
            "GET",
            audit_path,
            "/api/v1/audit?actor=retention-admin&page_size=2",
            AUDITOR_TOKEN,
            None,
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["entries"].as_array().unwrap().len(), 2);
    assert_eq!(first.json()["entries"][0]["action"], "CreatePolicy");
    let next = first.json()["next_page_token"]
        .as_str()
        .unwrap()
        .to_string();
    let second = api
        .call(
            "GET",
            audit_path,
            &format!("/api/v1/audit?actor=retention-admin&page_size=2&page_token={next}"),
            AUDITOR_TOKEN,
            None,
        )
        .await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert!(
        second.json()["entries"][0]["sequence"].as_u64()
            > first.json()["entries"][1]["sequence"].as_u64()
    );
    let verified = api
        .call(
            "POST",
            "/api/v1/audit/verify",
            "/api/v1/audit/verify",
            AUDITOR_TOKEN,
            None,
        )
        .await;
    assert_eq!(verified.json()["intact"], true);
    // A page token of one filter does not work with another.
    let forged = api
        .call(
            "GET",
            audit_path,
            &format!("/api/v1/audit?actor=someone-else&page_token={next}"),
            AUDITOR_TOKEN,
            None,
        )
        .await;
    assert_eq!(forged.json()["field"], "page_token");

    // Tokens: create (shown once), use, list, revoke; a revoked token is refused at once.
    let created = api
        .call(
            "POST",
            "/api/v1/tokens",
            "/api/v1/tokens",
            ADMIN_TOKEN,
            Some(json!({ "name": "http-made", "roles": ["auditor"] })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let secret = created.json()["token"].as_str().unwrap().to_string();
    let me = api
        .call("GET", "/api/v1/whoami", "/api/v1/whoami", &secret, None)
        .await;
    assert_eq!(me.json()["name"], "http-made");
    let tokens = api
        .call("GET", "/api/v1/tokens", "/api/v1/tokens", ADMIN_TOKEN, None)
        .await;
    assert!(!tokens.text().contains(&secret));
    assert!(tokens.json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "http-made"));
    let unknown_role = api
        .call(
            "POST",
            "/api/v1/tokens",
            "/api/v1/tokens",
            ADMIN_TOKEN,
            Some(json!({ "name": "x", "roles": ["superuser"] })),
        )
        .await;
    assert_eq!(unknown_role.json()["field"], "roles");
    let revoked = api
        .call(
            "POST",
            "/api/v1/tokens/{name}/revoke",
            "/api/v1/tokens/http-made/revoke",
            ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let refused = api
        .call("GET", "/api/v1/whoami", "/api/v1/whoami", &secret, None)
        .await;
    assert_eq!(refused.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_over_http_stores_each_item_once_and_answers_per_item() {
    let server = TestServer::start_with_http().await;
    let api = Api::new(&server).await;
    let path = "/api/v1/interactions";
    let item = |key: &str, prompt: &str| {
        json!({ "client_key": key, "mailbox_id": "Erin@Contoso.com", "thread_id": "t-1",
                "app": "Teams", "created_at": "2026-11-30T09:30:00.123Z",
                "prompt": prompt, "response": "the answer",
                "model": { "provider": "openai", "name": "gpt-4o" },
                "plugins": [{ "id": "p1", "name": "Calendar" }],
                "accessed_resources": [{ "name": "plan.docx", "type": "file", "action": "read" }],
                "safety": { "content_filtered": true },
                "attributes": { "b": "2", "a": "1" } })
    };
    let batch = json!({ "sequence": 7, "interactions": [
        item("h-0", "what is on my calendar"),
        { "client_key": "h-1", "mailbox_id": "erin@contoso.com", "app": "Teams",
          "prompt": "no time" },
        { "client_key": "h-2", "mailbox_id": "erin@contoso.com", "app": "Teams",
          "created_at": "yesterday", "prompt": "bad time" },
        { "client_key": "", "mailbox_id": "erin@contoso.com", "app": "Teams",
          "created_at": "2026-11-30T09:30:00Z" },
    ]});
    let answer = api
        .call("POST", path, path, INGEST_TOKEN, Some(batch.clone()))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let results = answer.json()["results"].clone();
    assert_eq!(answer.json()["sequence"], 7);
    assert_eq!(results[0]["status"], "created", "{results}");
    for (index, field) in [(1, "created_at"), (2, "created_at"), (3, "client_key")] {
        assert_eq!(results[index]["status"], "rejected", "{results}");
        assert_eq!(results[index]["code"], "INVALID_ARGUMENT");
        assert_eq!(results[index]["field"], field, "{results}");
        assert!(results[index]["id"].is_null());
    }
    let id = results[0]["id"].as_str().unwrap().to_string();

    // What gRPC reads back is what was sent, under the same digest rules.
    let stored = server.client(INGEST_TOKEN).await.get(&id).await.unwrap();
    assert_eq!(stored.mailbox_id, "erin@contoso.com");
    assert_eq!(stored.prompt, "what is on my calendar");
    assert_eq!(stored.created_at.as_ref().unwrap().nanos, 123_000_000);
    assert_eq!(stored.plugins[0].name, "Calendar");
    assert_eq!(stored.accessed_resources[0].r#type, "file");
    assert!(stored.safety.as_ref().unwrap().content_filtered);
    assert_eq!(stored.attributes.len(), 2);

    // A retry stores nothing twice; the same key with other content is a conflict.
    let again = api
        .call("POST", path, path, INGEST_TOKEN, Some(batch))
        .await;
    assert_eq!(again.json()["results"][0]["status"], "duplicate");
    assert_eq!(again.json()["results"][0]["id"], id.as_str());
    let changed = json!({ "interactions": [item("h-0", "something else")] });
    let conflict = api
        .call("POST", path, path, INGEST_TOKEN, Some(changed))
        .await;
    let result = &conflict.json()["results"][0];
    assert_eq!(result["status"], "rejected");
    assert_eq!(result["code"], "ALREADY_EXISTS");
    assert_eq!(result["id"], id.as_str());

    // Only the ingest role ingests, and the refusal comes before any look at the body.
    let refused = api
        .call(
            "POST",
            path,
            path,
            EDISCOVERY_TOKEN,
            Some(json!({ "nonsense": 1 })),
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(refused.json()["code"], "PERMISSION_DENIED");

    // A misspelt field is refused, not dropped; serde's message names the field but never
    // repeats the caller's text.
    let misspelt = json!({ "interactions": [{ "client_key": "h-9", "promt": "x" }] });
    let answer = api
        .call("POST", path, path, INGEST_TOKEN, Some(misspelt))
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["field"], "body");
    assert!(answer.text().contains("promt"), "{}", answer.text());
    let wrong_type = json!({ "interactions": [{ "client_key": "h-9",
                              "plugins": "a secret about the merger" }] });
    let answer = api
        .call("POST", path, path, INGEST_TOKEN, Some(wrong_type))
        .await;
    assert_eq!(answer.status, 400);
    assert!(!answer.text().contains("merger"), "{}", answer.text());
    let leap = json!({ "interactions": [{ "client_key": "h-leap", "mailbox_id": "erin@contoso.com",
                        "app": "Teams", "created_at": "2016-12-31T23:59:60Z" }] });
    let answer = api.call("POST", path, path, INGEST_TOKEN, Some(leap)).await;
    assert_eq!(answer.json()["results"][0]["field"], "created_at");

    // Ingest bodies may be as large as a gRPC message (16 MiB), past the 1 MiB of the others.
    let big = "word ".repeat(180_000);
    let large = json!({ "interactions": [item("h-big-1", &big), item("h-big-2", &big)] });
    let answer = api
        .call("POST", path, path, INGEST_TOKEN, Some(large))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["results"][1]["status"], "created");
    let huge = json!({ "interactions": [item("h-huge", &"word ".repeat(3_500_000))] });
    let answer = api.call("POST", path, path, INGEST_TOKEN, Some(huge)).await;
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert!(
        answer.text().contains("16777216 bytes"),
        "{}",
        answer.text()
    );
    let too_many: Vec<Value> = (0..1001).map(|n| item(&format!("m-{n}"), "x")).collect();
    let answer = api
        .call(
            "POST",
            path,
            path,
            INGEST_TOKEN,
            Some(json!({ "interactions": too_many })),
        )
        .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.json()["field"], "interactions");
}
