//! `holdfast-bench search`: latency of each query shape of the eDiscovery benchmark, and the
//! time from an acknowledged ingest until the item is searchable.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use holdfast_client::{pb, ClientConfig, HoldfastClient, InteractionBuilder};

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    #[arg(long, env = "HOLDFAST_ADDR", default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// An ediscovery token (search) ...
    #[arg(long)]
    token: Option<String>,
    #[arg(long, default_value = "./ediscovery.token")]
    token_file: std::path::PathBuf,
    /// ... and an ingest token (time until searchable).
    #[arg(long, default_value = "./bench.token")]
    ingest_token_file: std::path::PathBuf,
    /// The chitchat JSON Lines file the store was loaded from (to pick terms).
    #[arg(long)]
    file: std::path::PathBuf,
    /// Searches per query shape.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Probes of the time until searchable.
    #[arg(long, default_value_t = 20)]
    probes: usize,
}

/// Word frequencies over a sample of the corpus, as the index would cut words.
pub(crate) fn vocabulary(
    file: &std::path::Path,
) -> anyhow::Result<(Vec<String>, Vec<String>, Vec<String>)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut mailboxes: HashMap<String, u64> = HashMap::new();
    for line in text.lines().take(50_000) {
        let value: serde_json::Value = serde_json::from_str(line)?;
        if let Some(mailbox) = value["mailbox_id"].as_str() {
            *mailboxes.entry(mailbox.to_string()).or_insert(0) += 1;
        }
        for field in ["prompt", "response"] {
            for word in value[field]
                .as_str()
                .unwrap_or_default()
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.len() >= 4)
            {
                *counts.entry(word.to_lowercase()).or_insert(0) += 1;
            }
        }
    }
    let mut words: Vec<(String, u64)> = counts.into_iter().collect();
    words.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let frequent: Vec<String> = words.iter().take(20).map(|(w, _)| w.clone()).collect();
    let rare: Vec<String> = words
        .iter()
        .filter(|(w, c)| (3..=6).contains(c) && w.chars().all(|c| c.is_ascii_lowercase()))
        .take(20)
        .map(|(w, _)| w.clone())
        .collect();
    let mut mailboxes: Vec<(String, u64)> = mailboxes.into_iter().collect();
    mailboxes.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    let mailboxes = mailboxes.into_iter().take(20).map(|(m, _)| m).collect();
    if frequent.len() < 20 || rare.len() < 20 {
        bail!("the corpus sample is too small to pick terms");
    }
    Ok((frequent, rare, mailboxes))
}

fn shapes(
    frequent: &[String],
    rare: &[String],
    mailboxes: &[String],
) -> Vec<(&'static str, Vec<String>)> {
    let n = frequent.len();
    let pick = |f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>();
    vec![
        ("rare term", pick(&|i| rare[i].clone())),
        ("frequent term", pick(&|i| frequent[i].clone())),
        (
            "two-term AND",
            pick(&|i| format!("{} AND {}", frequent[i], frequent[(i + 1) % n])),
        ),
        (
            "phrase",
            pick(&|i| format!("\"{} {}\"", frequent[i], frequent[(i + 3) % n])),
        ),
        ("prefix", pick(&|i| format!("{}*", &frequent[i][..3]))),
        (
            "NEAR",
            pick(&|i| format!("{} NEAR(5) {}", frequent[i], frequent[(i + 5) % n])),
        ),
        (
            "mailbox + date",
            pick(&|i| {
                format!(
                    "{} mailbox:{} created:2018-01-01..2018-06-30",
                    frequent[i],
                    mailboxes[i % mailboxes.len()]
                )
            }),
        ),
    ]
}

pub async fn run(args: SearchArgs) -> anyhow::Result<()> {
    let token = super::read_token(&args.token, &args.token_file)?;
    let client = HoldfastClient::connect(ClientConfig {
        addr: args.addr.clone(),
        token,
        tls: None,
    })
    .await?;
    let (frequent, rare, mailboxes) = vocabulary(&args.file)?;
    let case = client
        .create_case(pb::CreateCaseRequest {
            name: format!("bench {}", chrono::Utc::now().timestamp_millis()),
            description: "holdfast-bench search".into(),
            members: vec![],
            custodians: mailboxes_of_store(&args.file)?,
        })
        .await?;
    let mut report = serde_json::Map::new();
    for (shape, queries) in shapes(&frequent, &rare, &mailboxes) {
        let mut latencies = Histogram::<u64>::new(3)?;
        let mut totals = Vec::new();
        for i in 0..args.iterations {
            let query = &queries[i % queries.len()];
            let started = Instant::now();
            let response = client
                .search(pb::SearchRequest {
                    case_id: case.id.clone(),
                    query: query.clone(),
                    page_size: 20,
                    ..Default::default()
                })
                .await?;
            latencies.record(started.elapsed().as_micros() as u64)?;
            if i < queries.len() {
                totals.push(response.total);
            }
        }
        let ms = |v: u64| v as f64 / 1000.0;
        totals.sort();
        report.insert(
            shape.to_string(),
            serde_json::json!({
                "p50_ms": ms(latencies.value_at_quantile(0.5)),
                "p99_ms": ms(latencies.value_at_quantile(0.99)),
                "max_ms": ms(latencies.max()),
                "median_total_hits": totals[totals.len() / 2],
                "example": queries[0],
            }),
        );
    }
    // Time until searchable: one new item with a unique word, then poll.
    let ingest_token = std::fs::read_to_string(&args.ingest_token_file)
        .with_context(|| format!("cannot read {}", args.ingest_token_file.display()))?;
    let ingester = HoldfastClient::connect(ClientConfig {
        addr: args.addr.clone(),
        token: ingest_token.trim().to_string(),
        tls: None,
    })
    .await?;
    let mut visible = Histogram::<u64>::new(3)?;
    for probe in 0..args.probes {
        let word = format!("probe{}x{probe}", chrono::Utc::now().timestamp_millis());
        let item = InteractionBuilder::new(&mailboxes[0], &word)
            .app("Bench")
            .prompt(format!("searchability {word}"))
            .build();
        let started = Instant::now();
        ingester.ingest(vec![item]).await?;
        loop {
            let response = client
                .search(pb::SearchRequest {
                    case_id: case.id.clone(),
                    query: word.clone(),
                    ..Default::default()
                })
                .await?;
            if response.total == 1 {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("an ingested item was not searchable after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        visible.record(started.elapsed().as_micros() as u64)?;
    }
    report.insert(
        "time until searchable".into(),
        serde_json::json!({
            "p50_ms": visible.value_at_quantile(0.5) as f64 / 1000.0,
            "max_ms": visible.max() as f64 / 1000.0,
        }),
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Object(report))?
    );
    Ok(())
}

/// Every mailbox of the corpus: the benchmark case's custodians.
pub(crate) fn mailboxes_of_store(file: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(file)?;
    let mut set = std::collections::BTreeSet::new();
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line)?;
        if let Some(mailbox) = value["mailbox_id"].as_str() {
            set.insert(mailbox.to_lowercase());
        }
    }
    Ok(set.into_iter().collect())
}
