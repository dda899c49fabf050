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

mod admin;
mod discovery;
mod interactions;
mod records;
mod retention;

use admin::*;
use discovery::*;
use interactions::*;
use retention::*;

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
    Mailbox(records::MailboxCommand),
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
    Hold(records::CaseHoldCommand),
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
                .explain_retention(pb::ExplainRetentionRequest { id })
                .await?;
            print_explanation(&explained, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Case(command) => {
            let client = cli.connection.connect().await?;
            case_command(client, command, json).await
        }
        Command::Mailbox(command) => {
            let client = cli.connection.connect().await?;
            records::mailbox_command(client, command, json).await
        }
        Command::Sweep { status } => {
            let client = cli.connection.connect().await?;
            records::sweep_command(client, status, json).await
        }
        Command::Dispositions {
            mailbox,
            limit,
            page_token,
        } => {
            let client = cli.connection.connect().await?;
            records::dispositions_command(client, mailbox, limit, page_token, json).await
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
            records::purge_command(client, request, json).await
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

pub(crate) fn format_time(timestamp: Option<prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "-".into())
}
