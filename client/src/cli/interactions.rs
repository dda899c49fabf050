//! `holdfast ingest`, `get` and `list`: logging interactions and reading them back.

use super::*;

pub(super) async fn ingest_file(
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

pub(super) fn print_interaction(item: pb::Interaction, json: bool) {
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

pub(super) fn preview(text: &str, width: usize) -> String {
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

pub(super) fn print_list(page: pb::ListInteractionsResponse, json: bool) {
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
