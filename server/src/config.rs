//! The server's configuration: one struct read from a TOML file (unknown keys are errors),
//! then overridden by environment variables and command-line flags (flags win).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::records::Role;

/// Limits on what a caller may send (SPEC §2). Defaults are the spec's.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest prompt, in bytes of UTF-8.
    pub max_prompt_bytes: usize,
    /// Largest response, in bytes of UTF-8.
    pub max_response_bytes: usize,
    /// Most attributes per interaction.
    pub max_attributes: usize,
    /// Largest other text field (ids, names, urls, attribute keys and values), in bytes.
    pub max_field_bytes: usize,
    /// Most entries in each list field (plugins, accessed resources, contexts, categories).
    pub max_list_items: usize,
    /// Most interactions in one ingest request.
    pub max_batch_items: usize,
    /// Largest ingest request, in bytes on the wire.
    pub max_request_bytes: usize,
    /// How far in the future `created_at` may be, in seconds.
    pub max_future_skew_seconds: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_prompt_bytes: 1 << 20,
            max_response_bytes: 1 << 20,
            max_attributes: 64,
            max_field_bytes: 8 << 10,
            max_list_items: 1000,
            max_batch_items: 1000,
            max_request_bytes: 16 << 20,
            max_future_skew_seconds: 300,
        }
    }
}

/// The search index (SPEC §5).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// Longest time between an acknowledged write and its index commit, in milliseconds.
    pub commit_interval_ms: u64,
    /// Ingest waits while more than this many writes are not yet indexed.
    pub max_lag: u64,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            commit_interval_ms: 500,
            max_lag: 20_000,
        }
    }
}

/// Retention (SPEC §3, §4).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Applies (as retain-then-delete) only to items no policy applies to; 0 = none.
    pub default_retention_days: u32,
    /// How long an item stays in the holds area at least, in hours.
    pub holds_area_minimum_age_hours: u32,
    /// The delay hold a mailbox gets when a hold is released from it, in days.
    pub delay_hold_days: u32,
    /// Seconds between sweeper passes; 0: only on request (`RunSweep`).
    pub sweep_interval_seconds: u64,
    /// Most items a purge request moves per mailbox.
    pub purge_max_per_mailbox: u32,
    /// Longest time, in seconds, that a destroyed item's text may stay in files on disk
    /// (store and index) before the eraser has compacted it away (SPEC §8).
    pub erasure_bound_seconds: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            default_retention_days: 0,
            holds_area_minimum_age_hours: 24,
            delay_hold_days: 30,
            sweep_interval_seconds: 60,
            purge_max_per_mailbox: 100,
            erasure_bound_seconds: 86_400,
        }
    }
}

/// How much of the server one caller or one kind of work may take (issue 8, defects 2 and 5).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConcurrencyConfig {
    /// Threads of the runtime's blocking pool (short store reads, index reads, syncs).
    pub blocking_threads: usize,
    /// Threads reserved for validating ingest batches; nothing else runs on them.
    pub ingest_threads: usize,
    /// Long operations (DeleteHistory, PreviewPolicy, Purge) running at once, server-wide;
    /// more wait without holding a thread.
    pub long_operations: usize,
    /// Long operations one principal may have running or waiting at once.
    pub long_operations_per_principal: usize,
    /// Export chunk reads running at once, server-wide.
    pub export_reads: usize,
    /// Export streams one principal may have open at once.
    pub exports_per_principal: usize,
    /// Export streams open at once, server-wide (each pins an index snapshot and holds up to
    /// 20 items in memory).
    pub open_exports: usize,
    /// Searches (and audit-log queries) running at once, server-wide; more wait without
    /// holding a thread.
    pub searches: usize,
    /// Searches and audit-log queries one principal may have running or waiting at once.
    pub searches_per_principal: usize,
    /// An export stream whose client reads nothing for this long is ended.
    pub export_idle_timeout_seconds: u64,
    /// Refused calls without a valid token, per source address: the sustained rate allowed
    /// (per second) before the answer becomes RESOURCE_EXHAUSTED.
    pub unauthenticated_per_second: u32,
    /// The burst of refused calls a source may make before the rate applies.
    pub unauthenticated_burst: u32,
    /// How long a source past its rate waits for each refusal (holding no thread), so that
    /// a flood that retries at once is slowed down; 0 answers at once.
    pub unauthenticated_tarpit_ms: u64,
    /// Refused calls without a valid token are audited as one entry per source and window.
    pub refusal_window_seconds: u64,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        ConcurrencyConfig {
            blocking_threads: 64,
            ingest_threads: 4,
            long_operations: 2,
            long_operations_per_principal: 8,
            export_reads: 4,
            exports_per_principal: 24,
            open_exports: 64,
            searches: 8,
            searches_per_principal: 4,
            export_idle_timeout_seconds: 300,
            unauthenticated_per_second: 10,
            unauthenticated_burst: 50,
            unauthenticated_tarpit_ms: 250,
            refusal_window_seconds: 60,
        }
    }
}

/// Block compression of the store's files.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    Zstd,
    /// No compression: bigger files; tests use it so that a byte scan of the data directory
    /// sees any text that is still there.
    None,
}

/// The RocksDB store.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub compression: Compression,
}

/// Cluster mode (docs/cluster.md): the store on PostgreSQL and an S3 bucket with Object Lock
/// instead of the embedded RocksDB, so that any number of nodes serve it. Secrets are not
/// written here: the PostgreSQL URL comes from `HOLDFAST_POSTGRES_URL` or `postgres_url_file`,
/// the S3 keys from `HOLDFAST_S3_ACCESS_KEY` / `HOLDFAST_S3_SECRET_KEY` or `s3_credentials_file`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster (its index reads the shared feed by it).
    pub node: String,
    /// A file holding the PostgreSQL URL (`postgres://user:password@host:port/db`).
    #[serde(default)]
    pub postgres_url_file: Option<PathBuf>,
    /// Most PostgreSQL connections this node opens.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// The S3 endpoint, e.g. `https://s3.eu-west-1.amazonaws.com`.
    pub s3_endpoint: String,
    #[serde(default = "default_region")]
    pub s3_region: String,
    /// The bucket; created with Object Lock when missing, refused when it has none.
    pub s3_bucket: String,
    /// A file of two lines: the access key id, then the secret key.
    #[serde(default)]
    pub s3_credentials_file: Option<PathBuf>,
    /// Where searches read: `local`, a full index on every node (the default), or `splits`,
    /// one index per partition of mailboxes in the bucket, built once and read by every
    /// node (docs/cluster.md, "Search").
    #[serde(default)]
    pub search: ClusterSearch,
    /// With `search = "splits"`: the address (`host:port` of the gRPC listener) at which
    /// the other nodes reach this node for leaf searches; by default `listen`, unless that
    /// is a wildcard (`0.0.0.0`). Without one this node asks the others but is not asked:
    /// the nodes searching for it search its share themselves.
    #[serde(default)]
    pub advertise: Option<String>,
    /// A file holding the secret nodes present to each other for leaf searches (the same
    /// on every node; 32 to 256 visible ASCII characters). Without it the secret is derived
    /// from the page-token key in PostgreSQL, so whoever can read the database can also
    /// call leaf searches: set it where the database's readers are not trusted with search.
    #[serde(default)]
    pub node_key_file: Option<PathBuf>,
    /// With `[tls]` and `search = "splits"`: a PEM CA bundle that signed the nodes' server
    /// certificates. This node then registers its address as `https://` and calls the other
    /// nodes' leaf searches over TLS, verifying their certificates against it (and presents
    /// its own `[tls]` certificate when they ask for a client certificate). Without it a
    /// node with `[tls]` is not asked for leaf searches: it searches every split it needs
    /// itself.
    #[serde(default)]
    pub node_ca_file: Option<PathBuf>,
    /// The name the nodes' certificates are checked for (for example one name every node's
    /// certificate carries); by default the host of each node's address.
    #[serde(default)]
    pub node_tls_domain: Option<String>,
}

/// See `ClusterConfig::search`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClusterSearch {
    #[default]
    Local,
    Splits,
}

fn default_max_connections() -> u32 {
    16
}

fn default_region() -> String {
    "us-east-1".into()
}

/// The secrets of cluster mode, read from the environment or the files the config names.
pub struct ClusterSecrets {
    pub postgres_url: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
}

impl ClusterConfig {
    pub fn secrets(&self) -> Result<ClusterSecrets, ConfigError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let postgres_url = match (
            std::env::var("HOLDFAST_POSTGRES_URL"),
            &self.postgres_url_file,
        ) {
            (Ok(url), _) => url,
            (Err(_), Some(path)) => read(path)?.trim().to_string(),
            (Err(_), None) => {
                return Err(ConfigError::Invalid(
                    "cluster mode needs the PostgreSQL URL: set HOLDFAST_POSTGRES_URL or \
                     cluster.postgres_url_file"
                        .into(),
                ))
            }
        };
        let (s3_access_key, s3_secret_key) = match (
            std::env::var("HOLDFAST_S3_ACCESS_KEY"),
            std::env::var("HOLDFAST_S3_SECRET_KEY"),
            &self.s3_credentials_file,
        ) {
            (Ok(access), Ok(secret), _) => (access, secret),
            (_, _, Some(path)) => {
                let text = read(path)?;
                let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
                match (lines.next(), lines.next()) {
                    (Some(access), Some(secret)) => (access.to_string(), secret.to_string()),
                    _ => {
                        return Err(ConfigError::Invalid(format!(
                            "{} must hold two lines: the S3 access key id, then the secret key",
                            path.display()
                        )))
                    }
                }
            }
            _ => {
                return Err(ConfigError::Invalid(
                    "cluster mode needs S3 credentials: set HOLDFAST_S3_ACCESS_KEY and \
                     HOLDFAST_S3_SECRET_KEY, or cluster.s3_credentials_file"
                        .into(),
                ))
            }
        };
        Ok(ClusterSecrets {
            postgres_url,
            s3_access_key,
            s3_secret_key,
        })
    }
}

/// OTLP trace ingest (OpenTelemetry GenAI spans; docs/otlp.md).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// The span (then resource) attributes that name the user whose mailbox an LLM span is
    /// archived in, in order.
    pub user_attributes: Vec<String>,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            user_attributes: [
                "user.id",
                "enduser.id",
                "langfuse.user.id",
                "traceloop.association.properties.user_id",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// TLS for the gRPC listener (rustls).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// PEM CA bundle; when set, clients must present a certificate signed by it.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// A token defined in the config file. Only the SHA-256 of the token is written here.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigToken {
    pub name: String,
    /// Hex SHA-256 of the bearer token (`holdfast token hash` prints it).
    pub sha256: String,
    pub roles: Vec<Role>,
    /// OTLP ingest with this token: the `app` its interactions are recorded under (default:
    /// the resource's `service.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_app: Option<String>,
    /// OTLP ingest with this token: an LLM span without captured prompt or response is
    /// stored as metadata-only evidence instead of being rejected.
    #[serde(default)]
    pub otlp_metadata_only: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where RocksDB, the admin token and (later) the index live.
    pub data_dir: PathBuf,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Prometheus metrics listen address; `"off"` in the file (`None`) disables the endpoint.
    #[serde(with = "optional_address")]
    pub metrics_listen: Option<SocketAddr>,
    /// HTTP/JSON API (and web console) listen address; `"off"` in the file (`None`) disables
    /// it. Served with TLS when `[tls]` is configured, like the gRPC listener.
    #[serde(with = "optional_address")]
    pub http_listen: Option<SocketAddr>,
    /// Refuse to listen on a non-loopback address without TLS unless this is set.
    pub allow_plaintext_non_loopback: bool,
    pub log_format: LogFormat,
    /// Most interactions written by one group commit (one WAL sync).
    pub max_group_commit_items: usize,
    /// Ingest is refused (RESOURCE_EXHAUSTED) while the data volume has less than this many
    /// MiB free, keeping room for audit entries, metadata and RocksDB flushes; 0 disables.
    pub min_free_disk_mb: u64,
    pub tls: Option<TlsConfig>,
    pub tokens: Vec<ConfigToken>,
    pub limits: Limits,
    pub index: IndexConfig,
    pub retention: RetentionConfig,
    pub concurrency: ConcurrencyConfig,
    pub storage: StorageConfig,
    pub otlp: OtlpConfig,
    /// Set: cluster mode (the store on PostgreSQL and S3); unset: the embedded store.
    pub cluster: Option<ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./holdfast-data"),
            listen: "127.0.0.1:50051".parse().expect("valid default address"),
            metrics_listen: Some("127.0.0.1:9464".parse().expect("valid default address")),
            http_listen: Some("127.0.0.1:8080".parse().expect("valid default address")),
            allow_plaintext_non_loopback: false,
            log_format: LogFormat::Text,
            max_group_commit_items: 20_000,
            min_free_disk_mb: 64,
            tls: None,
            tokens: Vec::new(),
            limits: Limits::default(),
            index: IndexConfig::default(),
            retention: RetentionConfig::default(),
            concurrency: ConcurrencyConfig::default(),
            storage: StorageConfig::default(),
            otlp: OtlpConfig::default(),
            cluster: None,
        }
    }
}

/// Command-line flags; each may also come from the environment variable it names.
#[derive(Debug, Parser, Default)]
#[command(name = "holdfast-server", version, about = "holdfast gRPC server")]
pub struct Flags {
    /// TOML config file; unknown keys are errors.
    #[arg(long, short, env = "HOLDFAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (default ./holdfast-data).
    #[arg(long, env = "HOLDFAST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address (default 127.0.0.1:50051).
    #[arg(long, env = "HOLDFAST_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Prometheus metrics address (default 127.0.0.1:9464); `off` disables it.
    #[arg(long, env = "HOLDFAST_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// HTTP/JSON API address (default 127.0.0.1:8080); `off` disables it.
    #[arg(long, env = "HOLDFAST_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Log format.
    #[arg(long, env = "HOLDFAST_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Restore the backup in this directory into the (absent or empty) data directory, after
    /// verifying every file against the backup's manifest, then serve from it.
    #[arg(long, value_name = "BACKUP_DIR")]
    pub restore: Option<PathBuf>,
    /// With `--restore`: exit after restoring instead of serving.
    #[arg(long, requires = "restore")]
    pub restore_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid metrics address {0:?} (expected host:port or `off`)")]
    MetricsAddress(String),
    #[error("invalid HTTP address {0:?} (expected host:port or `off`)")]
    HttpAddress(String),
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then the file, then environment variables and flags.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let mut config = match &flags.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(dir) = &flags.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(listen) = flags.listen {
            config.listen = listen;
        }
        if let Some(metrics) = &flags.metrics_listen {
            config.metrics_listen = optional_address::parse(metrics)
                .map_err(|_| ConfigError::MetricsAddress(metrics.clone()))?;
        }
        if let Some(http) = &flags.http_listen {
            config.http_listen = optional_address::parse(http)
                .map_err(|_| ConfigError::HttpAddress(http.clone()))?;
        }
        if let Some(format) = flags.log_format {
            config.log_format = format;
        }
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |reason: String| Err(ConfigError::Invalid(reason));
        for (key, address) in [
            ("listen", Some(self.listen)),
            ("http_listen", self.http_listen),
        ] {
            let Some(address) = address else { continue };
            if !address.ip().is_loopback()
                && self.tls.is_none()
                && !self.allow_plaintext_non_loopback
            {
                return invalid(format!(
                    "{key} address {address} is not loopback and no [tls] is configured; bearer \
                     tokens would cross the network in plain text (set \
                     allow_plaintext_non_loopback = true to accept that)",
                ));
            }
        }
        if let Some(cluster) = &self.cluster {
            let node_ok = !cluster.node.is_empty()
                && cluster.node.len() <= 64
                && cluster
                    .node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !node_ok {
                return invalid(format!(
                    "cluster.node must be 1 to 64 letters, digits, '.', '_' or '-', not {:?}",
                    cluster.node
                ));
            }
            check_range(
                "cluster.max_connections",
                cluster.max_connections.into(),
                1,
                1000,
            )?;
            if cluster.s3_bucket.is_empty() || cluster.s3_endpoint.is_empty() {
                return invalid("cluster.s3_endpoint and cluster.s3_bucket must be set".into());
            }
            if let Some(ca) = &cluster.node_ca_file {
                if self.tls.is_none() {
                    return invalid(
                        "cluster.node_ca_file needs [tls]: leaf searches between nodes are over \
                         TLS only when this node's gRPC listener is"
                            .into(),
                    );
                }
                // tonic skips what it cannot parse: an empty trust store would fail every
                // call between nodes, silently.
                let text = std::fs::read_to_string(ca).map_err(|error| {
                    ConfigError::Invalid(format!("cluster.node_ca_file {}: {error}", ca.display()))
                })?;
                if !text.contains("-----BEGIN CERTIFICATE-----") {
                    return invalid(format!(
                        "cluster.node_ca_file {} holds no PEM certificate",
                        ca.display()
                    ));
                }
            }
            if let Some(domain) = &cluster.node_tls_domain {
                let valid = !domain.is_empty()
                    && domain.len() <= 253
                    && domain
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c));
                if !valid {
                    return invalid(format!(
                        "cluster.node_tls_domain must be a DNS name or an IP address, not \
                         {domain:?}"
                    ));
                }
            }
        }
        check_range(
            "index.commit_interval_ms",
            self.index.commit_interval_ms,
            1,
            60_000,
        )?;
        check_range("index.max_lag", self.index.max_lag, 1, 100_000_000)?;
        check_range(
            "max_group_commit_items",
            self.max_group_commit_items as u64,
            1,
            1_000_000,
        )?;
        check_range(
            "retention.erasure_bound_seconds",
            self.retention.erasure_bound_seconds,
            1,
            2_592_000,
        )?;
        let limits = &self.limits;
        check_range(
            "limits.max_prompt_bytes",
            limits.max_prompt_bytes as u64,
            1,
            64 << 20,
        )?;
        check_range(
            "limits.max_response_bytes",
            limits.max_response_bytes as u64,
            1,
            64 << 20,
        )?;
        check_range(
            "limits.max_attributes",
            limits.max_attributes as u64,
            0,
            10_000,
        )?;
        check_range(
            "limits.max_field_bytes",
            limits.max_field_bytes as u64,
            1,
            1 << 20,
        )?;
        check_range(
            "limits.max_list_items",
            limits.max_list_items as u64,
            0,
            100_000,
        )?;
        check_range(
            "limits.max_batch_items",
            limits.max_batch_items as u64,
            1,
            100_000,
        )?;
        check_range(
            "limits.max_request_bytes",
            limits.max_request_bytes as u64,
            1,
            1 << 30,
        )?;
        // Seconds added to the current time: bounded so that the sum cannot overflow.
        if !(0..=MAX_FUTURE_SKEW_SECONDS).contains(&limits.max_future_skew_seconds) {
            return invalid(format!(
                "limits.max_future_skew_seconds must be within 0..={MAX_FUTURE_SKEW_SECONDS}, \
                 not {}",
                limits.max_future_skew_seconds
            ));
        }
        let retention = &self.retention;
        let max_days = u64::from(holdfast_retention::policy::MAX_DAYS);
        check_range(
            "retention.default_retention_days",
            retention.default_retention_days.into(),
            0,
            max_days,
        )?;
        check_range(
            "retention.holds_area_minimum_age_hours",
            retention.holds_area_minimum_age_hours.into(),
            0,
            max_days * 24,
        )?;
        check_range(
            "retention.delay_hold_days",
            retention.delay_hold_days.into(),
            0,
            max_days,
        )?;
        check_range(
            "retention.sweep_interval_seconds",
            retention.sweep_interval_seconds,
            0,
            MAX_INTERVAL_SECONDS,
        )?;
        check_range(
            "retention.purge_max_per_mailbox",
            retention.purge_max_per_mailbox.into(),
            1,
            100_000,
        )?;
        let concurrency = &self.concurrency;
        check_range(
            "concurrency.blocking_threads",
            concurrency.blocking_threads as u64,
            8,
            1024,
        )?;
        check_range(
            "concurrency.ingest_threads",
            concurrency.ingest_threads as u64,
            1,
            256,
        )?;
        check_range(
            "concurrency.long_operations",
            concurrency.long_operations as u64,
            1,
            256,
        )?;
        check_range(
            "concurrency.long_operations_per_principal",
            concurrency.long_operations_per_principal as u64,
            1,
            1024,
        )?;
        check_range(
            "concurrency.export_reads",
            concurrency.export_reads as u64,
            1,
            256,
        )?;
        check_range(
            "concurrency.exports_per_principal",
            concurrency.exports_per_principal as u64,
            1,
            10_000,
        )?;
        check_range(
            "concurrency.open_exports",
            concurrency.open_exports as u64,
            1,
            100_000,
        )?;
        check_range("concurrency.searches", concurrency.searches as u64, 1, 256)?;
        check_range(
            "concurrency.searches_per_principal",
            concurrency.searches_per_principal as u64,
            1,
            1024,
        )?;
        check_range(
            "concurrency.export_idle_timeout_seconds",
            concurrency.export_idle_timeout_seconds,
            1,
            MAX_INTERVAL_SECONDS,
        )?;
        check_range(
            "concurrency.unauthenticated_per_second",
            concurrency.unauthenticated_per_second.into(),
            1,
            1_000_000,
        )?;
        check_range(
            "concurrency.unauthenticated_burst",
            concurrency.unauthenticated_burst.into(),
            1,
            1_000_000,
        )?;
        check_range(
            "concurrency.unauthenticated_tarpit_ms",
            concurrency.unauthenticated_tarpit_ms,
            0,
            10_000,
        )?;
        check_range(
            "concurrency.refusal_window_seconds",
            concurrency.refusal_window_seconds,
            1,
            MAX_INTERVAL_SECONDS,
        )?;
        // Long operations, export reads and searches must leave blocking threads for
        // everything else (authentication and ingest do not use this pool at all).
        let reserved =
            concurrency.long_operations + concurrency.export_reads + concurrency.searches;
        if reserved * 2 > concurrency.blocking_threads {
            return invalid(format!(
                "concurrency.long_operations + concurrency.export_reads + concurrency.searches \
                 ({reserved}) must be at most half of concurrency.blocking_threads ({})",
                concurrency.blocking_threads
            ));
        }
        for token in &self.tokens {
            if crate::records::parse_token_hash(&token.sha256).is_none() {
                return invalid(format!(
                    "token {:?}: sha256 must be 64 hex digits",
                    token.name
                ));
            }
            if token.roles.is_empty() {
                return invalid(format!("token {:?}: roles must not be empty", token.name));
            }
            if let Some(app) = &token.otlp_app {
                if !plain_name(app) {
                    return invalid(format!(
                        "token {:?}: otlp_app must be 1 to 256 bytes without control characters",
                        token.name
                    ));
                }
            }
        }
        // Every OTLP span would be refused without a user attribute to read.
        if self.otlp.user_attributes.is_empty()
            || !self.otlp.user_attributes.iter().all(|key| plain_name(key))
        {
            return invalid(
                "otlp.user_attributes must name at least one attribute, each 1 to 256 bytes \
                 without control characters"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A name from the config that ends up in stored items or is compared with attribute keys.
fn plain_name(text: &str) -> bool {
    !text.trim().is_empty() && text.len() <= 256 && !text.chars().any(char::is_control)
}

/// Longest configurable interval: a year. Instants and times are computed by adding these to
/// "now", so they must stay far from where that sum overflows.
const MAX_INTERVAL_SECONDS: u64 = 366 * 24 * 3600;

/// Longest allowed clock skew of `created_at` into the future: a day.
const MAX_FUTURE_SKEW_SECONDS: i64 = 24 * 3600;

/// Refuses `value` outside `min..=max`, naming the key.
fn check_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{key} must be within {min}..={max}, not {value}"
        )))
    }
}

/// An address that may be `"off"`, since TOML has no null.
mod optional_address {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(text: &str) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
        match text {
            "off" | "" => Ok(None),
            other => other.parse().map(Some),
        }
    }

    pub fn serialize<S: Serializer>(
        address: &Option<SocketAddr>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match address {
            Some(address) => serializer.collect_str(address),
            None => serializer.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid address {text:?} (expected host:port or \"off\")"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_settings_are_checked() {
        for text in [
            "[otlp]\nuser_attributes = []\n",
            "[otlp]\nuser_attributes = [\"\"]\n",
        ] {
            let config: Config = toml::from_str(text).unwrap();
            assert!(config.validate().is_err(), "{text}");
        }
        let mut config = Config::default();
        config.tokens.push(ConfigToken {
            name: "backend".into(),
            sha256: "0".repeat(64),
            roles: vec![Role::Ingest],
            otlp_app: Some("line\nbreak".into()),
            otlp_metadata_only: false,
        });
        assert!(config.validate().is_err());
        config.tokens[0].otlp_app = Some("Contoso Chat".into());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let error = toml::from_str::<Config>("data_dir = \"x\"\nlisten_port = 1\n").unwrap_err();
        assert!(error.to_string().contains("listen_port"), "{error}");
        let error = toml::from_str::<Config>("[limits]\nmax_prompt = 3\n").unwrap_err();
        assert!(error.to_string().contains("max_prompt"), "{error}");
    }

    #[test]
    fn defaults_follow_the_spec() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(config.data_dir, PathBuf::from("./holdfast-data"));
        assert_eq!(config.limits.max_prompt_bytes, 1 << 20);
        assert_eq!(config.limits.max_batch_items, 1000);
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("holdfast.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7000\"\n[limits]\nmax_attributes = 3\n",
        )
        .unwrap();
        let flags = Flags {
            config: Some(path),
            listen: Some("127.0.0.1:7001".parse().unwrap()),
            metrics_listen: Some("off".into()),
            ..Flags::default()
        };
        let config = Config::load(&flags).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(config.metrics_listen, None);
        assert_eq!(config.limits.max_attributes, 3);
    }

    #[test]
    fn metrics_can_be_turned_off_in_the_file_and_the_config_prints_back() {
        let config: Config = toml::from_str("metrics_listen = \"off\"\n").unwrap();
        assert_eq!(config.metrics_listen, None);
        let printed = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<Config>(&printed).unwrap(), config);
        let printed = toml::to_string(&Config::default()).unwrap();
        assert_eq!(
            toml::from_str::<Config>(&printed).unwrap(),
            Config::default()
        );
        assert!(toml::from_str::<Config>("metrics_listen = \"nowhere\"\n").is_err());
    }

    #[test]
    fn plaintext_on_a_public_address_is_refused() {
        let config = Config {
            listen: "0.0.0.0:50051".parse().unwrap(),
            ..Config::default()
        };
        assert!(matches!(config.validate(), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn durations_sizes_and_limits_out_of_range_are_refused_naming_the_key() {
        for (text, key) in [
            (
                "[retention]\ndefault_retention_days = 4000000000\n",
                "retention.default_retention_days",
            ),
            (
                "[retention]\ndelay_hold_days = 40000\n",
                "retention.delay_hold_days",
            ),
            (
                "[retention]\nholds_area_minimum_age_hours = 4000000000\n",
                "retention.holds_area_minimum_age_hours",
            ),
            (
                "[retention]\nsweep_interval_seconds = 18446744073709551615\n",
                "retention.sweep_interval_seconds",
            ),
            (
                "[retention]\npurge_max_per_mailbox = 0\n",
                "retention.purge_max_per_mailbox",
            ),
            (
                "[limits]\nmax_future_skew_seconds = 9223372036854775807\n",
                "limits.max_future_skew_seconds",
            ),
            (
                "[limits]\nmax_future_skew_seconds = -1\n",
                "limits.max_future_skew_seconds",
            ),
            ("[limits]\nmax_batch_items = 0\n", "limits.max_batch_items"),
            (
                "[index]\ncommit_interval_ms = 0\n",
                "index.commit_interval_ms",
            ),
            ("max_group_commit_items = 0\n", "max_group_commit_items"),
            (
                "[concurrency]\nexports_per_principal = 0\n",
                "concurrency.exports_per_principal",
            ),
            (
                "[concurrency]\nexport_idle_timeout_seconds = 18446744073709551615\n",
                "concurrency.export_idle_timeout_seconds",
            ),
            (
                "[concurrency]\nlong_operations = 30\nblocking_threads = 32\n",
                "concurrency.long_operations",
            ),
        ] {
            let config: Config = toml::from_str(text).unwrap();
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
        Config::default().validate().unwrap();
    }

    #[test]
    fn a_config_token_needs_a_real_hash() {
        let config: Config =
            toml::from_str("[[tokens]]\nname = \"x\"\nsha256 = \"abc\"\nroles = [\"ingest\"]\n")
                .unwrap();
        assert!(config.validate().is_err());
    }

    #[test]
    fn leaf_tls_settings_are_checked_before_anything_starts() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let not_pem = dir.path().join("not.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(&not_pem, "just text").unwrap();
        let config = |ca: &std::path::Path, tls: bool, domain: &str| -> Config {
            let tls = if tls {
                "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n"
            } else {
                ""
            };
            toml::from_str(&format!(
                "{tls}[cluster]\nnode = \"n1\"\ns3_endpoint = \"http://127.0.0.1:1\"\n\
                 s3_bucket = \"b\"\nnode_ca_file = {ca:?}\nnode_tls_domain = {domain:?}\n"
            ))
            .unwrap()
        };
        config(&ca, true, "holdfast.internal").validate().unwrap();
        config(&ca, true, "10.0.0.1").validate().unwrap();
        let refused = |config: Config| config.validate().unwrap_err().to_string();
        assert!(refused(config(&ca, false, "a")).contains("needs [tls]"));
        assert!(refused(config(&not_pem, true, "a")).contains("no PEM certificate"));
        assert!(refused(config(&dir.path().join("gone.pem"), true, "a")).contains("node_ca_file"));
        assert!(refused(config(&ca, true, "a b/c")).contains("node_tls_domain"));
    }
}
