//! `holdfast-bench hostile`: what hostile load does to honest callers (issue 8, defects 2
//! and 5). Starts a server in this process (on its own runtime, sized like the real binary's)
//! with a fresh data directory, then runs three phases of `--seconds` each, every phase with
//! `--ingest-callers` unary ingest callers and one authorised reader (`GetInteraction` in a
//! loop):
//! 1. `baseline`: nothing else;
//! 2. `flood`: plus `--flooders` callers sending `Ingest` with a bad token as fast as they can
//!    (from a child process, `holdfast-bench flood`, as from another client);
//! 3. `stalled_exports`: plus `--stalled-exports` export streams (one principal, one
//!    connection) whose client never reads.
//!
//! Reports per phase: ingest interactions/s and p50/p99 per request, the reader's p50/p99, and
//! the flood's answers; then the audit entries the flood left.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use hdrhistogram::Histogram;
use holdfast_client::{pb, ClientConfig, HoldfastClient, InteractionBuilder};
use holdfast_server::auth::{hash_token, Role};
use holdfast_server::config::ConfigToken;

pub(crate) const INGEST_TOKEN: &str = "hf_bench_ingest";
const REVIEWER_TOKEN: &str = "hf_bench_reviewer";
const AUDITOR_TOKEN: &str = "hf_bench_auditor";
pub(crate) const ADMIN_TOKEN: &str = "hf_bench_admin";

#[derive(Debug, clap::Args)]
pub struct HostileArgs {
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent unary ingest callers.
    #[arg(long, default_value_t = 4)]
    ingest_callers: usize,
    /// Interactions per ingest request (1-2 KB each).
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Callers flooding with a bad token.
    #[arg(long, default_value_t = 16)]
    flooders: usize,
    /// Export streams that are opened and never read.
    #[arg(long, default_value_t = 24)]
    stalled_exports: usize,
    /// Data directory (default: a temporary one).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

pub(crate) struct Server {
    pub(crate) addr: String,
    pub(crate) stop: tokio_util::sync::CancellationToken,
    pub(crate) thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

pub(crate) fn start_server(data_dir: std::path::PathBuf) -> anyhow::Result<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let token = |name: &str, token: &str, role: Role| ConfigToken {
        name: name.into(),
        sha256: hex_of(&hash_token(token)),
        roles: vec![role],
        otlp_app: None,
        otlp_metadata_only: false,
    };
    let config = holdfast_server::Config {
        data_dir,
        listen: format!("127.0.0.1:{port}").parse()?,
        metrics_listen: None,
        http_listen: None,
        tokens: vec![
            token("bench-ingest", INGEST_TOKEN, Role::Ingest),
            token("bench-reviewer", REVIEWER_TOKEN, Role::Ediscovery),
            token("bench-auditor", AUDITOR_TOKEN, Role::Auditor),
            token("bench-admin", ADMIN_TOKEN, Role::Admin),
        ],
        ..holdfast_server::Config::default()
    };
    config.validate()?;
    let (ready_sender, ready) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        // The same runtime shape as `holdfast-server`.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("holdfast")
            .max_blocking_threads(config.concurrency.blocking_threads)
            .build()?;
        runtime.block_on(async move {
            let server = holdfast_server::start(config).await?;
            let _ = ready_sender.send(server.shutdown_token());
            server.wait().await
        })
    });
    let stop = ready.recv().context("the server did not start")?;
    Ok(Server {
        addr: format!("http://127.0.0.1:{port}"),
        stop,
        thread,
    })
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) async fn connect(addr: &str, token: &str) -> anyhow::Result<HoldfastClient> {
    Ok(HoldfastClient::connect(ClientConfig {
        addr: addr.to_string(),
        token: token.to_string(),
        tls: None,
    })
    .await?)
}

fn text(seed: u64, bytes: usize) -> String {
    const WORDS: [&str; 16] = [
        "budget", "forecast", "meeting", "summary", "customer", "invoice", "travel", "policy",
        "draft", "review", "quarter", "project", "deadline", "report", "contract", "team",
    ];
    let mut state = seed | 1;
    let mut out = String::with_capacity(bytes + 16);
    while out.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push_str(WORDS[(state % 16) as usize]);
        out.push(' ');
    }
    out
}

pub(crate) fn batch(run: &str, first: u64, count: usize) -> Vec<pb::InteractionInput> {
    (first..first + count as u64)
        .map(|n| {
            InteractionBuilder::new(
                format!("user{}@bench.example", n % 50),
                format!("{run}-{n}"),
            )
            .app("BizChat")
            .created_at(Utc::now() - chrono::TimeDelta::minutes(1))
            .prompt(text(n, 700 + (n % 700) as usize))
            .response(text(n + 1, 500))
            .build()
        })
        .collect()
}

#[derive(Default)]
struct Phase {
    ingested: AtomicU64,
    ingest_latency: Mutex<Option<Histogram<u64>>>,
    read_latency: Mutex<Option<Histogram<u64>>>,
    flood_unauthenticated: AtomicU64,
    flood_limited: AtomicU64,
    flood_other: AtomicU64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("valid histogram")
}

fn record(slot: &Mutex<Option<Histogram<u64>>>, latency: Duration) {
    let mut slot = slot.lock().unwrap();
    let _ = slot
        .get_or_insert_with(histogram)
        .record(latency.as_micros() as u64);
}

/// Runs ingest callers, one reader and `flooders` for `seconds`; returns the phase's report.
async fn run_phase(
    name: &str,
    addr: &str,
    args: &HostileArgs,
    read_id: &str,
    flooders: usize,
) -> anyhow::Result<serde_json::Value> {
    let phase = Arc::new(Phase::default());
    let done = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let run = format!("{name}{}", Utc::now().timestamp_millis());
    let mut tasks = Vec::new();
    for _ in 0..args.ingest_callers {
        let client = connect(addr, INGEST_TOKEN).await?;
        let (phase, done, next, run) = (phase.clone(), done.clone(), next.clone(), run.clone());
        let size = args.batch;
        tasks.push(tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let first = next.fetch_add(size as u64, Ordering::Relaxed);
                let items = batch(&run, first, size);
                let sent = Instant::now();
                let response = client.ingest(items).await?;
                record(&phase.ingest_latency, sent.elapsed());
                phase
                    .ingested
                    .fetch_add(response.results.len() as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    {
        let client = connect(addr, INGEST_TOKEN).await?;
        let (phase, done, id) = (phase.clone(), done.clone(), read_id.to_string());
        tasks.push(tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let sent = Instant::now();
                client.get(&id).await?;
                record(&phase.read_latency, sent.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok(())
        }));
    }
    // The flood comes from another process (`holdfast-bench flood`), as it would from
    // another client: its CPU is not counted as the server's.
    let flood = if flooders > 0 {
        Some(
            tokio::process::Command::new(std::env::current_exe()?)
                .args(["flood", "--addr", addr, "--callers"])
                .arg(flooders.to_string())
                .arg("--seconds")
                .arg(args.seconds.to_string())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start the flood process")?,
        )
    } else {
        None
    };
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    done.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    if let Some(flood) = flood {
        let output = flood.wait_with_output().await?;
        anyhow::ensure!(output.status.success(), "the flood process failed");
        let answers: FloodAnswers = serde_json::from_slice(&output.stdout)?;
        phase
            .flood_unauthenticated
            .store(answers.unauthenticated, Ordering::Relaxed);
        phase
            .flood_limited
            .store(answers.resource_exhausted, Ordering::Relaxed);
        phase.flood_other.store(answers.other, Ordering::Relaxed);
    }
    let seconds = started.elapsed().as_secs_f64();
    let ms = |h: &Mutex<Option<Histogram<u64>>>, q: f64| {
        h.lock()
            .unwrap()
            .as_ref()
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
    };
    Ok(serde_json::json!({
        "phase": name,
        "seconds": seconds,
        "ingest_interactions_per_second": phase.ingested.load(Ordering::Relaxed) as f64 / seconds,
        "ingest_request_ms": { "p50": ms(&phase.ingest_latency, 0.5), "p99": ms(&phase.ingest_latency, 0.99) },
        "authorised_read_ms": { "p50": ms(&phase.read_latency, 0.5), "p99": ms(&phase.read_latency, 0.99) },
        "flood_answers": {
            "unauthenticated": phase.flood_unauthenticated.load(Ordering::Relaxed),
            "resource_exhausted": phase.flood_limited.load(Ordering::Relaxed),
            "other": phase.flood_other.load(Ordering::Relaxed),
        },
    }))
}

#[derive(Debug, clap::Args)]
pub struct FloodArgs {
    /// The server to flood.
    #[arg(long)]
    addr: String,
    /// Callers, each on its own connection with its own bad token.
    #[arg(long, default_value_t = 16)]
    callers: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct FloodAnswers {
    unauthenticated: u64,
    resource_exhausted: u64,
    other: u64,
}

/// `holdfast-bench flood`: `Ingest` calls with bad tokens, as fast as the server answers;
/// prints how they were answered (JSON).
pub async fn flood(args: FloodArgs) -> anyhow::Result<()> {
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for caller in 0..args.callers {
        let client = connect(&args.addr, &format!("hf_bad_token_{caller}")).await?;
        let (counts, done) = (counts.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let answer = client.ingest(batch("flood", 0, 1)).await;
                let slot = match answer.err().and_then(|e| e.code()) {
                    Some(tonic::Code::Unauthenticated) => 0,
                    Some(tonic::Code::ResourceExhausted) => 1,
                    _ => 2,
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    done.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    println!(
        "{}",
        serde_json::to_string(&FloodAnswers {
            unauthenticated: counts[0].load(Ordering::Relaxed),
            resource_exhausted: counts[1].load(Ordering::Relaxed),
            other: counts[2].load(Ordering::Relaxed),
        })?
    );
    Ok(())
}

/// A case whose export is far larger than every flow-control window.
async fn export_case(addr: &str) -> anyhow::Result<String> {
    let backend = connect(addr, INGEST_TOKEN).await?;
    let big = text(7, 100_000);
    let items: Vec<_> = (0..40)
        .map(|n| {
            InteractionBuilder::new("exported@bench.example", format!("big-{n}"))
                .app("Word")
                .created_at(Utc::now() - chrono::TimeDelta::minutes(1))
                .prompt(format!("ledger {big}"))
                .response("ok")
                .build()
        })
        .collect();
    backend.ingest(items).await?;
    let reviewer = connect(addr, REVIEWER_TOKEN).await?;
    let case = reviewer
        .create_case(pb::CreateCaseRequest {
            name: format!("bench {}", Utc::now().timestamp_millis()),
            custodians: vec!["exported@bench.example".into()],
            ..Default::default()
        })
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = reviewer
            .search(pb::SearchRequest {
                case_id: case.id.clone(),
                query: "ledger".into(),
                ..Default::default()
            })
            .await?;
        if found.total == 40 {
            return Ok(case.id);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the export items were not indexed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(args: HostileArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().join("data"));
    let server = start_server(data_dir)?;
    let addr = server.addr.clone();
    let backend = connect(&addr, INGEST_TOKEN).await?;
    let seeded = backend.ingest(batch("seed", 0, 1)).await?;
    let read_id = seeded.results[0].id.clone();

    // A first phase warms the server up (first flushes and index commits); not reported.
    run_phase("warmup", &addr, &args, &read_id, 0).await?;
    let mut phases = Vec::new();
    phases.push(run_phase("baseline", &addr, &args, &read_id, 0).await?);
    phases.push(run_phase("flood", &addr, &args, &read_id, args.flooders).await?);
    let case_id = export_case(&addr).await?;
    let exporter = connect(&addr, REVIEWER_TOKEN).await?;
    let mut stalled = Vec::new();
    for _ in 0..args.stalled_exports {
        stalled.push(
            exporter
                .export(pb::ExportRequest {
                    case_id: case_id.clone(),
                    query: "ledger".into(),
                    ..Default::default()
                })
                .await?,
        );
    }
    phases.push(run_phase("stalled_exports", &addr, &args, &read_id, 0).await?);
    drop(stalled);

    let auditor = connect(&addr, AUDITOR_TOKEN).await?;
    let audit_entries = auditor.verify_audit_log().await?.num_entries;
    server.stop.cancel();
    server
        .thread
        .join()
        .map_err(|_| anyhow::anyhow!("the server thread panicked"))??;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "ingest_callers": args.ingest_callers,
            "batch": args.batch,
            "flooders": args.flooders,
            "stalled_exports": args.stalled_exports,
            "phases": phases,
            "audit_entries_before_shutdown": audit_entries,
        }))?
    );
    Ok(())
}
