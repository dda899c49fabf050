//! `holdfast-bench backup`: an online backup of a large store while ingest runs (issue 8,
//! item 12). Starts a server in this process on a fresh data directory, ingests `--count`
//! synthetic interactions (1–2 KB), then asks for `AdminService.Backup` while
//! `--ingest-callers` keep ingesting, and reports how long the backup took, its size, how much
//! was ingested meanwhile, and how long verifying and restoring it take.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

use crate::hostile::{batch, connect, start_server, ADMIN_TOKEN, INGEST_TOKEN};

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Interactions in the store before the backup.
    #[arg(long, short = 'n', default_value_t = 1_000_000)]
    count: u64,
    /// Interactions per ingest request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Concurrent ingest callers while loading and during the backup.
    #[arg(long, default_value_t = 4)]
    ingest_callers: usize,
    /// Where the data directory, the backup and the restore go (default: a temporary
    /// directory; it needs about 3 times the store's size).
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

pub async fn run(args: BackupArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir_in(args.work_dir.as_deref().unwrap_or(&std::env::temp_dir()))?;
    let data_dir = temp.path().join("data");
    let out_dir = temp.path().join("backup");
    let restored_dir = temp.path().join("restored");
    let server = start_server(data_dir.clone())?;
    let addr = server.addr.clone();

    // Load.
    let next = Arc::new(AtomicU64::new(0));
    let loaded = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.ingest_callers {
        let client = connect(&addr, INGEST_TOKEN).await?;
        let (next, count, size) = (next.clone(), args.count, args.batch);
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(size as u64, Ordering::Relaxed);
                if first >= count {
                    return anyhow::Ok(());
                }
                let size = size.min((count - first) as usize);
                client.ingest(batch("load", first, size)).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let load_seconds = loaded.elapsed().as_secs_f64();
    eprintln!("loaded {} interactions in {load_seconds:.1} s", args.count);

    // Back up while ingest goes on.
    let done = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.ingest_callers {
        let client = connect(&addr, INGEST_TOKEN).await?;
        let (next, done, during, size) = (next.clone(), done.clone(), during.clone(), args.batch);
        tasks.push(tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let first = next.fetch_add(size as u64, Ordering::Relaxed);
                let response = client.ingest(batch("during", first, size)).await?;
                during.fetch_add(response.results.len() as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    // Let the callers reach full speed first.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let before_backup = during.load(Ordering::Relaxed);
    let admin = connect(&addr, ADMIN_TOKEN).await?;
    let started = Instant::now();
    let response = admin
        .backup(
            out_dir
                .to_str()
                .context("the work directory is not UTF-8")?,
        )
        .await?;
    let backup_seconds = started.elapsed().as_secs_f64();
    let ingested_during = during.load(Ordering::Relaxed) - before_backup;
    done.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    server.stop.cancel();
    server
        .thread
        .join()
        .map_err(|_| anyhow::anyhow!("the server thread panicked"))??;
    let data_bytes = dir_bytes(&data_dir);

    let verified = Instant::now();
    holdfast_server::backup::verify(&out_dir)
        .map_err(|error| anyhow::anyhow!("the backup does not verify: {error}"))?;
    let verify_seconds = verified.elapsed().as_secs_f64();
    let restored = Instant::now();
    let summary = holdfast_server::backup::restore(&out_dir, &restored_dir)?;
    let restore_seconds = restored.elapsed().as_secs_f64();

    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "interactions_before_backup": args.count,
            "load_seconds": load_seconds,
            "load_interactions_per_second": args.count as f64 / load_seconds,
            "data_dir_bytes_after": data_bytes,
            "backup_seconds": backup_seconds,
            "backup_files": response.files,
            "backup_bytes": response.bytes,
            "index_in_backup": response.index_included,
            "interactions_ingested_during_backup": ingested_during,
            "ingest_per_second_during_backup": ingested_during as f64 / backup_seconds,
            "verify_seconds": verify_seconds,
            "restore_seconds": restore_seconds,
            "restored_audit_entries": summary.audit_entries,
        }))?
    );
    Ok(())
}
