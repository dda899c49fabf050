//! `holdfast case`, `search` and `export`: eDiscovery cases, search and BagIt export.

use super::*;

pub(super) fn case_status(status: i32) -> &'static str {
    match pb::CaseStatus::try_from(status) {
        Ok(pb::CaseStatus::Open) => "open",
        Ok(pb::CaseStatus::Closed) => "closed",
        _ => "unknown",
    }
}

pub(super) fn case_json(case: &pb::Case) -> serde_json::Value {
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

pub(super) fn print_case(case: &pb::Case, json: bool) {
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

pub(super) async fn case_command(
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
            return super::records::case_hold_command(client, command, json).await
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A snippet with its highlights marked `[like this]` (or bold on a terminal).
pub(super) fn render_snippet(snippet: &pb::Snippet, bold: bool) -> String {
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

pub(super) fn print_search(response: &pb::SearchResponse, json: bool) {
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

pub(super) async fn export(
    client: HoldfastClient,
    args: ExportArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
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
