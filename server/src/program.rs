//! The `holdfast-server` program, kept in the library so that `src/main.rs` is one line.

use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, Flags, LogFormat};

/// The `holdfast-server` program: parses flags, loads the config, serves until SIGTERM/SIGINT.
pub fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let config = Config::load(&flags)?;
    if flags.print_config {
        print!(
            "{}",
            toml::to_string(&config).context("cannot print the config")?
        );
        return Ok(());
    }
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,tantivy=warn"));
    match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    // The default panic hook prints the panic's message, which may quote stored content;
    // this one logs only where it happened (the callers get a fixed message).
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        tracing::error!(%location, %thread, "a thread panicked (its message is not logged)");
    }));
    if let Some(backup_dir) = &flags.restore {
        let summary = crate::backup::restore(backup_dir, &config.data_dir)?;
        tracing::info!(
            backup = %backup_dir.display(),
            data_dir = %config.data_dir.display(),
            files = summary.files,
            bytes = summary.bytes,
            audit_entries = summary.audit_entries,
            audit_head_hash = %summary.audit_head_hash,
            "backup verified and restored; the search index is rebuilt on start"
        );
        if flags.restore_only {
            return Ok(());
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("holdfast")
        // Short RocksDB and index reads run on blocking threads; long operations and export
        // reads may hold only a bounded share of them (see `admission.rs`), and ingest and
        // the audit writer have threads of their own. A bounded pool keeps memory (one
        // malloc arena per busy thread) bounded under load.
        .max_blocking_threads(config.concurrency.blocking_threads)
        .build()?;
    runtime.block_on(async move {
        let server = crate::start(config).await?;
        let stop = server.shutdown_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: finishing in-flight requests");
            stop.cancel();
        });
        server.wait().await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("can listen for SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
