//! Criterion benches of the two halves of the ingest path, on fixed fixture data:
//! validation + canonical encoding + digest (`ingest::prepare`), and the durable RocksDB
//! write of a group (`Store::write_interactions`, WAL synced).
//!
//! `cargo bench --profile release -p holdfast-benches --bench ingest_path`

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use holdfast_client::InteractionBuilder;
use holdfast_server::config::Limits;
use holdfast_server::convert;
use holdfast_server::ingest;
use holdfast_server::store::{NewInteraction, RocksStore, Store};
use holdfast_server::validate::UnvalidatedContent;

/// Fixed pseudo-conversational text, 1–4 KB per interaction, the same on every run, decoded
/// as the gRPC front door decodes it.
fn fixture(count: usize, run: &str) -> Vec<Result<UnvalidatedContent, ingest::Rejection>> {
    const WORDS: &[&str] = &[
        "budget",
        "meeting",
        "quarter",
        "review",
        "the",
        "a",
        "plan",
        "customer",
        "résumé",
        "forecast",
        "team",
        "please",
        "summarise",
        "draft",
        "email",
        "contract",
        "予算",
        "and",
    ];
    let mut state = 0x2545f4914f6cdd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let created = Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap();
    (0..count)
        .map(|n| {
            let target = 1024 + (next() % 3072) as usize;
            let mut text = String::with_capacity(target);
            while text.len() < target {
                text.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
                text.push(' ');
            }
            let (prompt, response) = text.split_at(text.floor_char_boundary(text.len() / 3));
            InteractionBuilder::new(format!("user{}@contoso.com", n % 50), format!("{run}-{n}"))
                .app("BizChat")
                .thread(format!("t{}", n / 10))
                .created_at(created)
                .prompt(prompt)
                .response(response)
                .model("openai", "gpt-4o", "1")
                .build()
        })
        .map(|input| convert::unvalidated_content(input).map_err(ingest::Rejection::from))
        .collect()
}

fn prepare(c: &mut Criterion) {
    let batch = fixture(100, "prepare");
    let limits = Limits::default();
    let mut group = c.benchmark_group("prepare");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("validate_encode_digest_100", |b| {
        b.iter_batched(
            || batch.clone(),
            |batch| ingest::prepare(batch, &limits, Utc::now()),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn durable_write(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(&dir.path().join("store")).unwrap());
    let limits = Limits::default();
    let mut round = 0u64;
    let mut group = c.benchmark_group("durable_write");
    for size in [1usize, 100, 1000] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("group_of_{size}"), |b| {
            b.iter_batched(
                || {
                    round += 1;
                    ingest::prepare(fixture(size, &format!("w{round}")), &limits, Utc::now())
                        .into_iter()
                        .map(|item| item.expect("fixture is valid"))
                        .collect::<Vec<NewInteraction>>()
                },
                |items| store.write_interactions(&items).unwrap(),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, prepare, durable_write);
criterion_main!(benches);
