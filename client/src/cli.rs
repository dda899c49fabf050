//! The `holdfast` command-line tool.
//!
//! Exit codes: 0 success; 1 an error (connection, refused call, bad input); 2 a usage error;
//! 3 `ingest` finished but some items were rejected or failed; 4 `audit verify` found the
//! chain broken.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::builder::timestamp;
use crate::json::{location_name, move_reason_name, JsonInteraction};
use crate::{
    pb, BatchingIngester, ClientConfig, ClientError, HoldfastClient, IngesterOptions, TlsOptions,
};

#[derive(Debug, Parser)]
#[command(name = "holdfast", version, about = "Command-line client for holdfast")]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    /// Print JSON instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Connection {
    /// Server address (http://host:port, or https://... with TLS).
    #[arg(
        long,
        env = "HOLDFAST_ADDR",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub addr: String,
    /// Bearer token. Default: --token-file, else <data-dir>/admin.token.
    #[arg(long, env = "HOLDFAST_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, env = "HOLDFAST_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// The server's data directory, to find admin.token on the server's machine.
    #[arg(
        long,
        env = "HOLDFAST_DATA_DIR",
        default_value = "./holdfast-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// PEM CA of the server's certificate (turns TLS on).
    #[arg(long, env = "HOLDFAST_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Name to verify the server certificate against.
    #[arg(long, env = "HOLDFAST_TLS_DOMAIN", global = true)]
    pub tls_domain: Option<String>,
    /// Client certificate (PEM) for servers that verify clients.
    #[arg(long, env = "HOLDFAST_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, env = "HOLDFAST_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest interactions from a JSON Lines file (one interaction per line, SPEC §2 names).
    Ingest {
        #[arg(long, short)]
        file: PathBuf,
        /// Items per request.
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
    },
    /// Show one interaction.
    Get { id: String },
    /// List a mailbox's ACTIVE interactions, newest first.
    List {
        #[arg(long)]
        mailbox: String,
        #[arg(long)]
        thread: Option<String>,
        /// Only items created at or after this (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        from: Option<String>,
        /// Only items created before this (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        to: Option<String>,
        /// Items per page (1-1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Move a mailbox's ACTIVE interactions to the holds area (the user's "delete history").
    DeleteHistory {
        #[arg(long)]
        mailbox: String,
        #[arg(long)]
        thread: Option<String>,
        /// Only items created before this (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        before: Option<String>,
    },
    /// eDiscovery cases (ediscovery, ediscovery_admin).
    #[command(subcommand)]
    Case(CaseCommand),
    /// Search a case's custodians with KQL, e.g. `budget NEAR(5) forecast created>=2025-01-01`.
    Search {
        #[arg(long = "case")]
        case_id: String,
        /// The KQL query.
        query: String,
        /// Only these custodians (repeatable).
        #[arg(long = "mailbox")]
        mailboxes: Vec<String>,
        #[arg(long, value_enum, default_value = "relevance")]
        sort: SortArg,
        /// Hits per page (1-1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Export a case's matching items as a BagIt bag; `export verify DIR` checks one.
    Export(ExportArgs),
    /// Retention policies (retention_admin).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Litigation and delay holds (retention_admin).
    #[command(subcommand)]
    Hold(HoldCommand),
    /// Why an interaction is still here and when it will go.
    Explain { id: String },
    /// A mailbox's policies, holds and items by location.
    #[command(subcommand)]
    Mailbox(crate::cli_retention::MailboxCommand),
    /// Run one sweeper pass now (retention_admin), or show the sweeper's status.
    Sweep {
        /// Show the status instead of running a pass.
        #[arg(long)]
        status: bool,
    },
    /// Disposition records of destroyed items (auditor, retention_admin, admin).
    Dispositions {
        #[arg(long)]
        mailbox: Option<String>,
        /// Records per page (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Search-and-purge for spillage (purge role): moves matching items to the holds area.
    Purge {
        #[arg(long = "case")]
        case_id: String,
        /// The KQL query (required).
        #[arg(long)]
        query: String,
        /// Only these custodians (repeatable).
        #[arg(long = "mailbox")]
        mailboxes: Vec<String>,
        /// Show what would move; move nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Manage bearer tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Read and verify the audit log (auditor, admin).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write an online backup (admin) while the server keeps serving. DIR is on the SERVER's
    /// filesystem: an absolute path that does not exist or is an empty directory. Restore
    /// with `holdfast-server --restore DIR --data-dir NEW`.
    Backup {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaseCommand {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Principal allowed to work in the case (repeatable); you are always one.
        #[arg(long = "member")]
        members: Vec<String>,
        /// Mailbox the case searches (repeatable).
        #[arg(long = "custodian")]
        custodians: Vec<String>,
    },
    List,
    Show {
        case_id: String,
    },
    Update {
        case_id: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long = "add-member")]
        add_members: Vec<String>,
        #[arg(long = "remove-member")]
        remove_members: Vec<String>,
        #[arg(long = "add-custodian")]
        add_custodians: Vec<String>,
        #[arg(long = "remove-custodian")]
        remove_custodians: Vec<String>,
    },
    Close {
        case_id: String,
    },
    /// Case holds: place, list (with items held), release.
    #[command(subcommand)]
    Hold(crate::cli_retention::CaseHoldCommand),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ActionArg {
    RetainOnly,
    DeleteOnly,
    RetainThenDelete,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[arg(long)]
    pub name: String,
    /// Every mailbox (but --exclude); otherwise only the --include list.
    #[arg(long)]
    pub org_wide: bool,
    #[arg(long = "include")]
    pub include: Vec<String>,
    #[arg(long = "exclude")]
    pub exclude: Vec<String>,
    /// Only items of these apps (repeatable).
    #[arg(long = "app")]
    pub apps: Vec<String>,
    #[arg(long, value_enum)]
    pub action: ActionArg,
    /// Days from each item's created_at; omit with --forever.
    #[arg(long, conflicts_with = "forever")]
    pub days: Option<u32>,
    /// Retain forever (retain-only policies).
    #[arg(long)]
    pub forever: bool,
    #[arg(long)]
    pub disabled: bool,
}

impl PolicyArgs {
    fn spec(&self) -> anyhow::Result<pb::PolicySpec> {
        let days = match (self.days, self.forever) {
            (Some(days), false) if days > 0 => days,
            (None, true) => 0,
            _ => bail!("give --days N (N > 0) or --forever"),
        };
        Ok(pb::PolicySpec {
            name: self.name.clone(),
            org_wide: self.org_wide,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            apps: self.apps.clone(),
            action: match self.action {
                ActionArg::RetainOnly => pb::PolicyAction::RetainOnly,
                ActionArg::DeleteOnly => pb::PolicyAction::DeleteOnly,
                ActionArg::RetainThenDelete => pb::PolicyAction::RetainThenDelete,
            } as i32,
            days,
            enabled: !self.disabled,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    Create(PolicyArgs),
    /// Replaces a policy's settings (a locked policy accepts only what the lock allows).
    Update {
        id: String,
        #[command(flatten)]
        args: PolicyArgs,
    },
    List,
    Show {
        id: String,
    },
    Delete {
        id: String,
    },
    /// Puts a preservation lock on a policy; it cannot be removed.
    Lock {
        id: String,
    },
    /// Before saving: per mailbox, what a new policy (or a change of --id) would move and
    /// make destroyable.
    Preview {
        /// The policy to change; omit for a new one.
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        args: PolicyArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Places a litigation hold on a mailbox.
    Place {
        #[arg(long)]
        mailbox: String,
        /// Hold items for N days from their created_at; default forever.
        #[arg(long, default_value_t = 0)]
        days: u32,
    },
    /// Releases a hold; the mailbox gets a delay hold.
    Release { id: String },
    /// Ends a delay hold early.
    ClearDelay { id: String },
    List {
        #[arg(long)]
        mailbox: Option<String>,
        /// Include released holds.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SortArg {
    Relevance,
    Newest,
    Oldest,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub verify: Option<ExportCommand>,
    #[arg(long = "case")]
    pub case_id: Option<String>,
    /// The KQL query.
    #[arg(long)]
    pub query: Option<String>,
    /// Only these custodians (repeatable).
    #[arg(long = "mailbox")]
    pub mailboxes: Vec<String>,
    /// The bag's directory; an interrupted export in it is resumed.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Checks a bag's digests, size and item count.
    Verify { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long = "role", required = true)]
        roles: Vec<RoleArg>,
    },
    List,
    Revoke {
        name: String,
    },
    /// Print the SHA-256 of a token read from standard input, for the config file's [[tokens]].
    Hash,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    Query {
        /// Entries at or after this time (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        from: Option<String>,
        /// Entries before this time.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        page_token: Option<String>,
    },
    Verify,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum RoleArg {
    Ingest,
    Ediscovery,
    EdiscoveryAdmin,
    RetentionAdmin,
    Purge,
    Auditor,
    Admin,
}

impl From<RoleArg> for pb::Role {
    fn from(role: RoleArg) -> pb::Role {
        match role {
            RoleArg::Ingest => pb::Role::Ingest,
            RoleArg::Ediscovery => pb::Role::Ediscovery,
            RoleArg::EdiscoveryAdmin => pb::Role::EdiscoveryAdmin,
            RoleArg::RetentionAdmin => pb::Role::RetentionAdmin,
            RoleArg::Purge => pb::Role::Purge,
            RoleArg::Auditor => pb::Role::Auditor,
            RoleArg::Admin => pb::Role::Admin,
        }
    }
}

fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Ingest) => "ingest",
        Ok(pb::Role::Ediscovery) => "ediscovery",
        Ok(pb::Role::EdiscoveryAdmin) => "ediscovery_admin",
        Ok(pb::Role::RetentionAdmin) => "retention_admin",
        Ok(pb::Role::Purge) => "purge",
        Ok(pb::Role::Auditor) => "auditor",
        Ok(pb::Role::Admin) => "admin",
        _ => "unknown",
    }
}

/// Entry point of the `holdfast` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Parses RFC 3339, or a bare date meaning its UTC midnight.
pub fn parse_time(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc());
    }
    bail!("{text:?} is not a time (expected RFC 3339, e.g. 2025-03-01T12:00:00Z, or 2025-03-01)")
}

pub(crate) fn optional_timestamp(
    text: &Option<String>,
) -> anyhow::Result<Option<prost_types::Timestamp>> {
    text.as_deref()
        .map(|t| parse_time(t).map(timestamp))
        .transpose()
}

impl Connection {
    fn token(&self) -> anyhow::Result<String> {
        if let Some(token) = &self.token {
            return Ok(token.trim().to_string());
        }
        let path = self
            .token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin.token"));
        let token = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no token given (--token, HOLDFAST_TOKEN or --token-file) and cannot read {}",
                path.display()
            )
        })?;
        Ok(token.trim().to_string())
    }

    fn config(&self) -> anyhow::Result<ClientConfig> {
        let tls_wanted =
            self.tls_ca.is_some() || self.tls_cert.is_some() || self.addr.starts_with("https://");
        let addr = if self.addr.contains("://") {
            self.addr.clone()
        } else if tls_wanted {
            format!("https://{}", self.addr)
        } else {
            format!("http://{}", self.addr)
        };
        Ok(ClientConfig {
            addr,
            token: self.token()?,
            tls: tls_wanted.then(|| TlsOptions {
                ca_file: self.tls_ca.clone(),
                domain: self.tls_domain.clone(),
                client_cert_file: self.tls_cert.clone(),
                client_key_file: self.tls_key.clone(),
            }),
        })
    }

    async fn connect(&self) -> anyhow::Result<HoldfastClient> {
        Ok(HoldfastClient::connect(self.config()?).await?)
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let json = cli.json;
    match cli.command {
        Command::Token(TokenCommand::Hash) => {
            let mut token = String::new();
            std::io::stdin().read_line(&mut token)?;
            let token = token.trim();
            if token.is_empty() {
                bail!("no token on standard input");
            }
            use sha2::Digest;
            println!("{}", hex::encode(sha2::Sha256::digest(token.as_bytes())));
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest { file, batch_size } => {
            let client = cli.connection.connect().await?;
            ingest_file(client, &file, batch_size, json).await
        }
        Command::Get { id } => {
            let client = cli.connection.connect().await?;
            let item = client.get(&id).await?;
            print_interaction(item, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::List {
            mailbox,
            thread,
            from,
            to,
            limit,
            page_token,
        } => {
            let client = cli.connection.connect().await?;
            let request = pb::ListInteractionsRequest {
                mailbox_id: mailbox,
                thread_id: thread.unwrap_or_default(),
                created_from: optional_timestamp(&from)?,
                created_to: optional_timestamp(&to)?,
                page_size: limit,
                page_token: page_token.unwrap_or_default(),
            };
            let page = client.list(request).await?;
            print_list(page, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::DeleteHistory {
            mailbox,
            thread,
            before,
        } => {
            let client = cli.connection.connect().await?;
            let request = pb::DeleteHistoryRequest {
                mailbox_id: mailbox.clone(),
                thread_id: thread.unwrap_or_default(),
                before: optional_timestamp(&before)?,
            };
            let response = client.delete_history(request).await?;
            if json {
                println!("{}", serde_json::json!({ "num_moved": response.num_moved }));
            } else {
                println!(
                    "moved {} interaction(s) of {mailbox} to the holds area",
                    response.num_moved
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(command) => {
            let client = cli.connection.connect().await?;
            token_command(client, command, json).await
        }
        Command::Backup { out } => {
            let Some(out) = out.to_str().filter(|_| out.is_absolute()) else {
                bail!("--out must be an absolute UTF-8 path on the server's filesystem");
            };
            let client = cli.connection.connect().await?;
            let response = client.backup(out).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "out_dir": response.out_dir,
                        "files": response.files,
                        "bytes": response.bytes,
                        "audit_sequence": response.audit_sequence,
                        "audit_head_hash": response.audit_head_hash,
                        "manifest_sha256": response.manifest_sha256,
                        "index_included": response.index_included,
                        "duration_ms": response.duration_ms,
                    })
                );
            } else {
                println!(
                    "backup written to {} on the server: {} files, {} bytes, in {:.1} s",
                    response.out_dir,
                    response.files,
                    response.bytes,
                    response.duration_ms as f64 / 1000.0
                );
                println!(
                    "audit head: entry {} {}",
                    response.audit_sequence, response.audit_head_hash
                );
                println!(
                    "manifest sha256: {} (keep it apart from the backup)",
                    response.manifest_sha256
                );
                println!("the search index is rebuilt from the store after a restore");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(command) => {
            let client = cli.connection.connect().await?;
            policy_command(client, command, json).await
        }
        Command::Hold(command) => {
            let client = cli.connection.connect().await?;
            hold_command(client, command, json).await
        }
        Command::Explain { id } => {
            let client = cli.connection.connect().await?;
            let explained = client
                .retention
                .clone()
                .explain_retention(pb::ExplainRetentionRequest { id })
                .await
                .map_err(crate::ClientError::from)?
                .into_inner();
            print_explanation(&explained, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Case(command) => {
            let client = cli.connection.connect().await?;
            case_command(client, command, json).await
        }
        Command::Mailbox(command) => {
            let client = cli.connection.connect().await?;
            crate::cli_retention::mailbox_command(client, command, json).await
        }
        Command::Sweep { status } => {
            let client = cli.connection.connect().await?;
            crate::cli_retention::sweep_command(client, status, json).await
        }
        Command::Dispositions {
            mailbox,
            limit,
            page_token,
        } => {
            let client = cli.connection.connect().await?;
            crate::cli_retention::dispositions_command(client, mailbox, limit, page_token, json)
                .await
        }
        Command::Purge {
            case_id,
            query,
            mailboxes,
            dry_run,
        } => {
            let client = cli.connection.connect().await?;
            let request = pb::PurgeRequest {
                case_id,
                query,
                mailboxes,
                dry_run,
            };
            crate::cli_retention::purge_command(client, request, json).await
        }
        Command::Search {
            case_id,
            query,
            mailboxes,
            sort,
            limit,
            page_token,
        } => {
            let client = cli.connection.connect().await?;
            let request = pb::SearchRequest {
                case_id,
                query,
                mailboxes,
                sort: match sort {
                    SortArg::Relevance => pb::SearchSort::Relevance,
                    SortArg::Newest => pb::SearchSort::Newest,
                    SortArg::Oldest => pb::SearchSort::Oldest,
                } as i32,
                page_size: limit,
                page_token: page_token.unwrap_or_default(),
            };
            let response = client.search(request).await?;
            print_search(&response, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(ExportArgs {
            verify: Some(ExportCommand::Verify { dir }),
            ..
        }) => match crate::bag::verify(&dir) {
            Ok(count) => {
                if json {
                    println!("{}", serde_json::json!({ "valid": true, "items": count }));
                } else {
                    println!("bag {} is valid: {count} interactions", dir.display());
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "valid": false, "problem": format!("{error:#}") })
                    );
                } else {
                    println!("bag {} is NOT valid: {error:#}", dir.display());
                }
                Ok(ExitCode::from(4))
            }
        },
        Command::Export(args) => {
            let client = cli.connection.connect().await?;
            export(client, args, json).await
        }
        Command::Audit(command) => {
            let client = cli.connection.connect().await?;
            audit_command(client, command, json).await
        }
    }
}

async fn ingest_file(
    client: HoldfastClient,
    path: &PathBuf,
    batch_size: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if !(1..=1000).contains(&batch_size) {
        bail!("--batch-size must be within 1..=1000");
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::hidden())
    } else {
        ProgressBar::new(total_bytes)
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
        )
        .expect("valid template"),
    );

    let options = IngesterOptions {
        batch_size,
        ..IngesterOptions::default()
    };
    let ingester = BatchingIngester::start(client, options);
    let (ticket_sender, mut tickets) = tokio::sync::mpsc::channel(100_000);
    // A refusal of the whole request (bad token, wrong role) will refuse every line: stop.
    let fatal: Arc<Mutex<Option<ClientError>>> = Arc::default();
    let collector_fatal = Arc::clone(&fatal);
    // Collects answers in file order, so problems are reported with their line numbers.
    let collector = tokio::spawn(async move {
        let mut problems: Vec<(usize, String)> = Vec::new();
        while let Some((line, ticket)) = tickets.recv().await {
            let ticket: crate::ingester::Ticket = ticket;
            match ticket.wait().await {
                Ok(result) if result.status == pb::IngestStatus::Rejected as i32 => {
                    let field = if result.field.is_empty() {
                        String::new()
                    } else {
                        format!("{}: ", result.field)
                    };
                    problems.push((line, format!("rejected: {field}{}", result.reason)));
                }
                Ok(_) => {}
                Err(error) => {
                    if matches!(
                        error.code(),
                        Some(tonic::Code::Unauthenticated | tonic::Code::PermissionDenied)
                    ) {
                        collector_fatal
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(error.clone());
                    }
                    problems.push((line, format!("failed: {error}")));
                }
            }
        }
        problems
    });

    let reader = std::io::BufReader::new(file);
    let mut local_problems: Vec<(usize, String)> = Vec::new();
    let mut num_lines = 0u64;
    for (index, line) in reader.lines().enumerate() {
        let line_number = index + 1;
        if let Some(error) = fatal.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Err(error).context("the server refused the ingest");
        }
        let line = line.with_context(|| format!("cannot read line {line_number}"))?;
        progress.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        num_lines += 1;
        match serde_json::from_str::<JsonInteraction>(&line) {
            Ok(item) => {
                let ticket = ingester.submit(item.into_input()).await?;
                if ticket_sender.send((line_number, ticket)).await.is_err() {
                    bail!("the result collector stopped");
                }
            }
            // serde_json's messages name the field and position, never the content.
            Err(error) => local_problems.push((line_number, format!("not valid JSON: {error}"))),
        }
    }
    drop(ticket_sender);
    let summary = ingester.finish().await;
    let mut problems = collector.await.context("result collector panicked")?;
    progress.finish_and_clear();
    if let Some(error) = fatal.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        return Err(error).context("the server refused the ingest");
    }
    problems.extend(local_problems);
    problems.sort_by_key(|(line, _)| *line);
    let num_invalid_lines = problems
        .iter()
        .filter(|(_, p)| p.starts_with("not valid JSON"))
        .count() as u64;

    if json {
        let report = serde_json::json!({
            "lines": num_lines,
            "created": summary.created,
            "duplicate": summary.duplicate,
            "rejected": summary.rejected,
            "failed": summary.failed,
            "invalid_lines": num_invalid_lines,
            "retries": summary.retries,
            "problems": problems.iter().map(|(line, problem)| serde_json::json!({"line": line, "problem": problem})).collect::<Vec<_>>(),
        });
        println!("{report}");
    } else {
        let mut stderr = std::io::stderr().lock();
        for (line, problem) in problems.iter().take(50) {
            let _ = writeln!(stderr, "line {line}: {problem}");
        }
        if problems.len() > 50 {
            let _ = writeln!(stderr, "... and {} more problem lines", problems.len() - 50);
        }
        println!(
            "{num_lines} lines: {} created, {} duplicate, {} rejected, {} failed, {} not valid JSON",
            summary.created, summary.duplicate, summary.rejected, summary.failed, num_invalid_lines
        );
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

pub(crate) fn format_time(timestamp: Option<prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "-".into())
}

fn print_interaction(item: pb::Interaction, json: bool) {
    if json {
        let value = JsonInteraction::from_stored(item);
        println!("{}", serde_json::to_string(&value).expect("serialisable"));
        return;
    }
    let model = item.model.clone().unwrap_or_default();
    println!("id:          {}", item.id);
    println!("mailbox:     {}", item.mailbox_id);
    println!("client key:  {}", item.client_key);
    println!("thread:      {}", item.thread_id);
    println!("app:         {}", item.app);
    println!("created at:  {}", format_time(item.created_at));
    println!("received at: {}", format_time(item.received_at));
    print!("location:    {}", location_name(item.location));
    if item.location == pb::Location::HoldsArea as i32 {
        print!(
            " ({}, since {})",
            move_reason_name(item.move_reason),
            format_time(item.moved_at)
        );
    }
    println!();
    println!(
        "model:       {} {} {}",
        model.provider, model.name, model.version
    );
    for plugin in &item.plugins {
        println!(
            "plugin:      {} {} {}",
            plugin.id, plugin.name, plugin.version
        );
    }
    for resource in &item.accessed_resources {
        println!(
            "resource:    {} {} [{}] {} {}",
            resource.r#type,
            resource.name,
            resource.sensitivity_label,
            resource.action,
            resource.url
        );
    }
    for context in &item.contexts {
        println!("context:     {} {}", context.r#type, context.id);
    }
    if let Some(safety) = &item.safety {
        println!(
            "safety:      jailbreak={} xpia={} filtered={} {}",
            safety.jailbreak_detected,
            safety.cross_prompt_injection_detected,
            safety.content_filtered,
            safety.categories.join(",")
        );
    }
    if !item.sensitivity_label.is_empty() {
        println!("label:       {}", item.sensitivity_label);
    }
    let mut attributes: Vec<_> = item.attributes.iter().collect();
    attributes.sort();
    for (key, value) in attributes {
        println!("attribute:   {key}={value}");
    }
    println!("sha256:      {}", item.content_sha256);
    println!("--- prompt\n{}", item.prompt);
    println!("--- response\n{}", item.response);
}

fn preview(text: &str, width: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= width {
        flat
    } else {
        let cut: String = flat.chars().take(width - 1).collect();
        format!("{cut}…")
    }
}

fn print_list(page: pb::ListInteractionsResponse, json: bool) {
    if json {
        let items: Vec<JsonInteraction> = page
            .interactions
            .into_iter()
            .map(JsonInteraction::from_stored)
            .collect();
        let value = serde_json::json!({
            "interactions": items,
            "next_page_token": page.next_page_token,
        });
        println!("{value}");
        return;
    }
    println!(
        "{:<26}  {:<24}  {:<8}  {:<16}  PROMPT",
        "ID", "CREATED", "APP", "THREAD"
    );
    for item in &page.interactions {
        println!(
            "{:<26}  {:<24}  {:<8}  {:<16}  {}",
            item.id,
            format_time(item.created_at),
            preview(&item.app, 8),
            preview(&item.thread_id, 16),
            preview(&item.prompt, 50)
        );
    }
    if !page.next_page_token.is_empty() {
        println!("next page: --page-token {}", page.next_page_token);
    }
}

async fn token_command(
    client: HoldfastClient,
    command: TokenCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create { name, roles } => {
            let created = client
                .create_token(&name, roles.into_iter().map(pb::Role::from).collect())
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "name": name, "token": created.token })
                );
            } else {
                eprintln!("token for {name} (shown once; store it safely):");
                println!("{}", created.token);
            }
        }
        TokenCommand::List => {
            let tokens = client.list_tokens().await?;
            if json {
                let rows: Vec<_> = tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "name": t.name,
                            "roles": t.roles.iter().map(|r| role_name(*r)).collect::<Vec<_>>(),
                            "created_at": format_time(t.created_at),
                            "created_by": t.created_by,
                            "hash_prefix": t.hash_prefix,
                            "source": t.source,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!(
                    "{:<24}  {:<32}  {:<7}  {:<12}  CREATED",
                    "NAME", "ROLES", "SOURCE", "HASH"
                );
                for t in tokens {
                    let roles: Vec<&str> = t.roles.iter().map(|r| role_name(*r)).collect();
                    println!(
                        "{:<24}  {:<32}  {:<7}  {:<12}  {} by {}",
                        t.name,
                        roles.join(","),
                        t.source,
                        t.hash_prefix,
                        format_time(t.created_at),
                        t.created_by
                    );
                }
            }
        }
        TokenCommand::Revoke { name } => {
            client.revoke_token(&name).await?;
            if json {
                println!("{}", serde_json::json!({ "revoked": name }));
            } else {
                println!("revoked {name}");
            }
        }
        TokenCommand::Hash => unreachable!("handled before connecting"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn audit_command(
    client: HoldfastClient,
    command: AuditCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Query {
            from,
            to,
            actor,
            action,
            limit,
            page_token,
        } => {
            let request = pb::QueryAuditLogRequest {
                time_from: optional_timestamp(&from)?,
                time_to: optional_timestamp(&to)?,
                actor: actor.unwrap_or_default(),
                action: action.unwrap_or_default(),
                page_size: limit,
                page_token: page_token.unwrap_or_default(),
            };
            let page = client.query_audit_log(request).await?;
            if json {
                let entries: Vec<_> = page
                    .entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "sequence": e.sequence,
                            "time": format_time(e.time),
                            "actor": e.actor,
                            "action": e.action,
                            "target": e.target,
                            "parameters": serde_json::from_str::<serde_json::Value>(&e.parameters_json).unwrap_or(serde_json::Value::Null),
                            "result": e.result,
                            "previous_hash": e.previous_hash,
                            "hash": e.hash,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "entries": entries, "next_page_token": page.next_page_token })
                );
            } else {
                println!(
                    "{:>6}  {:<24}  {:<16}  {:<16}  {:<24}  RESULT",
                    "SEQ", "TIME", "ACTOR", "ACTION", "TARGET"
                );
                for e in &page.entries {
                    println!(
                        "{:>6}  {:<24}  {:<16}  {:<16}  {:<24}  {} {}",
                        e.sequence,
                        format_time(e.time),
                        e.actor,
                        e.action,
                        e.target,
                        e.result,
                        e.parameters_json
                    );
                }
                if !page.next_page_token.is_empty() {
                    println!("next page: --page-token {}", page.next_page_token);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify => {
            let verification = client.verify_audit_log().await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "intact": verification.intact,
                        "num_entries": verification.num_entries,
                        "head_hash": verification.head_hash,
                        "first_bad_sequence": verification.first_bad_sequence,
                        "problem": verification.problem,
                    })
                );
            } else if verification.intact {
                println!(
                    "audit log intact: {} entries, head hash {}",
                    verification.num_entries, verification.head_hash
                );
            } else {
                println!(
                    "audit log BROKEN at entry {}: {} ({} entries verified before it)",
                    verification.first_bad_sequence, verification.problem, verification.num_entries
                );
            }
            Ok(if verification.intact {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(4)
            })
        }
    }
}

fn case_status(status: i32) -> &'static str {
    match pb::CaseStatus::try_from(status) {
        Ok(pb::CaseStatus::Open) => "open",
        Ok(pb::CaseStatus::Closed) => "closed",
        _ => "unknown",
    }
}

fn case_json(case: &pb::Case) -> serde_json::Value {
    serde_json::json!({
        "id": case.id,
        "name": case.name,
        "description": case.description,
        "status": case_status(case.status),
        "members": case.members,
        "custodians": case.custodians,
        "created_at": format_time(case.created_at),
        "created_by": case.created_by,
        "closed_at": case.closed_at.map(|t| format_time(Some(t))),
    })
}

fn print_case(case: &pb::Case, json: bool) {
    if json {
        println!("{}", case_json(case));
        return;
    }
    println!("id:          {}", case.id);
    println!("name:        {}", case.name);
    if !case.description.is_empty() {
        println!("description: {}", case.description);
    }
    println!("status:      {}", case_status(case.status));
    println!("members:     {}", case.members.join(", "));
    println!("custodians:  {}", case.custodians.join(", "));
    println!(
        "created:     {} by {}",
        format_time(case.created_at),
        case.created_by
    );
}

async fn case_command(
    client: HoldfastClient,
    command: CaseCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        CaseCommand::Create {
            name,
            description,
            members,
            custodians,
        } => {
            let case = client
                .create_case(pb::CreateCaseRequest {
                    name,
                    description,
                    members,
                    custodians,
                })
                .await?;
            print_case(&case, json);
        }
        CaseCommand::List => {
            let cases = client.list_cases().await?;
            if json {
                let rows: Vec<_> = cases.iter().map(case_json).collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("{:<26}  {:<7}  {:>10}  NAME", "ID", "STATUS", "CUSTODIANS");
                for case in &cases {
                    println!(
                        "{:<26}  {:<7}  {:>10}  {}",
                        case.id,
                        case_status(case.status),
                        case.custodians.len(),
                        case.name
                    );
                }
            }
        }
        CaseCommand::Show { case_id } => print_case(&client.get_case(&case_id).await?, json),
        CaseCommand::Update {
            case_id,
            name,
            description,
            add_members,
            remove_members,
            add_custodians,
            remove_custodians,
        } => {
            let case = client
                .update_case(pb::UpdateCaseRequest {
                    case_id,
                    name,
                    description,
                    add_members,
                    remove_members,
                    add_custodians,
                    remove_custodians,
                })
                .await?;
            print_case(&case, json);
        }
        CaseCommand::Close { case_id } => print_case(&client.close_case(&case_id).await?, json),
        CaseCommand::Hold(command) => {
            return crate::cli_retention::case_hold_command(client, command, json).await
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A snippet with its highlights marked `[like this]` (or bold on a terminal).
fn render_snippet(snippet: &pb::Snippet, bold: bool) -> String {
    let (open, close) = if bold {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("[", "]")
    };
    let text = &snippet.text;
    let mut out = String::new();
    let mut at = 0usize;
    for highlight in &snippet.highlights {
        let (start, end) = (highlight.start as usize, highlight.end as usize);
        if start < at
            || end > text.len()
            || !text.is_char_boundary(start)
            || !text.is_char_boundary(end)
        {
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(open);
        out.push_str(&text[start..end]);
        out.push_str(close);
        at = end;
    }
    out.push_str(&text[at..]);
    out.chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect()
}

fn print_search(response: &pb::SearchResponse, json: bool) {
    if json {
        let hits: Vec<_> = response
            .hits
            .iter()
            .map(|hit| {
                serde_json::json!({
                    "id": hit.id,
                    "mailbox_id": hit.mailbox_id,
                    "thread_id": hit.thread_id,
                    "app": hit.app,
                    "created_at": format_time(hit.created_at),
                    "location": location_name(hit.location),
                    "score": hit.score,
                    "snippets": hit.snippets.iter().map(|s| serde_json::json!({
                        "field": s.field,
                        "text": s.text,
                        "highlights": s.highlights.iter().map(|h| [h.start, h.end]).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let value = serde_json::json!({
            "total": response.total,
            "hits": hits,
            "counts_by_mailbox": response.counts_by_mailbox,
            "counts_by_app": response.counts_by_app,
            "counts_by_location": response.counts_by_location,
            "next_page_token": response.next_page_token,
        });
        println!("{value}");
        return;
    }
    let bold = std::io::IsTerminal::is_terminal(&std::io::stdout());
    println!("{} matching interactions", response.total);
    let mut counts: Vec<_> = response.counts_by_location.iter().collect();
    counts.sort();
    let locations: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    if !locations.is_empty() {
        println!("by location: {}", locations.join(", "));
    }
    let mut by_mailbox: Vec<_> = response.counts_by_mailbox.iter().collect();
    by_mailbox.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mailboxes: Vec<String> = by_mailbox
        .iter()
        .take(10)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if !mailboxes.is_empty() {
        println!("by mailbox: {}", mailboxes.join(", "));
    }
    println!();
    println!(
        "{:<26}  {:<24}  {:<28}  {:<8}  {:<6}  SNIPPET",
        "ID", "CREATED", "MAILBOX", "APP", "WHERE"
    );
    for hit in &response.hits {
        let snippet = hit
            .snippets
            .first()
            .map(|s| format!("{}: {}", s.field, render_snippet(s, bold)))
            .unwrap_or_default();
        let place = if hit.location == pb::Location::HoldsArea as i32 {
            "holds"
        } else {
            "active"
        };
        println!(
            "{:<26}  {:<24}  {:<28}  {:<8}  {:<6}  {}",
            hit.id,
            format_time(hit.created_at),
            preview(&hit.mailbox_id, 28),
            preview(&hit.app, 8),
            place,
            preview(&snippet, 200)
        );
    }
    if !response.next_page_token.is_empty() {
        println!("next page: --page-token {}", response.next_page_token);
    }
}

async fn export(client: HoldfastClient, args: ExportArgs, json: bool) -> anyhow::Result<ExitCode> {
    let (Some(case_id), Some(query), Some(out)) = (args.case_id, args.query, args.out) else {
        bail!("export needs --case, --query and --out (or: export verify DIR)");
    };
    if crate::bag::is_complete(&out) {
        bail!(
            "{} already holds a finished export; check it with `holdfast export verify`",
            out.display()
        );
    }
    let case = client.get_case(&case_id).await?;
    let parameters = match crate::bag::read_parameters(&out)? {
        Some(existing) => {
            if existing.case_id != case_id
                || existing.query != query
                || existing.mailboxes != args.mailboxes
            {
                bail!(
                    "{} holds an interrupted export of another search (case {}, query {:?}); \
                     use another --out",
                    out.display(),
                    existing.case_id,
                    existing.query
                );
            }
            existing
        }
        None => {
            if out.exists() && std::fs::read_dir(&out)?.next().is_some() {
                bail!("{} exists and is not empty", out.display());
            }
            let parameters = crate::bag::ExportParameters {
                case_id: case_id.clone(),
                case_name: case.name.clone(),
                query: query.clone(),
                mailboxes: args.mailboxes.clone(),
                principal: client.who_am_i().await?.name,
                started_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            };
            crate::bag::write_parameters(&out, &parameters)?;
            parameters
        }
    };
    let (mut payload, after_id, already) = crate::bag::resume_point(&out)?;
    if already > 0 && !json {
        eprintln!(
            "resuming after {already} interactions already in {}",
            out.display()
        );
    }
    let mut stream = client
        .export(pb::ExportRequest {
            case_id: case_id.clone(),
            query: query.clone(),
            mailboxes: args.mailboxes.clone(),
            after_id: after_id.clone().unwrap_or_default(),
        })
        .await?;
    let progress = if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {pos} interactions ({per_sec})",
        )
        .expect("valid template"),
    );
    progress.set_position(already);
    let mut trailer = None;
    // What this call received, as the server's trailer digests it (the trailer covers the
    // items of this call only, so a resumed export is checked part by part).
    let mut received = crate::bag::TrailerDigest::default();
    let mut last_id = after_id;
    while let Some(message) = stream.message().await.map_err(crate::ClientError::from)? {
        match message.message {
            Some(pb::export_message::Message::Interaction(item)) => {
                if trailer.is_some() {
                    bail!("the server sent items after its trailer; the export is not complete");
                }
                let line = serde_json::to_string(&JsonInteraction::from_stored(item))?;
                let (id, content_sha256) =
                    crate::bag::check_line(&line, already + received.count() + 1)?;
                if last_id.as_ref().is_some_and(|last| *last >= id) {
                    bail!("the server sent {id} out of order; the export is not complete");
                }
                crate::bag::append_line(&mut payload, &line)?;
                received.add(&content_sha256);
                last_id = Some(id);
                progress.inc(1);
            }
            Some(pb::export_message::Message::Trailer(t)) => trailer = Some(t),
            None => {}
        }
    }
    progress.finish_and_clear();
    payload.sync_all()?;
    let Some(trailer) = trailer else {
        bail!("the export ended without its trailer; run the same command again to resume");
    };
    let (digest, count) = received.finish();
    if count != trailer.count || digest != trailer.digest {
        bail!(
            "the items received ({count}) do not match the server's trailer ({} items, digest \
             {}); the bag was not completed",
            trailer.count,
            trailer.digest
        );
    }
    let count = crate::bag::finish(
        &out,
        &parameters,
        &Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )?;
    if json {
        println!("{}", serde_json::json!({ "out": out, "items": count }));
    } else {
        println!("exported {count} interactions to {} (BagIt)", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn policy_json(policy: &pb::RetentionPolicy) -> serde_json::Value {
    let spec = policy.spec.clone().unwrap_or_default();
    serde_json::json!({
        "id": policy.id,
        "name": spec.name,
        "org_wide": spec.org_wide,
        "include": spec.include,
        "exclude": spec.exclude,
        "apps": spec.apps,
        "action": match pb::PolicyAction::try_from(spec.action) {
            Ok(pb::PolicyAction::RetainOnly) => "retain_only",
            Ok(pb::PolicyAction::DeleteOnly) => "delete_only",
            Ok(pb::PolicyAction::RetainThenDelete) => "retain_then_delete",
            _ => "unknown",
        },
        "days": if spec.days == 0 { serde_json::Value::String("forever".into()) } else { spec.days.into() },
        "enabled": spec.enabled,
        "locked": policy.locked,
        "created_at": format_time(policy.created_at),
        "created_by": policy.created_by,
    })
}

async fn policy_command(
    client: HoldfastClient,
    command: PolicyCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut retention = client.retention.clone();
    let status = crate::ClientError::from;
    let print = |policy: &pb::RetentionPolicy| {
        let value = policy_json(policy);
        if json {
            println!("{value}");
        } else {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).expect("serialisable")
            );
        }
    };
    match command {
        PolicyCommand::Create(args) => {
            let policy = retention
                .create_policy(pb::CreatePolicyRequest {
                    spec: Some(args.spec()?),
                })
                .await
                .map_err(status)?
                .into_inner();
            print(&policy);
        }
        PolicyCommand::Update { id, args } => {
            let policy = retention
                .update_policy(pb::UpdatePolicyRequest {
                    id,
                    spec: Some(args.spec()?),
                })
                .await
                .map_err(status)?
                .into_inner();
            print(&policy);
        }
        PolicyCommand::List => {
            let policies = retention
                .list_policies(pb::ListPoliciesRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .policies;
            if json {
                println!(
                    "{}",
                    serde_json::Value::Array(policies.iter().map(policy_json).collect())
                );
            } else {
                println!(
                    "{:<26}  {:<18}  {:>6}  {:<7}  {:<6}  NAME",
                    "ID", "ACTION", "DAYS", "SCOPE", "LOCKED"
                );
                for policy in &policies {
                    let value = policy_json(policy);
                    println!(
                        "{:<26}  {:<18}  {:>6}  {:<7}  {:<6}  {}{}",
                        policy.id,
                        value["action"].as_str().unwrap_or_default(),
                        value["days"].to_string().trim_matches('"'),
                        if value["org_wide"] == true {
                            "org"
                        } else {
                            "include"
                        },
                        policy.locked,
                        value["name"].as_str().unwrap_or_default(),
                        if value["enabled"] == true {
                            ""
                        } else {
                            " (disabled)"
                        }
                    );
                }
            }
        }
        PolicyCommand::Show { id } => {
            let policy = retention
                .get_policy(pb::PolicyRef { id })
                .await
                .map_err(status)?
                .into_inner();
            print(&policy);
        }
        PolicyCommand::Delete { id } => {
            retention
                .delete_policy(pb::PolicyRef { id: id.clone() })
                .await
                .map_err(status)?;
            println!("deleted policy {id}");
        }
        PolicyCommand::Preview { id, args } => {
            let preview = retention
                .preview_policy(pb::PreviewPolicyRequest {
                    policy_id: id.unwrap_or_default(),
                    spec: Some(args.spec()?),
                })
                .await
                .map_err(status)?
                .into_inner();
            crate::cli_retention::print_preview(&preview, json);
        }
        PolicyCommand::Lock { id } => {
            let policy = retention
                .lock_policy(pb::PolicyRef { id })
                .await
                .map_err(status)?
                .into_inner();
            print(&policy);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn hold_json(hold: &pb::HoldInfo) -> serde_json::Value {
    serde_json::json!({
        "id": hold.id,
        "kind": match pb::HoldKind::try_from(hold.kind) {
            Ok(pb::HoldKind::Delay) => "delay",
            Ok(pb::HoldKind::Case) => "case",
            _ => "litigation",
        },
        "mailbox_id": hold.mailbox_id,
        "days": if hold.days == 0 { serde_json::Value::Null } else { hold.days.into() },
        "until": hold.until.map(|t| format_time(Some(t))),
        "created_at": format_time(hold.created_at),
        "created_by": hold.created_by,
        "released_at": hold.released_at.map(|t| format_time(Some(t))),
        "released_by": hold.released_by,
    })
}

async fn hold_command(
    client: HoldfastClient,
    command: HoldCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut retention = client.retention.clone();
    let status = crate::ClientError::from;
    let holds = match command {
        HoldCommand::Place { mailbox, days } => vec![retention
            .place_litigation_hold(pb::PlaceLitigationHoldRequest {
                mailbox_id: mailbox,
                days,
            })
            .await
            .map_err(status)?
            .into_inner()],
        HoldCommand::Release { id } => {
            vec![retention
                .release_hold(pb::HoldRef { id })
                .await
                .map_err(status)?
                .into_inner()]
        }
        HoldCommand::ClearDelay { id } => {
            vec![retention
                .clear_delay_hold(pb::HoldRef { id })
                .await
                .map_err(status)?
                .into_inner()]
        }
        HoldCommand::List { mailbox, all } => {
            retention
                .list_holds(pb::ListHoldsRequest {
                    mailbox_id: mailbox.unwrap_or_default(),
                    include_released: all,
                })
                .await
                .map_err(status)?
                .into_inner()
                .holds
        }
    };
    if json {
        println!(
            "{}",
            serde_json::Value::Array(holds.iter().map(hold_json).collect())
        );
    } else {
        println!(
            "{:<26}  {:<10}  {:<28}  {:<24}  RELEASED",
            "ID", "KIND", "MAILBOX", "UNTIL / DAYS"
        );
        for hold in &holds {
            let value = hold_json(hold);
            let term = match (&value["until"], hold.days) {
                (serde_json::Value::String(until), _) => until.clone(),
                (_, 0) => "forever".to_string(),
                (_, days) => format!("{days} days"),
            };
            println!(
                "{:<26}  {:<10}  {:<28}  {:<24}  {}",
                hold.id,
                value["kind"].as_str().unwrap_or_default(),
                hold.mailbox_id,
                term,
                hold.released_at
                    .map(|t| format_time(Some(t)))
                    .unwrap_or_else(|| "-".into())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_explanation(explained: &pb::ExplainRetentionResponse, json: bool) {
    let retain = if explained.retained_forever {
        "forever".to_string()
    } else if explained.retain_until.is_some() {
        format_time(explained.retain_until)
    } else {
        "nothing retains it".to_string()
    };
    let delete = if explained.delete_at.is_some() {
        format_time(explained.delete_at)
    } else {
        "never (by retention)".to_string()
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "id": explained.id,
                "mailbox_id": explained.mailbox_id,
                "location": location_name(explained.location),
                "move_reason": move_reason_name(explained.move_reason),
                "created_at": format_time(explained.created_at),
                "retain_until": retain,
                "delete_at": delete,
                "destroyable": explained.destroyable,
                "next_check": explained.next_check.map(|t| format_time(Some(t))),
                "reasons": explained.reasons,
            })
        );
        return;
    }
    println!("id:            {}", explained.id);
    println!("mailbox:       {}", explained.mailbox_id);
    println!("created at:    {}", format_time(explained.created_at));
    print!("location:      {}", location_name(explained.location));
    if explained.location == pb::Location::HoldsArea as i32 {
        print!(
            " ({}, since {})",
            move_reason_name(explained.move_reason),
            format_time(explained.moved_at)
        );
    }
    println!();
    println!("retained until: {retain}");
    println!("leaves view at: {delete}");
    println!(
        "destroyable now: {}",
        if explained.destroyable { "yes" } else { "no" }
    );
    for reason in &explained.reasons {
        println!("  - {reason}");
    }
}
