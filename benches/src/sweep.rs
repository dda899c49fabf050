//! `holdfast-bench sweep`: the sweeper in process, against a real RocksDB store and tantivy
//! index (no gRPC: what is measured is the sweeper's own work).
//!
//! 1. Stores `--items` interactions, `--due-percent` of them created long enough ago for an
//!    org-wide delete-only policy to move them now, and waits until all are indexed.
//! 2. A pass at `now`: moves every due item to the holds area (items leaving the view per s).
//! 3. A pass at `now + 1 day` (past the holds-area minimum age): destroys them, with their
//!    disposition records (destroyed per s); then the time until the index has dropped them.
//! 4. Passes with nothing due (latency per pass).
//! 5. Ingest rate alone, then while a pass moves and destroys another batch of due items.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use clap::Args;
use holdfast_retention::policy::{Action, Period, Policy, Scope};
use holdfast_server::audit::AuditLog;
use holdfast_server::config::RetentionConfig;
use holdfast_server::domain::{InteractionContent, InteractionId, MailboxId, Model, Safety};
use holdfast_server::ingest::write_planned;
use holdfast_server::lifecycle::{Lifecycle, PolicyRecord, ReplanScope};
use holdfast_server::search::index::{self, IndexSettings, SearchIndex};
use holdfast_server::store::{NewInteraction, PolicyWrite, RocksStore, Store};
use holdfast_server::sweeper::Sweeper;

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Interactions stored before the passes.
    #[arg(long, default_value_t = 1_000_000)]
    items: usize,
    /// Percentage of them that are due.
    #[arg(long, default_value_t = 10)]
    due_percent: usize,
    /// Items for the ingest-during-sweep comparison (each phase).
    #[arg(long, default_value_t = 100_000)]
    ingest_items: usize,
    /// Alternating rounds of the ingest comparison.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Spread the due items evenly among the others (a backfill of old items) instead of
    /// storing them first (items ingested in time order, the usual case).
    #[arg(long)]
    scattered: bool,
    /// Where to put the store and index (default: a temporary directory).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

const WORDS: &[&str] = &[
    "budget", "forecast", "meeting", "draft", "summary", "customer", "contract", "review",
    "schedule", "report", "travel", "invoice", "design", "release", "quarter", "team",
];

fn item(n: usize, created_at: DateTime<Utc>) -> NewInteraction {
    let prompt: Vec<&str> = (0..24)
        .map(|i| WORDS[(n * 7 + i * 13) % WORDS.len()])
        .collect();
    NewInteraction::new(
        InteractionId(ulid::Ulid::new()),
        Utc::now(),
        InteractionContent {
            client_key: format!("bench-{n}"),
            mailbox_id: MailboxId::parse(&format!("user{}@bench.test", n % 1000)).unwrap(),
            thread_id: format!("t{}", n % 7),
            app: ["Word", "Teams", "Outlook"][n % 3].into(),
            created_at,
            prompt: prompt.join(" "),
            response: "Here is a short answer with a few words in it.".into(),
            model: Model::default(),
            plugins: Vec::new(),
            accessed_resources: Vec::new(),
            contexts: Vec::new(),
            safety: Safety::default(),
            sensitivity_label: String::new(),
            attributes: Default::default(),
        },
    )
}

struct Setup {
    store: Arc<dyn Store>,
    lifecycle: Arc<Lifecycle>,
    index: Arc<SearchIndex>,
    sweeper: Arc<Sweeper>,
}

fn wait_for_index(setup: &Setup) -> Duration {
    let started = Instant::now();
    while setup.index.lag(setup.store.as_ref()) > 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// Stores `count` items numbered from `first`; `due_percent` of them are due at `now`:
/// evenly spread when `scattered`, else the first ones.
fn store_items(
    setup: &Setup,
    (first, count): (usize, usize),
    due_percent: usize,
    scattered: bool,
    now: DateTime<Utc>,
) {
    let mut next = first;
    while next < first + count {
        let end = (next + 1000).min(first + count);
        let mut batch: Vec<NewInteraction> = (next..end)
            .map(|n| {
                let due = if scattered {
                    (n % 100) < due_percent
                } else {
                    (n - first) * 100 < count * due_percent
                };
                let created = if due {
                    now - TimeDelta::days(400)
                } else {
                    now - TimeDelta::days(10)
                };
                item(n, created)
            })
            .collect();
        write_planned(setup.store.as_ref(), &setup.lifecycle, &mut batch).expect("ingest");
        // The server's backpressure: ingest waits while the index is too far behind.
        while setup.index.lag(setup.store.as_ref()) > setup.index.settings.max_lag {
            std::thread::sleep(Duration::from_millis(20));
        }
        next = end;
    }
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

pub fn run(args: SweepArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(&dir.join("store"))?);
    let stop = tokio_util::sync::CancellationToken::new();
    let (index, indexer) = index::start(
        &dir.join("index"),
        Arc::clone(&store),
        IndexSettings::default(),
        stop.clone(),
    )?;
    let lifecycle = Arc::new(Lifecycle::load(
        Arc::clone(&store),
        &RetentionConfig::default(),
    )?);
    let audit = Arc::new(AuditLog::open(store.clone())?);
    let sweeper = Arc::new(Sweeper::new(
        Arc::clone(&store),
        Arc::clone(&lifecycle),
        Arc::clone(&index),
        audit,
        Duration::ZERO,
    ));
    let setup = Setup {
        store,
        lifecycle,
        index,
        sweeper,
    };
    let now = Utc::now();
    let policy_id = ulid::Ulid::new();
    let record = PolicyRecord {
        id: policy_id,
        policy: Policy {
            id: policy_id.to_string(),
            name: "delete after a year".into(),
            scope: Scope::OrgWide {
                exclude: Default::default(),
            },
            apps: None,
            action: Action::DeleteOnly,
            period: Period::Days(365),
            enabled: true,
            locked: false,
        },
        created_at: now,
        created_by: "bench".into(),
        updated_at: now,
    };
    setup.lifecycle.change_policies(
        ReplanScope::Mailboxes(Default::default()),
        now,
        PolicyWrite::Put(record),
        None,
    )?;
    while setup.sweeper.replan_step(now)? {}

    eprintln!(
        "storing {} items ({}% due)...",
        args.items, args.due_percent
    );
    let started = Instant::now();
    store_items(
        &setup,
        (0, args.items),
        args.due_percent,
        args.scattered,
        now,
    );
    let indexed = wait_for_index(&setup);
    eprintln!(
        "stored in {:.1} s, index caught up {:.1} s later",
        started.elapsed().as_secs_f64() - indexed.as_secs_f64(),
        indexed.as_secs_f64()
    );

    // The sweeper yields while ingest is busy; measure it alone.
    std::thread::sleep(Duration::from_secs(1));
    let pass = setup.sweeper.run_once(now)?;
    println!(
        "move pass: {} moved in {:.2} s = {:.0} items/s leaving the view ({} due entries)",
        pass.moved,
        pass.duration_ms as f64 / 1e3,
        rate(pass.moved, Duration::from_millis(pass.duration_ms)),
        pass.examined
    );
    let started = Instant::now();
    setup.sweeper.compact_if_needed();
    println!(
        "  then compacting the due-time index (in the background loop): {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let index_after_moves = wait_for_index(&setup);
    println!(
        "  index reflects the moves {:.2} s later",
        index_after_moves.as_secs_f64()
    );

    let later = now + TimeDelta::days(1) + TimeDelta::seconds(1);
    let pass = setup.sweeper.run_once(later)?;
    let destroy_elapsed = Duration::from_millis(pass.duration_ms);
    let index_after = wait_for_index(&setup);
    println!(
        "destroy pass: {} destroyed (store + disposition records) in {:.2} s = {:.0} items/s; \
         index dropped them {:.2} s later = {:.0} items/s store + index",
        pass.destroyed,
        destroy_elapsed.as_secs_f64(),
        rate(pass.destroyed, destroy_elapsed),
        index_after.as_secs_f64(),
        rate(pass.destroyed, destroy_elapsed + index_after)
    );

    let started = Instant::now();
    setup.sweeper.compact_if_needed();
    println!(
        "  then compacting the due-time index: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let mut idle = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let stats = setup.sweeper.run_once(later)?;
        idle.push(started.elapsed());
        assert_eq!(stats.examined, 0);
    }
    idle.sort();
    println!(
        "nothing-due pass at {} stored items: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        args.items - pass.destroyed as usize,
        idle[idle.len() / 2].as_secs_f64() * 1e3,
        idle[idle.len() * 99 / 100].as_secs_f64() * 1e3,
        idle[idle.len() - 1].as_secs_f64() * 1e3
    );

    // Ingest alone, then while a pass moves and destroys as many due items; `--rounds`
    // times, alternating, so that both see the store in the same states (single runs vary
    // by ±30% with flushes and compactions).
    let mut next = args.items;
    let mut alone = Vec::new();
    let mut during = Vec::new();
    for round in 0..args.rounds {
        store_items(&setup, (next, args.ingest_items), 100, false, now);
        next += args.ingest_items;
        wait_for_index(&setup);
        std::thread::sleep(Duration::from_secs(2));
        let started = Instant::now();
        store_items(&setup, (next, args.ingest_items), 0, false, now);
        next += args.ingest_items;
        alone.push(rate(args.ingest_items as u64, started.elapsed()));
        wait_for_index(&setup);
        std::thread::sleep(Duration::from_secs(2));
        let sweeper = Arc::clone(&setup.sweeper);
        let sweeping = std::thread::spawn(move || -> anyhow::Result<(u64, u64, Duration)> {
            let started = Instant::now();
            let moved = sweeper.run_once(now)?.moved;
            let destroyed = sweeper.run_once(later)?.destroyed;
            Ok((moved, destroyed, started.elapsed()))
        });
        let started = Instant::now();
        store_items(&setup, (next, args.ingest_items), 0, false, now);
        next += args.ingest_items;
        during.push(rate(args.ingest_items as u64, started.elapsed()));
        let (moved, destroyed, took) = sweeping.join().expect("sweep thread")?;
        wait_for_index(&setup);
        println!(
            "  round {round}: ingest alone {:.0}/s; during a pass that moved {moved} and \
             destroyed {destroyed} in {:.2} s: {:.0}/s",
            alone[round],
            took.as_secs_f64(),
            during[round]
        );
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (alone, during) = (median(&mut alone), median(&mut during));
    println!(
        "ingest (acknowledged writes, with the server's index backpressure; in process), \
         median of {} rounds: alone {alone:.0}/s, during a pass {during:.0}/s ({:+.1}%)",
        args.rounds,
        (during / alone - 1.0) * 100.0
    );
    stop.cancel();
    indexer.join();
    Ok(())
}
