//! `holdfast-bench console`: how long the console's search page takes to show results in a
//! real browser (Debian's headless Chromium over WebDriver, the same driver as the browser
//! tests), read from the page's own Navigation Timing entry (the Performance API): the time
//! to the first byte of the answer (the server's search and rendering) and to the end of the
//! load event (results in the DOM, styles and script loaded).

use anyhow::Context as _;
use hdrhistogram::Histogram;
use holdfast_client::{pb, ClientConfig, HoldfastClient};

#[path = "../../tests/tests/common/web.rs"]
mod web;

#[path = "../../tests/tests/common/browser.rs"]
mod browser;

/// A free loopback port (for chromedriver).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    #[arg(long, env = "HOLDFAST_ADDR", default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// The console's address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http_addr: String,
    /// An ediscovery token: it creates the case (gRPC) and signs in to the console.
    #[arg(long, default_value = "./ediscovery.token")]
    token_file: std::path::PathBuf,
    /// The chitchat JSON Lines file the store was loaded from (terms and custodians).
    #[arg(long)]
    file: std::path::PathBuf,
    /// Page loads per query shape.
    #[arg(long, default_value_t = 100)]
    iterations: usize,
}

pub async fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    let token = super::read_token(&None, &args.token_file)?;
    let client = HoldfastClient::connect(ClientConfig {
        addr: args.addr.clone(),
        token: token.clone(),
        tls: None,
    })
    .await?;
    let (frequent, rare, _) = super::search::vocabulary(&args.file)?;
    let case = client
        .create_case(pb::CreateCaseRequest {
            name: format!("console bench {}", chrono::Utc::now().timestamp_millis()),
            description: "holdfast-bench console".into(),
            members: vec![],
            custodians: super::search::mailboxes_of_store(&args.file)?,
        })
        .await?;
    let base = args.http_addr.trim_end_matches('/').to_string();
    let browser = browser::Browser::start().await;
    browser.sign_in(&base, &token).await;
    let mut report = serde_json::Map::new();
    for (shape, terms) in [("rare term", &rare), ("frequent term", &frequent)] {
        let mut first_byte = Histogram::<u64>::new(3)?;
        let mut loaded = Histogram::<u64>::new(3)?;
        for i in 0..args.iterations {
            let term = &terms[i % terms.len()];
            browser
                .go(&format!("{base}/cases/{}/search?q={term}", case.id))
                .await;
            let timing = browser
                .execute(
                    "const n = performance.getEntriesByType('navigation')[0]; \
                     const shown = document.querySelector('#result-count'); \
                     return [n.responseStart - n.startTime, n.loadEventEnd - n.startTime, \
                             shown ? shown.textContent : ''];",
                )
                .await;
            let shown = timing[2].as_str().unwrap_or_default();
            anyhow::ensure!(
                shown.contains("match"),
                "the search page for {term:?} showed no results: {shown:?}"
            );
            let micros =
                |value: &serde_json::Value| (value.as_f64().unwrap_or(0.0) * 1000.0) as u64;
            first_byte.record(micros(&timing[0]))?;
            loaded.record(micros(&timing[1]))?;
        }
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        report.insert(
            shape.to_string(),
            serde_json::json!({
                "page_loads": args.iterations,
                "first_byte_ms": { "p50": ms(&first_byte, 0.5), "p95": ms(&first_byte, 0.95) },
                "loaded_ms": { "p50": ms(&loaded, 0.5), "p95": ms(&loaded, 0.95),
                               "max": loaded.max() as f64 / 1000.0 },
            }),
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Object(report)).context("report")?
    );
    Ok(())
}
