//! Starting, stopping and killing the real server binary for tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_client::{pb, ClientConfig, HoldfastClient, InteractionBuilder};

pub mod browser;
pub mod web;

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_holdfast-server-under-test");
pub const CLI_BIN: &str = env!("CARGO_BIN_EXE_holdfast-cli-under-test");

/// Tokens the test config defines, one per role under test.
pub const ADMIN_TOKEN: &str = "hf_test_admin_token";
pub const INGEST_TOKEN: &str = "hf_test_ingest_token";
pub const AUDITOR_TOKEN: &str = "hf_test_auditor_token";
pub const EDISCOVERY_TOKEN: &str = "hf_test_ediscovery_token";
pub const OTHER_REVIEWER_TOKEN: &str = "hf_test_other_reviewer_token";
pub const EDISCOVERY_ADMIN_TOKEN: &str = "hf_test_ediscovery_admin_token";
pub const RETENTION_ADMIN_TOKEN: &str = "hf_test_retention_admin_token";
pub const PURGE_TOKEN: &str = "hf_test_purge_token";

pub fn sha256_hex(text: &str) -> String {
    holdfast_server::auth::hash_token(text)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A loopback port nothing listens on, never handed out twice in this process. It comes from
/// below the kernel's ephemeral range (32768-60999), so no outgoing connection can take it
/// between this check and the server's bind (asking the kernel for port 0 gave a port that a
/// second call could return again, or that a client connection could take first).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..10_000 {
        let port = rand::random_range(20_000..32_000);
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in 20000-31999");
}

/// The config file the tests use, unless a test writes its own.
pub fn default_config() -> String {
    config_with_metrics_port(free_port())
}

pub fn config_with_metrics_port(metrics: u16) -> String {
    format!(
        r#"
metrics_listen = "127.0.0.1:{metrics}"

[[tokens]]
name = "test-admin"
sha256 = "{admin}"
roles = ["admin"]

[[tokens]]
name = "backend"
sha256 = "{ingest}"
roles = ["ingest"]

[[tokens]]
name = "auditor"
sha256 = "{auditor}"
roles = ["auditor"]

[[tokens]]
name = "reviewer"
sha256 = "{ediscovery}"
roles = ["ediscovery"]

[[tokens]]
name = "other-reviewer"
sha256 = "{other_reviewer}"
roles = ["ediscovery"]

[[tokens]]
name = "ediscovery-admin"
sha256 = "{ediscovery_admin}"
roles = ["ediscovery_admin"]

[[tokens]]
name = "retention-admin"
sha256 = "{retention_admin}"
roles = ["retention_admin"]

[[tokens]]
name = "purger"
sha256 = "{purge}"
roles = ["purge"]

[index]
commit_interval_ms = 100
"#,
        admin = sha256_hex(ADMIN_TOKEN),
        ingest = sha256_hex(INGEST_TOKEN),
        auditor = sha256_hex(AUDITOR_TOKEN),
        ediscovery = sha256_hex(EDISCOVERY_TOKEN),
        other_reviewer = sha256_hex(OTHER_REVIEWER_TOKEN),
        ediscovery_admin = sha256_hex(EDISCOVERY_ADMIN_TOKEN),
        retention_admin = sha256_hex(RETENTION_ADMIN_TOKEN),
        purge = sha256_hex(PURGE_TOKEN),
    )
}

/// The tests' engines, as `scripts/test.sh` sets them.
pub struct Engines {
    pub postgres_url: String,
    /// To restart PostgreSQL (`scripts/postgres.sh restart`); absent when the tests were
    /// given a PostgreSQL of someone else's, which they do not restart.
    pub postgres_dir: Option<String>,
    pub s3_endpoint: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
}

pub fn engines() -> Option<Engines> {
    let (Ok(url), Ok(s3)) = (
        std::env::var("HOLDFAST_TEST_POSTGRES_URL"),
        std::env::var("HOLDFAST_TEST_S3"),
    ) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "the cluster tests must run in CI: scripts/test.sh starts PostgreSQL and SeaweedFS \
             and sets HOLDFAST_TEST_POSTGRES_URL and HOLDFAST_TEST_S3"
        );
        eprintln!("skipped: run through scripts/test.sh (it starts the engines)");
        return None;
    };
    let field = |name: &str| {
        s3.split_whitespace()
            .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
            .expect("HOLDFAST_TEST_S3 names endpoint, access_key and secret_key")
            .to_string()
    };
    Some(Engines {
        postgres_url: url,
        postgres_dir: std::env::var("HOLDFAST_TEST_POSTGRES_DIR").ok(),
        s3_endpoint: field("endpoint"),
        s3_access_key: field("access_key"),
        s3_secret_key: field("secret_key"),
    })
}

/// A fresh database for one cluster; its URL.
pub async fn fresh_database(admin_url: &str) -> String {
    let name = format!(
        "holdfast_cluster_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    let admin = admin_url.to_string();
    let create = name.clone();
    tokio::task::spawn_blocking(move || {
        let mut client = admin
            .parse::<postgres::Config>()
            .unwrap()
            .connect(postgres::NoTls)
            .unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {create}"))
            .unwrap();
    })
    .await
    .unwrap();
    let base = admin_url
        .rsplit_once('/')
        .expect("the URL names a database")
        .0;
    format!("{base}/{name}")
}

/// Set to `cluster` to run a test's servers as cluster nodes (each on a fresh PostgreSQL
/// database and S3 bucket of the tests' engines) instead of on the embedded store: the same
/// black-box tests then show that cluster mode behaves the same.
pub const BACKEND_VARIABLE: &str = "HOLDFAST_TEST_BACKEND";

/// Whether this run's servers are cluster nodes (`BACKEND_VARIABLE`).
pub fn cluster_backend() -> bool {
    match std::env::var(BACKEND_VARIABLE).as_deref() {
        Ok("cluster" | "cluster-splits") => true,
        Ok("embedded") | Err(_) => false,
        Ok(other) => {
            panic!("{BACKEND_VARIABLE}={other}: expected cluster, cluster-splits or embedded")
        }
    }
}

/// Whether this run's servers search splits in the bucket (no local index directory).
pub fn splits_backend() -> bool {
    cluster_search() == "splits"
}

/// The `search` of this run's cluster nodes: `splits` for `cluster-splits`.
fn cluster_search() -> &'static str {
    match std::env::var(BACKEND_VARIABLE).as_deref() {
        Ok("cluster-splits") => "splits",
        _ => "local",
    }
}

/// The bucket of this test process's cluster nodes: one per process, since each bucket costs
/// the gateway volumes of its own (object keys are ULIDs, which never collide).
pub fn test_bucket() -> &'static str {
    static BUCKET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUCKET.get_or_init(|| {
        format!(
            "holdfast-test-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        )
    })
}

/// Writes the secrets of a fresh cluster (a new database of the tests' PostgreSQL, the
/// gateway's keys) into `secrets` as a node's config names them.
pub async fn write_cluster_secrets(engines: &Engines, secrets: &Path) {
    std::fs::write(
        secrets.join("postgres.url"),
        fresh_database(&engines.postgres_url).await,
    )
    .unwrap();
    std::fs::write(
        secrets.join("s3.credentials"),
        format!("{}\n{}\n", engines.s3_access_key, engines.s3_secret_key),
    )
    .unwrap();
}

/// The `[cluster]` table of node `node` on the engines whose secrets are in `secrets`.
pub fn cluster_section(node: &str, secrets: &Path, engines: &Engines, bucket: &str) -> String {
    format!(
        r#"
[cluster]
node = "{node}"
postgres_url_file = "{secrets}/postgres.url"
s3_endpoint = "{endpoint}"
s3_bucket = "{bucket}"
s3_credentials_file = "{secrets}/s3.credentials"
search = "{search}"
"#,
        secrets = secrets.display(),
        endpoint = engines.s3_endpoint,
        search = cluster_search(),
    )
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The HTTP/JSON API's port; 0 while the server runs without its HTTP listener (the
    /// default: every port a test reserves can be taken by another test before the server
    /// binds it, so tests reserve only the ports they use).
    pub http_port: u16,
    /// Whether the next launch serves HTTP.
    pub http: bool,
    pub config: String,
    child: Option<Child>,
    /// Arguments added to the next launch only (e.g. `--restore DIR`).
    next_launch_args: Vec<std::ffi::OsString>,
    /// Whether the config got its `[cluster]` table (under `BACKEND_VARIABLE=cluster`).
    clustered: bool,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with_config(default_config()).await
    }

    /// A server that also serves the HTTP API and the console.
    pub async fn start_with_http() -> TestServer {
        let mut server = TestServer::unlaunched(default_config());
        server.http = true;
        server.launch().await;
        server
    }

    pub async fn start_with_config(config: String) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = TestServer {
            dir,
            port: 0,
            http_port: 0,
            http: false,
            config,
            child: None,
            next_launch_args: Vec::new(),
            clustered: false,
        };
        server.launch().await;
        server
    }

    /// A server not started yet (prepare its data directory, then call `launch`).
    pub fn unlaunched(config: String) -> TestServer {
        TestServer {
            dir: tempfile::tempdir().expect("temp dir"),
            port: 0,
            http_port: 0,
            http: false,
            config,
            child: None,
            next_launch_args: Vec::new(),
            clustered: false,
        }
    }

    /// Starts a server whose (new) data directory is restored from `backup` first.
    pub async fn start_restored(backup: &Path) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = TestServer {
            dir,
            port: 0,
            http_port: 0,
            http: false,
            config: default_config(),
            child: None,
            next_launch_args: vec!["--restore".into(), backup.as_os_str().to_owned()],
            clustered: false,
        };
        server.launch().await;
        server
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The base URL of the HTTP/JSON API.
    pub fn http_addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the binary with the same data directory, config and port as before.
    pub async fn launch(&mut self) {
        if !self.clustered && cluster_backend() && !self.config.contains("[cluster]") {
            let engines = engines().expect("the cluster backend needs the tests' engines");
            write_cluster_secrets(&engines, self.dir.path()).await;
            let section = cluster_section("test-node", self.dir.path(), &engines, test_bucket());
            self.config.push_str(&section);
        }
        self.clustered = true;
        let config_path = self.dir.path().join("holdfast.toml");
        std::fs::write(&config_path, &self.config).expect("write config");
        if self.port == 0 {
            self.port = free_port();
        }
        if self.http && self.http_port == 0 {
            self.http_port = free_port();
        }
        let http_listen = if self.http {
            format!("127.0.0.1:{}", self.http_port)
        } else {
            "off".to_string()
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(SERVER_BIN)
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--http-listen")
            .arg(&http_listen)
            .args(std::mem::take(&mut self.next_launch_args))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn holdfast-server");
        self.child = Some(child);
        self.wait_until_ready().await;
    }

    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("server exited early with {status}:\n{}", self.log());
                }
            }
            // gRPC, and the HTTP listener too when the test asked for one: the server binds
            // them one after the other, and a busy machine can show the gap.
            let http_ready = !self.http
                || self.http_port == 0
                || std::net::TcpStream::connect(("127.0.0.1", self.http_port)).is_ok();
            if http_ready && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server did not start:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn client(&self, token: &str) -> HoldfastClient {
        HoldfastClient::connect(ClientConfig {
            addr: self.addr(),
            token: token.to_string(),
            tls: None,
        })
        .await
        .expect("connect")
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "send SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the real CLI against this server.
    pub fn cli(&self, token: &str, args: &[&str]) -> CliOutput {
        run_cli(
            args,
            &[
                ("HOLDFAST_ADDR", self.addr().as_str()),
                ("HOLDFAST_TOKEN", token),
            ],
            None,
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run_cli(args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> CliOutput {
    let mut command = Command::new(CLI_BIN);
    command
        .args(args)
        .env_remove("HOLDFAST_TOKEN")
        .env_remove("HOLDFAST_ADDR")
        .env_remove("HOLDFAST_DATA_DIR");
    for (key, value) in env {
        command.env(key, value);
    }
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let output = command.output().expect("run holdfast CLI");
    CliOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// An interaction in a Teams thread "t-1" created 2025-03-01 with this prompt.
pub fn teams_item(mailbox: &str, key: &str, prompt: &str) -> pb::InteractionInput {
    use chrono::TimeZone;
    InteractionBuilder::new(mailbox, key)
        .app("Teams")
        .thread("t-1")
        .created_at(chrono::Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap())
        .prompt(prompt)
        .response("noted")
        .build()
}

/// A minimal valid interaction; the same arguments always give the same content.
pub fn item(mailbox: &str, client_key: &str) -> pb::InteractionInput {
    use chrono::TimeZone;
    InteractionBuilder::new(mailbox, client_key)
        .created_at(chrono::Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap())
        .app("Word")
        .prompt(format!("prompt of {client_key}"))
        .response(format!("response of {client_key}"))
        .build()
}

pub fn status_of(result: &pb::IngestResult) -> pb::IngestStatus {
    pb::IngestStatus::try_from(result.status).expect("known status")
}

/// Every ACTIVE item of a mailbox, through the user's view, following pages.
pub async fn list_all(client: &HoldfastClient, mailbox: &str) -> Vec<pb::Interaction> {
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list(pb::ListInteractionsRequest {
                mailbox_id: mailbox.into(),
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("list");
        items.extend(page.interactions);
        if page.next_page_token.is_empty() {
            return items;
        }
        token = page.next_page_token;
    }
}

/// A tmpfs mounted for the test, unmounted when dropped.
pub struct Mount(PathBuf);

impl Mount {
    pub fn tmpfs(path: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(status) if status.success() => Some(Mount(path.to_path_buf())),
            _ => None,
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A CA, a server certificate for "localhost" and a client certificate, all PEM.
pub struct Pki {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

pub fn make_pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["backend.contoso".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca, &ca_key)
        .unwrap();
    Pki {
        ca: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}
