//! The web console: in a real headless Chromium (Debian's chromium and chromium-driver)
//! against the real server, and as plain HTTP forms (no JavaScript): sign-in, cases, search
//! with live query errors, an item, sessions, CSRF, access between cases, accessibility.

use crate::common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::web::{HttpAnswer, HttpApi};
use common::*;
use holdfast_client::pb;
use serde_json::json;
use sha2::{Digest, Sha256};

/// axe-core's source (scripts/ensure-build-deps.sh fetches it), or `None` to skip the check.
fn axe_source() -> String {
    let path = std::env::var("HOLDFAST_AXE_JS").unwrap_or_else(|_| {
        format!(
            "{}/.cache/holdfast-assets/axe.min.js",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!("axe-core is needed at {path} ({error}); scripts/ensure-build-deps.sh fetches it")
    })
}

fn set_cookie(answer: &HttpAnswer) -> String {
    answer
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The `holdfast_session=...` pair of a Set-Cookie header.
fn session_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().to_string()
}

fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a CSRF field") + marker.len();
    page[start..start + 64].to_string()
}

/// Signs in with a plain form POST; answers the session cookie pair.
async fn sign_in(http: &HttpApi, token: &str) -> (HttpAnswer, String) {
    let body = format!("token={token}&next=%2Fcases");
    let answer = http
        .send_with(
            "POST",
            "/signin",
            &[("content-type", "application/x-www-form-urlencoded")],
            body.into_bytes(),
        )
        .await;
    let pair = session_pair(&set_cookie(&answer));
    (answer, pair)
}

async fn form_post(http: &HttpApi, path: &str, cookie: &str, body: &str) -> HttpAnswer {
    http.send_with(
        "POST",
        path,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", cookie),
        ],
        body.as_bytes().to_vec(),
    )
    .await
}

async fn page(http: &HttpApi, path: &str, cookie: &str) -> HttpAnswer {
    http.send_with("GET", path, &[("cookie", cookie)], Vec::new())
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_csrf_and_case_access_hold_without_javascript() {
    let server = TestServer::start_with_http().await;
    let http = HttpApi::new(server.http_addr());

    // A wrong token: 401 and the form again, no cookie.
    let (refused, pair) = sign_in(&http, "hf_wrong").await;
    assert_eq!(refused.status, 401);
    assert!(refused.text().contains("not valid"));
    assert!(pair.is_empty() || !pair.contains("holdfast_session=") || pair.ends_with('='));

    // Sign-in: a session cookie, HttpOnly and SameSite=Strict, and a new id every time.
    let (answer, cookie) = sign_in(&http, EDISCOVERY_TOKEN).await;
    assert_eq!(answer.status, 303, "{}", answer.text());
    assert_eq!(answer.headers["location"], "/cases");
    let flags = set_cookie(&answer);
    assert!(flags.contains("HttpOnly"), "{flags}");
    assert!(flags.contains("SameSite=Strict"), "{flags}");
    assert!(flags.contains("Path=/"), "{flags}");
    let (_, again) = sign_in(&http, EDISCOVERY_TOKEN).await;
    assert_ne!(cookie, again, "each sign-in gets a new session id");

    // Pages carry the security headers.
    let cases = page(&http, "/cases", &cookie).await;
    assert_eq!(cases.status, 200);
    let policy = cases.headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert_eq!(cases.headers["x-frame-options"], "DENY");
    let csrf = csrf_of(&cases.text());

    // A change without the CSRF token, or with another one, or from another site: 403.
    let create = "name=Console+case&custodians=alice%40contoso.com";
    let missing = form_post(&http, "/cases", &cookie, create).await;
    assert_eq!(missing.status, 403, "{}", missing.text());
    let wrong = form_post(
        &http,
        "/cases",
        &cookie,
        &format!("{create}&csrf={}", "0".repeat(64)),
    )
    .await;
    assert_eq!(wrong.status, 403);
    let cross = http
        .send_with(
            "POST",
            "/cases",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &cookie),
                ("origin", "https://evil.example"),
            ],
            format!("{create}&csrf={csrf}").into_bytes(),
        )
        .await;
    assert_eq!(cross.status, 403);

    // With it: the case is created (post/redirect/get) and shown.
    let created = form_post(&http, "/cases", &cookie, &format!("{create}&csrf={csrf}")).await;
    assert_eq!(created.status, 303, "{}", created.text());
    let case_path = created.headers["location"].to_str().unwrap().to_string();
    let case_page = page(&http, &case_path, &cookie).await;
    assert_eq!(case_page.status, 200);
    assert!(case_page.text().contains("Console case"));
    assert!(case_page.text().contains("alice@contoso.com"));

    // Another reviewer cannot open it by its URL.
    let (_, other) = sign_in(&http, OTHER_REVIEWER_TOKEN).await;
    let refused = page(&http, &case_path, &other).await;
    assert_eq!(refused.status, 403);
    assert!(refused.text().contains("not a member"));

    // Signing out ends the session: its cookie no longer opens anything.
    let out = form_post(&http, "/signout", &cookie, &format!("csrf={csrf}")).await;
    assert_eq!(out.status, 303);
    assert!(set_cookie(&out).contains("Max-Age=0"));
    let after = page(&http, "/cases", &cookie).await;
    assert_eq!(after.status, 303);
    assert!(after.headers["location"]
        .to_str()
        .unwrap()
        .starts_with("/signin"));

    // A revoked token ends its sessions at once.
    let admin = server.client(ADMIN_TOKEN).await;
    let minted = admin
        .create_token("console-user", vec![pb::Role::Ediscovery])
        .await
        .unwrap();
    let (_, minted_cookie) = sign_in(&http, &minted.token).await;
    assert_eq!(page(&http, "/cases", &minted_cookie).await.status, 200);
    admin.revoke_token("console-user").await.unwrap();
    assert_eq!(page(&http, "/cases", &minted_cookie).await.status, 303);
}

/// Reloads the search page until it shows `expected` (the index commits asynchronously).
async fn search_until(browser: &Browser, url: &str, expected: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        browser.go(url).await;
        if browser.count("#result-count").await > 0 {
            let text = browser.text("#result-count").await;
            if text.contains(expected) {
                return text;
            }
        }
        assert!(Instant::now() < deadline, "{url} never showed {expected:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reviewer_works_a_case_in_a_real_browser() {
    let server = TestServer::start_with_http().await;
    let base = server.http_addr();
    let ingest = server.client(INGEST_TOKEN).await;
    let mut items: Vec<_> = (0..3)
        .map(|i| {
            teams_item(
                "alice@contoso.com",
                &format!("a-{i}"),
                "the quarterly budget",
            )
        })
        .collect();
    items.push(teams_item("bob@contoso.com", "b-0", "budget for bob"));
    items.push(teams_item("carol@contoso.com", "c-0", "budget for carol"));
    ingest.ingest(items).await.unwrap();
    let axe = axe_source();
    let browser = Browser::start().await;

    browser.go(&format!("{base}/signin")).await;
    browser.check_page(&axe, "sign-in").await;
    browser.sign_in(&base, EDISCOVERY_TOKEN).await;
    browser.wait_for_text("h1", "Cases").await;
    browser.check_page(&axe, "cases").await;

    // Create a case with two custodians.
    browser.type_into("#name", "Budget review").await;
    browser
        .type_into("#custodians", "alice@contoso.com\nbob@contoso.com")
        .await;
    browser.click("form[action='/cases'] button").await;
    browser.wait_for_text("h1", "Budget review").await;
    let case_url = browser.url().await;
    let case_id = case_url.rsplit('/').next().unwrap().to_string();
    browser.check_page(&axe, "case").await;

    // A malformed query: the error appears as you type, and sending it shows the summary and
    // runs nothing.
    browser.go(&format!("{base}/cases/{case_id}/search")).await;
    browser.type_into("#q", "budget AND (").await;
    let live = browser
        .wait_for_text("#q-error", "Error at character")
        .await;
    assert!(live.contains("13") || live.contains("12"), "{live}");
    browser.click("form[role=search] button").await;
    browser
        .wait_for_text(".error-summary", "There is a problem")
        .await;
    assert_eq!(browser.count("table.hits").await, 0);

    // The search: 4 of the 5 items (carol is not a custodian), as many as the export sends.
    let url = format!("{base}/cases/{case_id}/search?q=budget&sort=newest");
    let count = search_until(&browser, &url, "4 items match").await;
    assert!(count.contains("4 items match"), "{count}");
    assert_eq!(browser.count("table.hits tbody tr").await, 4);
    assert!(browser.count("table.hits mark").await >= 4);
    browser.check_page(&axe, "search").await;
    let api = HttpApi::new(base.clone());
    let export = api
        .json(
            "POST",
            &format!("/api/v1/cases/{case_id}/export"),
            EDISCOVERY_TOKEN,
            json!({ "query": "budget" }),
        )
        .await;
    assert_eq!(
        export.text().lines().count(),
        4 + 1,
        "the items and the trailer"
    );

    // The export: started from the case page, written as a BagIt bag while the page shows
    // its progress, then downloaded as a tar whose bag verifies and whose digest is the one
    // the page shows.
    browser.go(&case_url).await;
    browser.type_into("#export-query", "budget").await;
    browser
        .click(&format!("form[action='/cases/{case_id}/export'] button"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = browser.text("#export-status").await;
        if status.contains("Export ready") {
            assert!(status.contains("4 items"), "{status}");
            break;
        }
        assert!(!status.contains("failed"), "{status}");
        assert!(
            Instant::now() < deadline,
            "the export never finished: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        browser.go(&browser.url().await).await;
    }
    browser.check_page(&axe, "export").await;
    let shown_digest = browser.text("#content-digest").await;
    let shown_tar_sha256 = browser.text("#tar-sha256").await;
    let download = browser
        .execute("return document.getElementById('download').getAttribute('href')")
        .await;
    let session = browser
        .cookies()
        .await
        .into_iter()
        .find(|c| c["name"] == "holdfast_session")
        .expect("a session cookie");
    let cookie = format!("holdfast_session={}", session["value"].as_str().unwrap());
    let tar = api
        .send_with(
            "GET",
            download.as_str().unwrap(),
            &[("cookie", cookie.as_str())],
            Vec::new(),
        )
        .await;
    assert_eq!(tar.status, 200, "{}", tar.text());
    assert_eq!(tar.headers["content-type"], "application/x-tar");
    assert_eq!(hex::encode(Sha256::digest(&tar.body)), shown_tar_sha256);
    let unpacked = tempfile::tempdir().unwrap();
    tar::Archive::new(&tar.body[..])
        .unpack(unpacked.path())
        .unwrap();
    let bag_dir = std::fs::read_dir(unpacked.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(holdfast_client::bag::verify(&bag_dir).unwrap(), 4);
    let bag_info = std::fs::read_to_string(bag_dir.join("bag-info.txt")).unwrap();
    assert!(
        bag_info.contains(&format!("Holdfast-Content-Digest: {shown_digest}")),
        "{bag_info}"
    );
    assert!(
        bag_info.contains("Holdfast-Principal: reviewer"),
        "{bag_info}"
    );
    // The bag keeps its private modes inside the tar.
    let mut archive = tar::Archive::new(&tar.body[..]);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let mode = entry.header().mode().unwrap() & 0o777;
        let expected = if entry.header().entry_type().is_dir() {
            0o700
        } else {
            0o600
        };
        assert_eq!(mode, expected, "{:?}", entry.path().unwrap());
    }
    // Only the reviewer who started it sees and downloads it (another reviewer who may open
    // the case gets 404), and the download is audited; a HEAD request is not a download.
    let other = HttpApi::new(base.clone());
    let anonymous = other.get(download.as_str().unwrap(), "").await;
    assert_ne!(anonymous.status, 200);
    server
        .client(EDISCOVERY_TOKEN)
        .await
        .update_case(pb::UpdateCaseRequest {
            case_id: case_id.clone(),
            add_members: vec!["other-reviewer".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, other_cookie) = sign_in(&other, OTHER_REVIEWER_TOKEN).await;
    let case_page = page(&other, &format!("/cases/{case_id}"), &other_cookie).await;
    assert_eq!(case_page.status, 200, "{}", case_page.text());
    let job_page = download
        .as_str()
        .unwrap()
        .trim_end_matches("/bag.tar")
        .to_string();
    for path in [job_page.as_str(), download.as_str().unwrap()] {
        let answer = page(&other, path, &other_cookie).await;
        assert_eq!(answer.status, 404, "{path}: {}", answer.text());
    }
    let head = api
        .send_with(
            "HEAD",
            download.as_str().unwrap(),
            &[("cookie", cookie.as_str())],
            Vec::new(),
        )
        .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.headers["content-length"],
        tar.body.len().to_string().as_str()
    );
    let downloads = server
        .client(AUDITOR_TOKEN)
        .await
        .query_audit_log(pb::QueryAuditLogRequest {
            action: "DownloadExport".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(downloads.entries.len(), 1);

    // A facet narrows to one custodian.
    browser.go(&url).await;
    browser.click(".facets a[href*='mailbox=bob']").await;
    browser
        .wait_for_text("#result-count", "1 items match")
        .await;

    // A hit opens the whole interaction, and the view is audited.
    browser.go(&url).await;
    browser.click("table.hits tbody tr a").await;
    browser.wait_for_text("main", "Prompt").await;
    assert!(browser.text("main").await.contains("budget"));
    browser.check_page(&axe, "item").await;
    let auditor = server.client(AUDITOR_TOKEN).await;
    let viewed = auditor
        .query_audit_log(pb::QueryAuditLogRequest {
            action: "ViewItem".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(viewed.entries.len(), 1);
    assert_eq!(viewed.entries[0].actor, "reviewer");

    // The session cookie is not readable from scripts.
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "holdfast_session")
        .expect("a session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Strict");
    assert_eq!(browser.execute("return document.cookie").await, json!(""));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_records_manager_sees_a_hold_beat_a_policy_and_its_delay_after_release() {
    let server = TestServer::start_with_http().await;
    let base = server.http_addr();
    let ingest = server.client(INGEST_TOKEN).await;
    let stored = ingest
        .ingest(vec![teams_item("erin@contoso.com", "e-0", "the budget")])
        .await
        .unwrap();
    let id = stored.results[0].id.clone();
    let axe = axe_source();
    let records = Browser::start().await;
    records.sign_in(&base, RETENTION_ADMIN_TOKEN).await;

    // A 30-day delete, previewed before it is saved: it would move erin's item now.
    records.go(&format!("{base}/policies")).await;
    records.check_page(&axe, "policies").await;
    records.type_into("#p-name", "Delete after 30 days").await;
    records
        .execute("document.getElementById('p-action').value = 'delete_only'")
        .await;
    records.clear("#p-days").await;
    records.type_into("#p-days", "30").await;
    records.click("button[value=preview]").await;
    let preview = records.wait_for_text("main", "would move").await;
    assert!(preview.contains("would move 1 item(s)"), "{preview}");
    assert!(preview.contains("erin@contoso.com"), "{preview}");
    let policies = server.client(RETENTION_ADMIN_TOKEN).await;
    let listed = policies
        .list_policies(pb::ListPoliciesRequest {})
        .await
        .unwrap();
    assert!(listed.policies.is_empty(), "a preview saves nothing");

    // A litigation hold on erin, then the policy.
    records.go(&format!("{base}/holds")).await;
    records.type_into("#lh-mailbox", "erin@contoso.com").await;
    records
        .click("form[method=post][action='/holds'] button")
        .await;
    records
        .wait_for_text("table", "Active until released")
        .await;
    records.check_page(&axe, "holds").await;
    records.go(&format!("{base}/policies")).await;
    records.type_into("#p-name", "Delete after 30 days").await;
    records
        .execute("document.getElementById('p-action').value = 'delete_only'")
        .await;
    records.clear("#p-days").await;
    records.type_into("#p-days", "30").await;
    records.click("button[value=save]").await;
    records.wait_for_text("table", "Delete after 30 days").await;

    // The explanation names the hold; a pass moves the item but destroys nothing.
    let explained = policies
        .explain_retention(pb::ExplainRetentionRequest { id: id.clone() })
        .await
        .unwrap();
    assert!(!explained.destroyable);
    assert!(
        explained
            .reasons
            .iter()
            .any(|r| r.starts_with("held by hold")),
        "{:?}",
        explained.reasons
    );
    records.go(&format!("{base}/sweeper")).await;
    records.click("form[action='/sweeper'] button").await;
    records.wait_for_text("main", "Destroyed").await;
    records.check_page(&axe, "sweeper").await;

    // The mailbox's status says so in words.
    records
        .go(&format!("{base}/mailboxes?mailbox=erin%40contoso.com"))
        .await;
    let status = records.wait_for_text("main", "Active holds").await;
    assert!(
        status.contains("Litigation hold: Active until released"),
        "{status}"
    );
    assert!(status.contains("Delete after 30 days"), "{status}");
    records.check_page(&axe, "mailbox").await;

    // Release: a delay hold takes its place, shown with its end.
    records.go(&format!("{base}/holds")).await;
    // Releasing asks to confirm its consequence first.
    records
        .click("form[action$='/release'] input[name=confirm]")
        .await;
    records.click("form[action$='/release'] button").await;
    let holds = records.wait_for_text("table", "Delay hold").await;
    assert!(holds.contains("Active until 20"), "{holds}");
    let explained = policies
        .explain_retention(pb::ExplainRetentionRequest { id })
        .await
        .unwrap();
    assert!(!explained.destroyable, "the delay hold still keeps it");

    // Dispositions: nothing destroyed; the page says so.
    records.go(&format!("{base}/dispositions")).await;
    records
        .wait_for_text("main", "Nothing has been destroyed")
        .await;
    records.check_page(&axe, "dispositions").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_administrator_manages_tokens_and_reads_the_audit_log_in_the_console() {
    let server = TestServer::start_with_http().await;
    let base = server.http_addr();
    let axe = axe_source();
    let admin = Browser::start().await;
    admin.sign_in(&base, ADMIN_TOKEN).await;
    admin.go(&format!("{base}/tokens")).await;
    admin.type_into("#t-name", "made-in-console").await;
    admin.click("input[name=roles][value=auditor]").await;
    admin
        .click("form[action='/tokens'] button[type=submit]")
        .await;
    let token = admin.text("#new-token").await;
    assert!(token.starts_with("hf_"), "{token}");
    admin.check_page(&axe, "tokens").await;
    // The new token works, then is revoked from the console.
    let http = HttpApi::new(base.clone());
    assert_eq!(http.get("/api/v1/whoami", &token).await.status, 200);
    admin.go(&format!("{base}/tokens")).await;
    admin
        .click("form[action='/tokens/made-in-console/revoke'] button")
        .await;
    admin.wait_for_text("h1", "Tokens").await;
    assert_eq!(http.get("/api/v1/whoami", &token).await.status, 401);

    // The audit log, filtered, and the chain verified.
    admin.go(&format!("{base}/audit?action=CreateToken")).await;
    let log = admin.wait_for_text("table", "made-in-console").await;
    assert!(log.contains("CreateToken"), "{log}");
    admin.check_page(&axe, "audit").await;
    admin.click("form[action='/audit/verify'] button").await;
    admin.wait_for_text("main", "The chain is intact").await;
}

/// A console export never takes the room that ingest needs: on a volume with less free space
/// than exports leave, the export fails with a message saying so, nothing is offered for
/// download, and ingest goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_console_export_leaves_the_disk_to_ingest() {
    let mut server = TestServer::unlaunched(format!("min_free_disk_mb = 16\n{}", default_config()));
    server.http = true;
    let Some(_mount) = Mount::tmpfs(&server.data_dir(), "200m") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs (root with CAP_SYS_ADMIN)"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); export space test not run");
        return;
    };
    server.launch().await;
    let ingest = server.client(INGEST_TOKEN).await;
    let items = (0..3)
        .map(|i| teams_item("alice@contoso.com", &format!("a-{i}"), "the budget"))
        .collect();
    ingest.ingest(items).await.unwrap();
    let http = HttpApi::new(server.http_addr());
    let (_, cookie) = sign_in(&http, EDISCOVERY_TOKEN).await;
    let csrf = csrf_of(&page(&http, "/cases", &cookie).await.text());
    let created = form_post(
        &http,
        "/cases",
        &cookie,
        &format!("name=Space&custodians=alice%40contoso.com&csrf={csrf}"),
    )
    .await;
    assert_eq!(created.status, 303, "{}", created.text());
    let case_path = created.headers["location"].to_str().unwrap().to_string();

    let started = form_post(
        &http,
        &format!("{case_path}/export"),
        &cookie,
        &format!("query=budget&csrf={csrf}"),
    )
    .await;
    assert_eq!(started.status, 303, "{}", started.text());
    let job_path = started.headers["location"].to_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let text = page(&http, &job_path, &cookie).await.text();
        if text.contains("The export failed") || text.contains("Export ready") {
            break text;
        }
        assert!(Instant::now() < deadline, "the export never ended: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        status.contains("not enough disk space for this export"),
        "{status}"
    );
    assert!(
        !status.contains("bag.tar"),
        "a failed export offers no download"
    );
    let download = page(&http, &format!("{job_path}/bag.tar"), &cookie).await;
    assert_ne!(download.status, 200);

    // Ingest still has its room.
    ingest
        .ingest(vec![teams_item("alice@contoso.com", "after", "more")])
        .await
        .unwrap();
}
