//! `holdfast token` and `holdfast audit`: tokens, the audit log and its verification.

use super::*;

pub(super) async fn token_command(
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

pub(super) async fn audit_command(
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
