//! Wiring: opens the store, loads tokens, starts the writer, serves gRPC (with health and
//! reflection) and metrics, and shuts down gracefully.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use holdfast_proto::v1::admin_service_server::AdminServiceServer;
use holdfast_proto::v1::audit_service_server::AuditServiceServer;
use holdfast_proto::v1::discovery_service_server::DiscoveryServiceServer;
use holdfast_proto::v1::interaction_service_server::InteractionServiceServer;
use holdfast_proto::v1::retention_service_server::RetentionServiceServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::admission::Admission;
use crate::app::App;
use crate::audit::AuditLog;
use crate::auth::{bootstrap_admin_token, TokenRegistry};
use crate::config::Config;
use crate::ingest::GroupCommitter;
use crate::lifecycle::Lifecycle;
use crate::page_token::PageTokens;
use crate::refusals::Refusals;
use crate::search;
use crate::search::index::IndexSettings;
use crate::search::searcher::Snapshots;
use crate::service::{
    AdminApi, AuditApi, DiscoveryApi, InteractionApi, OtlpTraceApi, RetentionApi,
};
use crate::store::s3::S3Config;
use crate::store::{ClusterStore, RocksStore, Store};
use crate::sweeper::{self, Sweeper};
use crate::workers::WorkerPool;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;

/// How long an unused page of search results stays pinned.
const SNAPSHOT_IDLE_TTL: Duration = Duration::from_secs(600);
/// How long a snapshot stays pinned at most, used or not: a pinned snapshot keeps deleted
/// segments (and the text of destroyed items in them) on disk.
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(3600);

/// How long shutdown waits for in-flight calls and streams.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// How long shutdown waits for the writer to finish queued writes.
const WRITER_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A server running in this process.
pub struct RunningServer {
    pub local_addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Starts graceful shutdown and waits for it to finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("server task panicked")?
    }

    /// Waits until the server stops (after `trigger` is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task panicked")?
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

fn create_data_dir(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create data directory {}", path.display()))
}

/// Opens everything and starts serving; returns once the listener is bound.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    config.validate()?;
    create_data_dir(&config.data_dir)?;
    crate::backup::check_not_half_restored(&config.data_dir)?;
    let (store, data_dir_is_new, cluster_store) = open_store(&config)?;
    let tokens = Arc::new(TokenRegistry::load(store.clone(), &config.tokens)?);
    if config.cluster.is_some() {
        spawn_token_refresher(&tokens);
    }
    if let Some(path) = bootstrap_admin_token(
        &tokens,
        &config.data_dir,
        data_dir_is_new,
        chrono::Utc::now(),
    )? {
        tracing::warn!(
            path = %path.display(),
            "no tokens were configured: generated an admin token (mode 0600)"
        );
    } else if tokens.is_empty() && config.cluster.is_some() {
        tracing::error!(
            "no token can call this cluster: add one to every node's config file ([[tokens]], \
             `holdfast token hash` prints its sha256) and restart"
        );
    } else if tokens.is_empty() {
        tracing::error!(
            "no token can call this server: every token was revoked and no admin token is \
             minted for an existing data directory; add one to the config file ([[tokens]], \
             `holdfast token hash` prints its sha256) and restart"
        );
    }
    let audit = Arc::new(AuditLog::open(store.clone())?);
    // Changes saved just before a crash get the audit entries they still owe.
    // In a cluster, only intents a stopped node left: one hour is longer than any action
    // takes between saving its change and appending its entry.
    let intent_age = if config.cluster.is_some() {
        chrono::TimeDelta::hours(1)
    } else {
        chrono::TimeDelta::zero()
    };
    let recovered = crate::audit_intent::recover_older_than(
        store.as_ref(),
        &audit,
        chrono::Utc::now(),
        intent_age,
    )
    .context("cannot append the audit entries owed by changes saved before a crash")?;
    if recovered > 0 {
        tracing::warn!(recovered, "audited changes saved before the last stop");
    }
    let page_tokens =
        PageTokens::load_or_create(&*store).context("cannot load the page token key")?;
    let shutdown = CancellationToken::new();
    let index_settings = IndexSettings {
        commit_interval: Duration::from_millis(config.index.commit_interval_ms),
        max_lag: config.index.max_lag,
    };
    // The indexer stops on its own token, after the writer has drained.
    let indexer_stop = CancellationToken::new();
    let splits = config
        .cluster
        .as_ref()
        .filter(|cluster| cluster.search == crate::config::ClusterSearch::Splits)
        .zip(cluster_store);
    let (index, indexer, fanout) = match splits {
        Some((cluster, cluster_store)) => {
            let holder = lease_holder(&cluster.node);
            let (index, indexer, split_search) = search::splits::start(
                &config.data_dir.join("splits"),
                Arc::clone(&cluster_store),
                index_settings,
                &holder,
                indexer_stop.clone(),
            )
            .context("cannot open the search splits")?;
            // Where the other nodes reach this one: as configured, else the listen address
            // unless it is a wildcard.
            let advertise = cluster.advertise.clone().or_else(|| {
                (!config.listen.ip().is_unspecified() && config.listen.port() != 0)
                    .then(|| config.listen.to_string())
            });
            // With TLS, leaf searches between nodes are over TLS too, checked against
            // `node_ca_file`; without it this node is not asked (never plain text beside a
            // TLS front door).
            let leaf_tls = match (&config.tls, &cluster.node_ca_file) {
                (Some(tls), Some(ca)) => Some(search::fanout::LeafTls {
                    ca: Certificate::from_pem(read(ca)?),
                    identity: Some(Identity::from_pem(
                        read(&tls.cert_file)?,
                        read(&tls.key_file)?,
                    )),
                    domain: cluster.node_tls_domain.clone(),
                }),
                // `Config::validate` refuses a node_ca_file without [tls].
                _ => None,
            };
            match &advertise {
                Some(address) if config.tls.is_none() => cluster_store
                    .register_search_node(&holder, address)
                    .context("cannot register this node's address for leaf searches")?,
                Some(address) if leaf_tls.is_some() => cluster_store
                    .register_search_node(&holder, &format!("https://{address}"))
                    .context("cannot register this node's address for leaf searches")?,
                Some(_) => tracing::warn!(
                    "cluster.advertise is ignored: with [tls], leaf searches between nodes \
                     need cluster.node_ca_file; this node searches every split it needs itself"
                ),
                None => {}
            }
            let node_key = match &cluster.node_key_file {
                Some(path) => {
                    let key = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?
                        .trim()
                        .to_string();
                    let visible = key.bytes().all(|b| b.is_ascii_graphic());
                    if !(32..=256).contains(&key.len()) || !visible {
                        anyhow::bail!(
                            "{}: the node key must be 32 to 256 visible ASCII characters",
                            path.display()
                        );
                    }
                    key
                }
                None => page_tokens.derive_secret(search::fanout::NODE_KEY_PURPOSE),
            };
            let fanout = search::fanout::FanOut::new(
                split_search,
                &holder,
                node_key,
                leaf_tls,
                config.tls.is_none(),
                tokio::runtime::Handle::current(),
            );
            (index, indexer, Some(Arc::new(fanout)))
        }
        None => {
            let (index, indexer) = search::index::start(
                &config.data_dir.join("index"),
                Arc::clone(&store),
                index_settings,
                indexer_stop.clone(),
            )
            .context("cannot open the search index")?;
            (index, indexer, None)
        }
    };
    let lifecycle = Arc::new(
        Lifecycle::load(Arc::clone(&store), &config.retention)
            .context("cannot load retention policies")?,
    );
    let (committer, writer) = GroupCommitter::start(
        Arc::clone(&store),
        Arc::clone(&lifecycle),
        config.max_group_commit_items,
    );
    let sweep_interval = Duration::from_secs(config.retention.sweep_interval_seconds);
    let mut sweeper = Sweeper::new(
        Arc::clone(&store),
        Arc::clone(&lifecycle),
        Arc::clone(&index),
        Arc::clone(&audit),
        sweep_interval,
    )
    .with_erasure_bound(Duration::from_secs(config.retention.erasure_bound_seconds))
    .with_fanout(fanout.clone());
    if let Some(cluster) = &config.cluster {
        // One sweeper across the cluster: the holder of the lease. A restarted node is a new
        // holder: it took its predecessor's leases back at start (`open_store`), with a new
        // epoch that fences anything the predecessor still writes.
        sweeper = sweeper.with_lease(lease_holder(&cluster.node));
    }
    let sweeper = Arc::new(sweeper);
    let (sweep_requests, sweeper_thread) = sweeper::start(Arc::clone(&sweeper), sweep_interval);
    let refusals = Refusals::new(&config.concurrency);
    let flusher_stop = CancellationToken::new();
    let flusher = refusals.start_flusher(Arc::clone(&audit), flusher_stop.clone());
    let app = Arc::new(App {
        store,
        tokens,
        audit,
        committer,
        index,
        snapshots: Snapshots::new(SNAPSHOT_IDLE_TTL, SNAPSHOT_MAX_AGE),
        fanout,
        pinned_plans: Snapshots::new(SNAPSHOT_IDLE_TTL, SNAPSHOT_MAX_AGE),
        page_tokens,
        limits: config.limits.clone(),
        retention: config.retention.clone(),
        lifecycle,
        sweeper,
        sweep_requests,
        shutdown: shutdown.clone(),
        admission: Admission::new(&config.concurrency),
        ingest_workers: WorkerPool::start("holdfast-ingest", config.concurrency.ingest_threads),
        refusals: Arc::clone(&refusals),
        concurrency: config.concurrency.clone(),
        data_dir: config.data_dir.clone(),
        backup_running: Arc::new(tokio::sync::Mutex::new(())),
        min_free_disk_bytes: config.min_free_disk_mb.saturating_mul(1 << 20),
        cases_lock: tokio::sync::Mutex::new(()),
        otlp: crate::app::otlp::OtlpSettings::new(&config.otlp, &config.tokens),
    });

    if let Some(metrics_addr) = config.metrics_listen {
        install_metrics(metrics_addr)?;
    }

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<InteractionServiceServer<InteractionApi>>()
        .await;
    // Reflection in both versions: grpcurl speaks v1, Python's grpcio-reflection and other
    // clients still v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(holdfast_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .context("cannot build the reflection service")?;
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .context("cannot build the reflection service (v1alpha)")?;

    // Room for protobuf framing around the largest allowed request.
    let max_message = config.limits.max_request_bytes + (64 << 10);
    let interactions = InteractionServiceServer::new(InteractionApi::new(Arc::clone(&app)))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let admin = AdminServiceServer::new(AdminApi::new(Arc::clone(&app)));
    let audit_service = AuditServiceServer::new(AuditApi::new(Arc::clone(&app)));
    let discovery = DiscoveryServiceServer::new(DiscoveryApi::new(Arc::clone(&app)))
        .max_encoding_message_size(64 << 20);

    // Calls without a valid token are refused from their headers, before any body is read.
    let gate = crate::gate::Gate::new(
        Arc::clone(&app),
        Duration::from_millis(config.concurrency.unauthenticated_tarpit_ms),
    );
    // Streams per connection are bounded (tonic otherwise lifts hyper's default and allows
    // any number), and idle connections are probed so that dead peers are dropped.
    let handlers = gate.handlers();
    let mut builder = Server::builder()
        .max_concurrent_streams(Some(crate::gate::MAX_STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .tcp_keepalive(Some(Duration::from_secs(60)));
    if let Some(tls) = &config.tls {
        let cert = read(&tls.cert_file)?;
        let key = read(&tls.key_file)?;
        let mut tls_config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &tls.client_ca_file {
            tls_config = tls_config.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        builder = builder
            .tls_config(tls_config)
            .context("invalid TLS configuration")?;
    }
    let router = builder
        .layer(gate)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(interactions)
        .add_service(admin)
        .add_service(audit_service)
        .add_service(discovery)
        .add_service(RetentionServiceServer::new(RetentionApi::new(Arc::clone(
            &app,
        ))))
        .add_service(
            // OTLP exporters may gzip (OTEL_EXPORTER_OTLP_COMPRESSION); the limit applies to
            // the decompressed message.
            TraceServiceServer::new(OtlpTraceApi::new(Arc::clone(&app)))
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .max_decoding_message_size(max_message),
        )
        // Leaf searches from the other nodes (cluster, search in splits).
        .add_optional_service(app.fanout.as_ref().map(|_| {
            holdfast_proto::cluster::v1::leaf_service_server::LeafServiceServer::new(
                crate::service::LeafApi::new(Arc::clone(&app)),
            )
            .max_encoding_message_size(256 << 20)
            // A plan's tombstones can be many; the door checked the node key before this.
            .max_decoding_message_size(256 << 20)
        }));

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local_addr = listener.local_addr()?;
    // The HTTP/JSON front door: the same application, tokens, refusal counting and handler
    // tracking as gRPC.
    let http_task = match config.http_listen {
        Some(address) => {
            let http_listener = crate::http::bind(address).await?;
            let http_addr = http_listener.local_addr()?;
            let tls = config
                .tls
                .as_ref()
                .map(crate::http::tls_acceptor)
                .transpose()?;
            let router = crate::http::router(
                Arc::clone(&app),
                Duration::from_millis(config.concurrency.unauthenticated_tarpit_ms),
                handlers.clone(),
                tls.is_some(),
            );
            tracing::info!(address = %http_addr, tls = tls.is_some(), "HTTP API listening");
            Some(tokio::spawn(crate::http::serve(
                http_listener,
                router,
                tls,
                shutdown.clone(),
                SHUTDOWN_GRACE,
            )))
        }
        None => None,
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tracing::info!(
        address = %local_addr,
        tls = config.tls.is_some(),
        data_dir = %config.data_dir.display(),
        "holdfast-server listening"
    );

    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let mut serve =
            Box::pin(router.serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()));
        // In-flight calls get a grace period; a client that stopped reading a stream must not
        // keep the server (and the writer's drain) waiting forever.
        let served = tokio::select! {
            served = &mut serve => served,
            () = async {
                stop.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!(
                    grace_seconds = SHUTDOWN_GRACE.as_secs(),
                    "calls still open after the shutdown grace period; closing them"
                );
                Ok(())
            }
        };
        drop(serve);
        if let Some(http_task) = http_task {
            let _ = http_task.await;
        }
        // Admitted calls run on tasks of their own (`gate.rs`): they finish (and audit) before
        // the store closes, within the grace period.
        if tokio::time::timeout(SHUTDOWN_GRACE, handlers.wait())
            .await
            .is_err()
        {
            tracing::warn!("calls still running after the shutdown grace period");
        }
        // The refusals counted since the last window are audited before the log closes.
        flusher_stop.cancel();
        let _ = flusher.await;
        refusals.flush(&app.audit).await;
        health_reporter
            .set_not_serving::<InteractionServiceServer<InteractionApi>>()
            .await;
        drop(app);
        // Every sender is gone once in-flight requests have finished: the writer drains the
        // queue and stops.
        let joined = tokio::time::timeout(
            WRITER_DRAIN_TIMEOUT,
            tokio::task::spawn_blocking(move || writer.join()),
        )
        .await;
        if joined.is_err() {
            tracing::error!("the ingest writer did not stop in time");
        }
        // The sweeper stops once its request channel is gone (it finishes a pass first; every
        // step it writes is atomic, so stopping between steps loses nothing).
        let _ = tokio::task::spawn_blocking(move || sweeper_thread.join()).await;
        // Everything written is queued for the index; the indexer commits what it has.
        indexer_stop.cancel();
        let _ = tokio::task::spawn_blocking(move || indexer.join()).await;
        served.context("gRPC server failed")?;
        tracing::info!("holdfast-server stopped");
        Ok(())
    });
    Ok(RunningServer {
        local_addr,
        shutdown,
        task,
    })
}

/// In a cluster, tokens are created and revoked on any node: each node reads them again
/// every `TOKEN_REFRESH`, so a revocation takes effect everywhere within it.
fn spawn_token_refresher(tokens: &Arc<TokenRegistry>) {
    let tokens = Arc::downgrade(tokens);
    std::thread::Builder::new()
        .name("holdfast-tokens".into())
        .spawn(move || loop {
            std::thread::sleep(TOKEN_REFRESH);
            let Some(tokens) = tokens.upgrade() else {
                return;
            };
            if let Err(error) = tokens.refresh() {
                tracing::warn!(%error, "cannot read the tokens again; the known ones stay");
            }
        })
        .expect("threads start");
}

/// How soon a token created or revoked on one node of a cluster counts on the others.
const TOKEN_REFRESH: Duration = Duration::from_secs(2);

/// This run of node `node` as a lease holder (`<node>/<run>`): the same for every lease.
fn lease_holder(node: &str) -> String {
    static RUN: std::sync::OnceLock<ulid::Ulid> = std::sync::OnceLock::new();
    format!("{node}/{}", RUN.get_or_init(ulid::Ulid::new))
}

type OpenedStore = (Arc<dyn Store>, bool, Option<Arc<ClusterStore>>);

/// The store the configuration asks for, and whether it is new (a new embedded data
/// directory gets a bootstrap admin token; a cluster never does: its tokens come from the
/// config files), and the cluster store when it is one.
fn open_store(config: &Config) -> anyhow::Result<OpenedStore> {
    let Some(cluster) = &config.cluster else {
        let store_path = config.data_dir.join("store");
        // RocksDB writes CURRENT when it creates a store: without it the data directory is new.
        let data_dir_is_new = !store_path.join("CURRENT").exists();
        let store = RocksStore::open_with(&store_path, config.storage.compression)
            .with_context(|| format!("cannot open the store at {}", store_path.display()))?;
        return Ok((Arc::new(store), data_dir_is_new, None));
    };
    let secrets = cluster.secrets()?;
    // The URL holds a password: the error names neither.
    let postgres: postgres::Config = secrets
        .postgres_url
        .parse()
        .map_err(|_| anyhow::anyhow!("the PostgreSQL URL of [cluster] is not a valid URL"))?;
    let s3 = S3Config {
        endpoint: cluster.s3_endpoint.clone(),
        region: cluster.s3_region.clone(),
        bucket: cluster.s3_bucket.clone(),
        access_key: secrets.s3_access_key,
        secret_key: secrets.s3_secret_key,
    };
    let store = Arc::new(
        ClusterStore::open(postgres, cluster.max_connections, &s3, &cluster.node)
            .context("cannot open the cluster store (PostgreSQL and S3)")?,
    );
    store.spawn_feed_head_refresher();
    let holder = lease_holder(&cluster.node);
    let released = store
        .release_leases_of_node(&cluster.node, &holder)
        .context("cannot release the leases of this node's previous run")?;
    if released > 0 {
        tracing::info!(released, "took back the leases of this node's previous run");
    }
    store.spawn_janitor(holder);
    tracing::info!(node = %cluster.node, bucket = %cluster.s3_bucket, "cluster mode");
    Ok((store.clone(), false, Some(store)))
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn install_metrics(addr: SocketAddr) -> anyhow::Result<()> {
    let latency_buckets = [
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
    let size_buckets = [1.0, 10.0, 100.0, 500.0, 1000.0, 5000.0, 20000.0];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &latency_buckets,
        )?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_items".into()),
            &size_buckets,
        )?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_requests".into()),
            &size_buckets,
        )?
        .install()
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    tracing::info!(address = %addr, "prometheus metrics listening");
    Ok(())
}
