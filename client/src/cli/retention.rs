//! `holdfast policy`, `hold` and `explain`: retention policies, litigation holds and why an
//! item is kept.

use super::*;

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

pub(super) async fn policy_command(
    client: HoldfastClient,
    command: PolicyCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let retention = client.clone();
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
                .await?;
            print(&policy);
        }
        PolicyCommand::Update { id, args } => {
            let policy = retention
                .update_policy(pb::UpdatePolicyRequest {
                    id,
                    spec: Some(args.spec()?),
                })
                .await?;
            print(&policy);
        }
        PolicyCommand::List => {
            let policies = retention
                .list_policies(pb::ListPoliciesRequest {})
                .await?
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
            let policy = retention.get_policy(pb::PolicyRef { id }).await?;
            print(&policy);
        }
        PolicyCommand::Delete { id } => {
            retention
                .delete_policy(pb::PolicyRef { id: id.clone() })
                .await?;
            println!("deleted policy {id}");
        }
        PolicyCommand::Preview { id, args } => {
            let preview = retention
                .preview_policy(pb::PreviewPolicyRequest {
                    policy_id: id.unwrap_or_default(),
                    spec: Some(args.spec()?),
                })
                .await?;
            super::records::print_preview(&preview, json);
        }
        PolicyCommand::Lock { id } => {
            let policy = retention.lock_policy(pb::PolicyRef { id }).await?;
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

pub(super) async fn hold_command(
    client: HoldfastClient,
    command: HoldCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let retention = client.clone();
    let holds = match command {
        HoldCommand::Place { mailbox, days } => vec![
            retention
                .place_litigation_hold(pb::PlaceLitigationHoldRequest {
                    mailbox_id: mailbox,
                    days,
                })
                .await?,
        ],
        HoldCommand::Release { id } => {
            vec![retention.release_hold(pb::HoldRef { id }).await?]
        }
        HoldCommand::ClearDelay { id } => {
            vec![retention.clear_delay_hold(pb::HoldRef { id }).await?]
        }
        HoldCommand::List { mailbox, all } => {
            retention
                .list_holds(pb::ListHoldsRequest {
                    mailbox_id: mailbox.unwrap_or_default(),
                    include_released: all,
                })
                .await?
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

pub(super) fn print_explanation(explained: &pb::ExplainRetentionResponse, json: bool) {
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
