//! A headless Chromium driven over the W3C WebDriver protocol (Debian's `chromium` and
//! `chromium-driver`), with the HTTP client of `web.rs`: enough to sign in, fill forms,
//! click, read text and run axe-core.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::web::HttpApi;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    http: HttpApi,
    session: String,
    _profile: tempfile::TempDir,
}

fn find_binary(names: &[&str]) -> String {
    for name in names {
        for dir in ["/usr/bin", "/usr/lib/chromium"] {
            let path = format!("{dir}/{name}");
            if std::path::Path::new(&path).exists() {
                return path;
            }
        }
    }
    panic!(
        "{names:?} not found: install Debian's chromium and chromium-driver \
         (scripts/ensure-build-deps.sh does)"
    );
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session.
    pub async fn start() -> Browser {
        let port = super::free_port();
        let driver = Command::new(find_binary(&["chromedriver"]))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = HttpApi::new(format!("http://127.0.0.1:{port}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": find_binary(&["chromium"]),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let answer = http.json("POST", "/session", "", capabilities).await;
        assert_eq!(
            answer.status,
            200,
            "new WebDriver session: {}",
            answer.text()
        );
        let session = answer.json()["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        Browser {
            driver,
            http,
            session,
            _profile: profile,
        }
    }

    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let answer = if method == "GET" {
            self.http.get(&path, "").await
        } else {
            self.http.json(method, &path, "", body).await
        };
        let value = answer.json();
        assert_eq!(answer.status, 200, "WebDriver {method} {path}: {value}");
        value["value"].clone()
    }

    pub async fn go(&self, url: &str) {
        self.command("POST", "/url", json!({ "url": url })).await;
    }

    pub async fn url(&self) -> String {
        self.command("GET", "/url", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The element matching `css`, waiting up to 10 s for it.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let path = format!("/session/{}/element", self.session);
            let answer = self
                .http
                .json(
                    "POST",
                    &path,
                    "",
                    json!({ "using": "css selector", "value": css }),
                )
                .await;
            if answer.status == 200 {
                return answer.json()["value"][ELEMENT]
                    .as_str()
                    .expect("an element id")
                    .to_string();
            }
            if Instant::now() >= deadline {
                let path = format!("/session/{}/source", self.session);
                let source = redact(&self.http.get(&path, "").await.text());
                panic!("no element {css}; the page is:\n{source}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.command(
            "POST",
            "/elements",
            json!({ "using": "css selector", "value": css }),
        )
        .await
        .as_array()
        .map_or(0, Vec::len)
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    pub async fn clear(&self, css: &str) {
        let element = self.find(css).await;
        self.command("POST", &format!("/element/{element}/clear"), json!({}))
            .await;
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command("POST", &format!("/element/{element}/click"), json!({}))
            .await;
    }

    /// The text of `css`, found again if the page changed under it (a navigation).
    pub async fn text(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let element = self.find(css).await;
            let path = format!("/session/{}/element/{element}/text", self.session);
            let answer = self.http.get(&path, "").await;
            if answer.status == 200 {
                return answer.json()["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
            assert!(
                Instant::now() < deadline && answer.text().contains("stale element"),
                "WebDriver text of {css}: {}",
                answer.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `css`'s text contains `expected`.
    pub async fn wait_for_text(&self, css: &str, expected: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text(css).await;
            if text.contains(expected) {
                return text;
            }
            if Instant::now() >= deadline {
                let page = redact(&self.text("body").await);
                panic!("{css} says {text:?}, not {expected:?}; the page says:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn source(&self) -> String {
        self.command("GET", "/source", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Checks the page with axe-core (no violations) and keeps its screenshot as `name`.
    pub async fn check_page(&self, axe_source: &str, name: &str) {
        self.screenshot(name).await;
        let violations = self.axe_violations(axe_source).await;
        assert!(violations.is_empty(), "{name} page: {violations:#?}");
    }

    /// Saves a PNG of the window as `<name>.png` in the folder `HOLDFAST_SCREENSHOTS` names
    /// (unset: nothing). `docs/console/` holds the ones the README shows.
    pub async fn screenshot(&self, name: &str) {
        use base64::Engine as _;
        let Ok(dir) = std::env::var("HOLDFAST_SCREENSHOTS") else {
            return;
        };
        let value = self.command("GET", "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().expect("a base64 PNG"))
            .expect("a base64 PNG");
        std::fs::write(format!("{dir}/{name}.png"), png).expect("write the screenshot");
    }

    pub async fn cookies(&self) -> Vec<Value> {
        self.command("GET", "/cookie", Value::Null)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn execute(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Runs axe-core (its source given) on the page; answers its violations.
    pub async fn axe_violations(&self, axe_source: &str) -> Vec<Value> {
        self.execute(axe_source).await;
        assert_eq!(
            self.execute("return typeof axe.run").await,
            json!("function"),
            "axe-core did not load"
        );
        let result = self
            .command(
                "POST",
                "/execute/async",
                json!({ "script": "const done = arguments[arguments.length - 1]; \
                    axe.run(document, { runOnly: { type: 'tag', values: \
                    ['wcag2a', 'wcag2aa', 'wcag21aa', 'wcag22aa'] } }) \
                    .then(r => done(r.violations.map(v => ({ id: v.id, help: v.help, \
                    nodes: v.nodes.map(n => n.target.join(' ')) })))) \
                    .catch(e => done([{ id: 'axe-error', help: String(e) }]));",
                    "args": [] }),
            )
            .await;
        result.as_array().cloned().unwrap_or_default()
    }

    /// Signs in through the console's form, and waits until the browser has left the
    /// sign-in page (the session cookie is set).
    pub async fn sign_in(&self, base: &str, token: &str) {
        self.go(&format!("{base}/signin")).await;
        self.type_into("#token", token).await;
        self.click("form[action='/signin'] button").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.url().await.contains("/signin") {
            assert!(
                Instant::now() < deadline,
                "sign-in did not leave the sign-in page"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A page as a failing test prints it, with any bearer token (hf_...) cut out.
fn redact(page: &str) -> String {
    page.split("hf_")
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part.to_string()
            } else {
                let rest = part.trim_start_matches(|c: char| {
                    c.is_ascii_alphanumeric() || c == '_' || c == '-'
                });
                format!("hf_[redacted]{rest}")
            }
        })
        .collect()
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
