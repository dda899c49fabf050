//! CLI commands around the sweeper: mailbox status, sweeps, dispositions, case holds,
//! purge requests and policy previews.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Value};

use super::{format_time, hold_json, optional_timestamp, policy_json};
use crate::json::move_reason_name;
use crate::{pb, HoldfastClient};

#[derive(Debug, Subcommand)]
pub enum MailboxCommand {
    /// Policies and holds on a mailbox, and its items by location.
    Status { mailbox: String },
}

#[derive(Debug, Subcommand)]
pub enum CaseHoldCommand {
    /// Holds the custodians' items that match a query (or all of them) and a date range.
    Place {
        #[arg(long = "case")]
        case_id: String,
        #[arg(long)]
        name: String,
        /// Custodian to hold (repeatable); default: every custodian of the case.
        #[arg(long = "custodian")]
        custodians: Vec<String>,
        /// KQL; default: every item.
        #[arg(long, default_value = "")]
        query: String,
        /// Only items created at or after this (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        from: Option<String>,
        /// Only items created before this.
        #[arg(long)]
        to: Option<String>,
    },
    /// A case's holds with how many items each holds.
    List {
        #[arg(long = "case")]
        case_id: String,
        /// Include released holds.
        #[arg(long)]
        all: bool,
    },
    /// Releases a case hold; its custodians get a delay hold.
    Release {
        #[arg(long = "case")]
        case_id: String,
        hold_id: String,
    },
}

pub(super) fn print_value(value: &Value, json: bool) {
    if json {
        println!("{value}");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("serialisable")
        );
    }
}

pub(super) fn case_hold_json(hold: &pb::HoldInfo) -> Value {
    let mut value = hold_json(hold);
    value["kind"] = "case".into();
    value["case_id"] = hold.case_id.clone().into();
    value["name"] = hold.name.clone().into();
    value["custodians"] = hold.custodians.clone().into();
    value["query"] = hold.query.clone().into();
    value["created_from"] = hold.created_from.map(|t| format_time(Some(t))).into();
    value["created_to"] = hold.created_to.map(|t| format_time(Some(t))).into();
    value["items_held"] = hold.items_held.into();
    value
}

pub async fn mailbox_command(
    client: HoldfastClient,
    command: MailboxCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let MailboxCommand::Status { mailbox } = command;
    let status = client
        .get_mailbox_status(pb::GetMailboxStatusRequest {
            mailbox_id: mailbox,
        })
        .await?;
    let holds: Vec<Value> = status
        .holds
        .iter()
        .map(|h| {
            if h.kind == pb::HoldKind::Case as i32 {
                case_hold_json(h)
            } else {
                hold_json(h)
            }
        })
        .collect();
    if json {
        println!(
            "{}",
            json!({
                "mailbox_id": status.mailbox_id,
                "active_items": status.active_items,
                "holds_area_items": status.holds_area_items,
                "policies": status.policies.iter().map(policy_json).collect::<Vec<_>>(),
                "holds": holds,
                "default_retention_days": status.default_retention_days,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("mailbox:          {}", status.mailbox_id);
    println!("active items:     {}", status.active_items);
    println!("holds-area items: {}", status.holds_area_items);
    println!(
        "default retention: {}",
        match status.default_retention_days {
            0 => "none".to_string(),
            days => format!("{days} days (when no policy applies)"),
        }
    );
    println!("policies:");
    if status.policies.is_empty() {
        println!("  (none)");
    }
    for policy in &status.policies {
        let value = policy_json(policy);
        println!(
            "  {}  {} {} days{}  {}",
            policy.id,
            value["action"].as_str().unwrap_or_default(),
            value["days"].to_string().trim_matches('"'),
            if policy.locked { " (locked)" } else { "" },
            value["name"].as_str().unwrap_or_default()
        );
    }
    println!("holds:");
    if holds.is_empty() {
        println!("  (none)");
    }
    for hold in &holds {
        println!(
            "  {}  {}{}",
            hold["id"].as_str().unwrap_or_default(),
            hold["kind"].as_str().unwrap_or_default(),
            match hold["until"].as_str() {
                Some(until) => format!(" until {until}"),
                None => String::new(),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn stats_json(stats: &pb::SweepStats) -> Value {
    json!({
        "started_at": stats.started_at.map(|t| format_time(Some(t))),
        "duration_ms": stats.duration_ms,
        "examined": stats.examined,
        "moved": stats.moved,
        "destroyed": stats.destroyed,
        "skipped_held": stats.skipped_held,
        "errors": stats.errors,
        "item_errors": stats.item_errors,
        "unevaluable_holds": stats.unevaluable_holds,
    })
}

pub async fn sweep_command(
    client: HoldfastClient,
    status: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let retention = client.clone();
    if status {
        let status = retention
            .get_sweeper_status(pb::GetSweeperStatusRequest {})
            .await?;
        print_value(
            &json!({
                "running": status.running,
                "interval_seconds": status.interval_seconds,
                "replan_pending": status.replan_pending,
                "last_run": status.last_run.as_ref().map(stats_json),
                "last_error": status.last_error,
                "totals": status.totals.as_ref().map(stats_json),
                "unevaluable_hold_ids": status.unevaluable_hold_ids,
                "erasure": {
                    "pending": status.erasure_pending,
                    "oldest": status.erasure_oldest.map(|t| format_time(Some(t))),
                    "bound_seconds": status.erasure_bound_seconds,
                    "erased_total": status.erased_total,
                    "last_error": status.last_erasure_error,
                },
            }),
            json,
        );
        return Ok(ExitCode::SUCCESS);
    }
    let stats = retention.run_sweep(pb::RunSweepRequest {}).await?;
    if json {
        println!("{}", stats_json(&stats));
    } else {
        println!(
            "moved {}, destroyed {}, skipped (held) {}, examined {} in {} ms",
            stats.moved, stats.destroyed, stats.skipped_held, stats.examined, stats.duration_ms
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn dispositions_command(
    client: HoldfastClient,
    mailbox: Option<String>,
    limit: u32,
    page_token: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let page = client
        .list_dispositions(pb::ListDispositionsRequest {
            mailbox_id: mailbox.unwrap_or_default(),
            page_size: limit,
            page_token: page_token.unwrap_or_default(),
        })
        .await?;
    let records: Vec<Value> = page
        .dispositions
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "mailbox_id": d.mailbox_id,
                "content_sha256": d.content_sha256,
                "created_at": format_time(d.created_at),
                "moved_at": format_time(d.moved_at),
                "purged_at": format_time(d.purged_at),
                "reason": move_reason_name(d.reason),
                "policies": d.policies,
            })
        })
        .collect();
    if json {
        println!(
            "{}",
            json!({ "dispositions": records, "next_page_token": page.next_page_token })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<26}  {:<28}  {:<20}  {:<15}  CONTENT SHA-256",
        "ID", "MAILBOX", "PURGED AT", "REASON"
    );
    for record in &records {
        println!(
            "{:<26}  {:<28}  {:<20}  {:<15}  {}",
            record["id"].as_str().unwrap_or_default(),
            record["mailbox_id"].as_str().unwrap_or_default(),
            record["purged_at"].as_str().unwrap_or_default(),
            record["reason"].as_str().unwrap_or_default(),
            record["content_sha256"].as_str().unwrap_or_default()
        );
    }
    if !page.next_page_token.is_empty() {
        println!("next page: --page-token {}", page.next_page_token);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn purge_command(
    client: HoldfastClient,
    request: pb::PurgeRequest,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let response = client.purge(request).await?;
    if json {
        println!(
            "{}",
            json!({
                "dry_run": response.dry_run,
                "max_per_mailbox": response.max_per_mailbox,
                "mailboxes": response.mailboxes.iter().map(|m| json!({
                    "mailbox_id": m.mailbox_id, "matched": m.matched, "selected": m.selected,
                    "moved": m.moved, "capped": m.capped })).collect::<Vec<_>>(),
                "ids": response.ids,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    if response.dry_run {
        println!("dry run: nothing was moved");
    }
    println!(
        "{:<28}  {:>8}  {:>8}  {:>8}",
        "MAILBOX", "MATCHED", "SELECTED", "MOVED"
    );
    for mailbox in &response.mailboxes {
        println!(
            "{:<28}  {:>8}  {:>8}  {:>8}{}",
            mailbox.mailbox_id,
            mailbox.matched,
            mailbox.selected,
            mailbox.moved,
            if mailbox.capped {
                format!(
                    "  (capped at {}; run again for the rest)",
                    response.max_per_mailbox
                )
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn case_hold_command(
    client: HoldfastClient,
    command: CaseHoldCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let discovery = client.clone();
    let holds = match command {
        CaseHoldCommand::Place {
            case_id,
            name,
            custodians,
            query,
            from,
            to,
        } => vec![
            discovery
                .place_case_hold(pb::PlaceCaseHoldRequest {
                    case_id,
                    name,
                    custodians,
                    query,
                    created_from: optional_timestamp(&from)?,
                    created_to: optional_timestamp(&to)?,
                })
                .await?,
        ],
        CaseHoldCommand::List { case_id, all } => {
            discovery
                .list_case_holds(pb::ListCaseHoldsRequest {
                    case_id,
                    include_released: all,
                })
                .await?
                .holds
        }
        CaseHoldCommand::Release { case_id, hold_id } => vec![
            discovery
                .release_case_hold(pb::ReleaseCaseHoldRequest { case_id, hold_id })
                .await?,
        ],
    };
    let values: Vec<Value> = holds.iter().map(case_hold_json).collect();
    if json {
        println!("{}", Value::Array(values));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<26}  {:<20}  {:>10}  {:<20}  QUERY",
        "ID", "NAME", "ITEMS HELD", "RELEASED"
    );
    for (hold, value) in holds.iter().zip(&values) {
        println!(
            "{:<26}  {:<20}  {:>10}  {:<20}  {}",
            hold.id,
            hold.name,
            hold.items_held,
            value["released_at"].as_str().unwrap_or("-"),
            if hold.query.is_empty() {
                "(all items)"
            } else {
                &hold.query
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn print_preview(preview: &pb::PreviewPolicyResponse, json: bool) {
    if json {
        println!(
            "{}",
            json!({
                "items_examined": preview.items_examined,
                "total_move_now": preview.total_move_now,
                "total_destroyable": preview.total_destroyable,
                "mailboxes": preview.mailboxes.iter().map(|m| json!({
                    "mailbox_id": m.mailbox_id, "items": m.items, "move_now": m.move_now,
                    "destroyable": m.destroyable })).collect::<Vec<_>>(),
            })
        );
        return;
    }
    println!(
        "{:<28}  {:>10}  {:>12}  {:>16}",
        "MAILBOX", "IN SCOPE", "WOULD MOVE", "WOULD BE PURGED"
    );
    for mailbox in &preview.mailboxes {
        println!(
            "{:<28}  {:>10}  {:>12}  {:>16}",
            mailbox.mailbox_id, mailbox.items, mailbox.move_now, mailbox.destroyable
        );
    }
    println!(
        "total: {} would move to the holds area now, {} would become destroyable ({} items examined)",
        preview.total_move_now, preview.total_destroyable, preview.items_examined
    );
}
