//! `holdfast-bench`: a load generator for durable ingest over gRPC.
//!
//! Builds interactions of 1–4 KB from real conversational text (the chitchat JSONL made by
//! `scripts/fetch-chitchat.sh`, turns joined to reach the size), sends them with C
//! concurrent callers (unary `Ingest` or `IngestStream`), and reports interactions/s, the
//! p50/p99/max acknowledgement latency per request, and the server's peak RSS.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::{TimeZone, Utc};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use holdfast_client::{pb, ClientConfig, HoldfastClient, InteractionBuilder};

mod backup;
mod console;
mod hostile;
mod http_ingest;
mod otlp_ingest;
mod search;
mod sweep;
use search::SearchArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// Unary `Ingest` calls.
    Unary,
    /// `IngestStream`, several batches in flight per stream.
    Stream,
    /// `POST /api/v1/interactions` over HTTP/1.1 with JSON bodies (`--http-addr`).
    Http,
    /// OTLP/gRPC `TraceService/Export`: one GenAI `chat` span per interaction.
    Otlp,
}

#[derive(Debug, Parser)]
#[command(name = "holdfast-bench", about = "Load generator for holdfast")]
enum Bench {
    /// Durable ingest over gRPC.
    Ingest(Args),
    /// Search latency per query shape, and time until a new item is searchable.
    Search(SearchArgs),
    /// The console's search page in headless Chromium (Performance API timings).
    Console(console::ConsoleArgs),
    /// Sweeper throughput (moves, destructions), nothing-due passes, ingest during a sweep.
    Sweep(sweep::SweepArgs),
    /// Honest callers under a flood of bad tokens and with stalled exports.
    Hostile(hostile::HostileArgs),
    /// Ingest calls with bad tokens as fast as the server answers (started by `hostile`).
    Flood(hostile::FloodArgs),
    /// An online backup of a large store while ingest runs; verify and restore times.
    Backup(backup::BackupArgs),
}

#[derive(Debug, clap::Args)]
struct Args {
    #[arg(long, env = "HOLDFAST_ADDR", default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// The HTTP front door (`--mode http`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http_addr: String,
    #[arg(long, env = "HOLDFAST_TOKEN")]
    token: Option<String>,
    #[arg(long, default_value = "./holdfast-data/admin.token")]
    token_file: std::path::PathBuf,
    /// Chitchat JSON Lines file (real text).
    #[arg(long)]
    file: std::path::PathBuf,
    /// Interactions to send.
    #[arg(long, short = 'n', default_value_t = 200_000)]
    count: u64,
    /// Concurrent callers (unary) or streams.
    #[arg(long, short = 'c', default_value_t = 4)]
    concurrency: usize,
    /// Interactions per request.
    #[arg(long, short = 'b', default_value_t = 200)]
    batch: u64,
    #[arg(long, value_enum, default_value = "stream")]
    mode: Mode,
    /// Requests in flight per stream (stream mode).
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Smallest and largest interaction text, in bytes.
    #[arg(long, default_value_t = 1024)]
    min_bytes: usize,
    #[arg(long, default_value_t = 4096)]
    max_bytes: usize,
    /// Server process id, to report its peak RSS (VmHWM) after the run.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Prefix of client keys; defaults to a fresh one per run.
    #[arg(long)]
    run_id: Option<String>,
}

/// Text pairs of 1–4 KB made by joining consecutive conversation turns.
fn load_texts(args: &Args) -> anyhow::Result<Vec<(String, String, String)>> {
    let text = std::fs::read_to_string(&args.file).with_context(|| {
        format!(
            "cannot read {} (run scripts/fetch-chitchat.sh)",
            args.file.display()
        )
    })?;
    let mut turns = Vec::new();
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line)?;
        let mailbox = value["mailbox_id"]
            .as_str()
            .unwrap_or("bench@example.com")
            .to_string();
        turns.push((
            mailbox,
            value["prompt"].as_str().unwrap_or_default().to_string(),
            value["response"].as_str().unwrap_or_default().to_string(),
        ));
    }
    if turns.is_empty() {
        bail!("{} holds no interactions", args.file.display());
    }
    let mut pairs = Vec::new();
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut index = 0;
    while pairs.len() < 20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let target = args.min_bytes + (state as usize) % (args.max_bytes - args.min_bytes + 1);
        let mailbox = turns[index % turns.len()].0.clone();
        let (mut prompt, mut response) = (String::new(), String::new());
        while prompt.len() + response.len() < target {
            let (_, p, r) = &turns[index % turns.len()];
            prompt.push_str(p);
            prompt.push('\n');
            response.push_str(r);
            response.push('\n');
            index += 1;
        }
        pairs.push((mailbox, prompt, response));
    }
    Ok(pairs)
}

fn make_batch(
    texts: &[(String, String, String)],
    run_id: &str,
    first: u64,
    count: u64,
) -> Vec<pb::InteractionInput> {
    let base = Utc.with_ymd_and_hms(2018, 1, 1, 0, 0, 0).unwrap();
    (first..first + count)
        .map(|n| {
            let (mailbox, prompt, response) = &texts[(n as usize) % texts.len()];
            InteractionBuilder::new(mailbox.as_str(), format!("{run_id}-{n}"))
                .app("BizChat")
                .thread(format!("{run_id}-t{}", n / 10))
                .created_at(base + chrono::Duration::seconds(n as i64))
                .prompt(prompt.as_str())
                .response(response.as_str())
                .model("bench", "model", "1")
                .build()
        })
        .collect()
}

struct Totals {
    latencies: Mutex<Histogram<u64>>,
    created: AtomicU64,
    other: AtomicU64,
}

fn record(totals: &Totals, response: &pb::IngestResponse, latency: Duration) {
    let created = response
        .results
        .iter()
        .filter(|r| r.status == pb::IngestStatus::Created as i32)
        .count() as u64;
    totals.created.fetch_add(created, Ordering::Relaxed);
    totals
        .other
        .fetch_add(response.results.len() as u64 - created, Ordering::Relaxed);
    let _ = totals
        .latencies
        .lock()
        .unwrap()
        .record(latency.as_micros() as u64);
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Bench::parse() {
        Bench::Ingest(args) => ingest(args).await,
        Bench::Search(args) => search::run(args).await,
        Bench::Console(args) => console::run(args).await,
        Bench::Sweep(args) => tokio::task::spawn_blocking(move || sweep::run(args)).await?,
        Bench::Hostile(args) => hostile::run(args).await,
        Bench::Backup(args) => backup::run(args).await,
        Bench::Flood(args) => hostile::flood(args).await,
    }
}

fn read_token(token: &Option<String>, token_file: &std::path::Path) -> anyhow::Result<String> {
    match token {
        Some(token) => Ok(token.clone()),
        None => Ok(std::fs::read_to_string(token_file)
            .with_context(|| format!("no --token and cannot read {}", token_file.display()))?
            .trim()
            .to_string()),
    }
}

async fn ingest(args: Args) -> anyhow::Result<()> {
    if args.min_bytes == 0 || args.max_bytes < args.min_bytes {
        bail!("need 0 < --min-bytes <= --max-bytes");
    }
    let token = read_token(&args.token, &args.token_file)?;
    let texts = Arc::new(load_texts(&args)?);
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| format!("bench{}", Utc::now().timestamp_millis()));
    let http = http_ingest::HttpIngest::new(&args.http_addr, &token)?;
    let otlp = match args.mode {
        Mode::Otlp => Some(otlp_ingest::OtlpIngest::connect(&args.addr, &token).await?),
        _ => None,
    };
    let client = HoldfastClient::connect(ClientConfig {
        addr: args.addr.clone(),
        token,
        tls: None,
    })
    .await?;
    let num_batches = args.count.div_ceil(args.batch);
    let next_batch = Arc::new(AtomicU64::new(0));
    let totals = Arc::new(Totals {
        latencies: Mutex::new(Histogram::new(3)?),
        created: AtomicU64::new(0),
        other: AtomicU64::new(0),
    });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let http = http.clone();
        let otlp = otlp.clone();
        let (client, texts, next_batch, totals, run_id) = (
            client.clone(),
            Arc::clone(&texts),
            Arc::clone(&next_batch),
            Arc::clone(&totals),
            run_id.clone(),
        );
        let (batch, count, window) = (args.batch, args.count, args.window);
        let mode = args.mode;
        tasks.push(tokio::spawn(async move {
            let take = move || {
                let index = next_batch.fetch_add(1, Ordering::Relaxed);
                (index < num_batches).then(|| {
                    let first = index * batch;
                    make_batch(&texts, &run_id, first, batch.min(count - first))
                })
            };
            match mode {
                Mode::Unary => {
                    while let Some(items) = take() {
                        let sent = Instant::now();
                        let response = client.ingest(items).await?;
                        record(&totals, &response, sent.elapsed());
                    }
                }
                Mode::Http => {
                    while let Some(items) = take() {
                        let sent = Instant::now();
                        let response = http.ingest(&items).await?;
                        record(&totals, &response, sent.elapsed());
                    }
                }
                Mode::Otlp => {
                    let otlp = otlp.context("an OTLP client")?;
                    while let Some(items) = take() {
                        let sent = Instant::now();
                        let response = otlp.ingest(&items).await?;
                        record(&totals, &response, sent.elapsed());
                    }
                }
                Mode::Stream => {
                    let (sender, receiver) =
                        tokio::sync::mpsc::channel::<pb::IngestRequest>(window);
                    let sent_at = Arc::new(Mutex::new(std::collections::HashMap::new()));
                    let mut responses = client
                        .ingest_stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
                        .await?;
                    let permits = Arc::new(tokio::sync::Semaphore::new(window));
                    let feeder = {
                        let (sent_at, permits) = (Arc::clone(&sent_at), Arc::clone(&permits));
                        tokio::spawn(async move {
                            let mut sequence = 0u64;
                            while let Some(items) = take() {
                                permits.acquire().await.expect("open").forget();
                                sent_at.lock().unwrap().insert(sequence, Instant::now());
                                let request = pb::IngestRequest {
                                    interactions: items,
                                    sequence,
                                };
                                if sender.send(request).await.is_err() {
                                    break;
                                }
                                sequence += 1;
                            }
                        })
                    };
                    while let Some(response) = responses.message().await? {
                        let sent = sent_at.lock().unwrap().remove(&response.sequence);
                        if let Some(sent) = sent {
                            record(&totals, &response, sent.elapsed());
                        }
                        permits.add_permits(1);
                    }
                    feeder.await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let created = totals.created.load(Ordering::Relaxed);
    let other = totals.other.load(Ordering::Relaxed);
    let latencies = totals.latencies.lock().unwrap();
    let ms = |micros: u64| micros as f64 / 1000.0;
    let rss = args.server_pid.and_then(peak_rss_mib);
    let report = serde_json::json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "count": args.count,
        "concurrency": args.concurrency,
        "batch": args.batch,
        "created": created,
        "not_created": other,
        "seconds": elapsed,
        "interactions_per_second": (created + other) as f64 / elapsed,
        "ack_latency_ms": {
            "p50": ms(latencies.value_at_quantile(0.50)),
            "p99": ms(latencies.value_at_quantile(0.99)),
            "max": ms(latencies.max()),
        },
        "server_peak_rss_mib": rss,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if other > 0 {
        eprintln!("warning: {other} interactions were not created (duplicates or rejections)");
    }
    Ok(())
}
