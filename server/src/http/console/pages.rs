//! The console's pages. Each handler takes the signed-in `Console`, calls the application
//! layer, and renders HTML; changes are POSTed forms carrying the session's CSRF token,
//! answered with a redirect (post/redirect/get). Times are shown in UTC; statuses in words.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use super::exports::JobState;
use super::{Console, Page, PageError};
use crate::app::cases::{CaseChange, NewCase};
use crate::app::export::ExportRequest;
use crate::app::holds::NewCaseHold;
use crate::app::policies::{action_name, PolicySpec};
use crate::app::search::{HitLocation, SearchRequest, Snippet};
use crate::audit::AuditQuery;
use crate::auth::Role;
use crate::cases::CaseStatus;
use crate::domain::StoredInteraction;
use crate::http::HttpState;
use crate::lifecycle::HoldKind;
use crate::search::searcher::Sort;

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn encode(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// The frame of every page: skip link, navigation for the caller's roles, sign-out, the
/// session-timeout notice, and the page's own content under one `h1`.
fn page(title: &str, console: Option<&Console>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · holdfast" }
                link rel="stylesheet" href="/console/console.css";
                script src="/console/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "holdfast" }
                    @if let Some(console) = console {
                        nav aria-label="Main" {
                            ul {
                                @if console.principal.has_any(&[Role::Ediscovery, Role::EdiscoveryAdmin]) {
                                    li { a href="/cases" { "Cases" } }
                                }
                                @if console.principal.has_any(&[Role::RetentionAdmin, Role::EdiscoveryAdmin, Role::Auditor, Role::Admin]) {
                                    li { a href="/policies" { "Policies" } }
                                    li { a href="/holds" { "Holds" } }
                                    li { a href="/mailboxes" { "Mailboxes" } }
                                    li { a href="/sweeper" { "Sweeper" } }
                                }
                                @if console.principal.has_any(&[Role::RetentionAdmin, Role::Auditor, Role::Admin]) {
                                    li { a href="/dispositions" { "Dispositions" } }
                                }
                                @if console.principal.has_any(&[Role::Auditor, Role::Admin]) {
                                    li { a href="/audit" { "Audit log" } }
                                }
                                @if console.principal.has_any(&[Role::Admin]) {
                                    li { a href="/tokens" { "Tokens" } }
                                }
                            }
                        }
                        div.who {
                            "Signed in as " strong { (console.principal.name) }
                            form method="post" action="/signout" {
                                input type="hidden" name="csrf" value=(console.session.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                        p.timeout role="note" data-seconds=(console.session.seconds_left(std::time::Instant::now())) {
                            "Your session ends after 30 minutes without activity."
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

pub fn error_page(message: &str) -> Markup {
    page(
        "Something went wrong",
        None,
        html! {
            div.error-summary role="alert" tabindex="-1" {
                h2 { "There is a problem" }
                p { (message) }
            }
            p { a href="/cases" { "Back to the console" } }
        },
    )
}

pub fn signin_form(problem: Option<&str>, next: &str) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            @if let Some(problem) = problem {
                div.error-summary role="alert" tabindex="-1" {
                    h2 { "There is a problem" }
                    p { a href="#token" { (problem) } }
                }
            }
            form method="post" action="/signin" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Bearer token" }
                p.hint #token-hint { "The token you were given (it starts with hf_). It is exchanged for a session and not kept by your browser." }
                input #token type="password" name="token" autocomplete="off" required aria-describedby="token-hint";
                button type="submit" { "Sign in" }
            }
        },
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct NextQuery {
    next: String,
}

pub async fn signin_page(Query(query): Query<NextQuery>) -> Markup {
    signin_form(None, &query.next)
}

fn status_word(status: CaseStatus) -> &'static str {
    match status {
        CaseStatus::Open => "Open",
        CaseStatus::Closed => "Closed",
    }
}

fn csrf_field(console: &Console) -> Markup {
    html! { input type="hidden" name="csrf" value=(console.session.csrf); }
}

/// Splits a text area of names (one per line or comma-separated) into a list.
fn names(text: &str) -> Vec<String> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(String::from)
        .collect()
}

pub async fn cases(State(state): State<HttpState>, console: Console) -> Page {
    let cases = state.app.list_cases(&console.principal).await?;
    let content = html! {
        @if cases.is_empty() {
            p { "No cases yet." }
        } @else {
            table {
                caption { "Cases you are a member of" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Status" } th scope="col" { "Custodians" } th scope="col" { "Created" } } }
                tbody {
                    @for case in &cases {
                        tr {
                            td { a href={ "/cases/" (case.id) } { (case.name) } }
                            td { (status_word(case.status)) }
                            td { (case.custodians.len()) }
                            td { (time(case.created_at)) " by " (case.created_by) }
                        }
                    }
                }
            }
        }
        h2 { "New case" }
        form method="post" action="/cases" {
            (csrf_field(&console))
            label for="name" { "Name" }
            input #name name="name" required maxlength="200";
            label for="description" { "Description" }
            textarea #description name="description" {}
            label for="custodians" { "Custodians" }
            p.hint #custodians-hint { "Mailboxes, one per line." }
            textarea #custodians name="custodians" aria-describedby="custodians-hint" {}
            label for="members" { "Other members" }
            p.hint #members-hint { "Principal names, one per line. You are a member already." }
            textarea #members name="members" aria-describedby="members-hint" {}
            button type="submit" { "Create case" }
        }
    };
    Ok(page("Cases", Some(&console), content))
}

#[derive(Deserialize)]
pub struct NewCaseForm {
    #[serde(default)]
    csrf: String,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    custodians: String,
    #[serde(default)]
    members: String,
}

pub async fn create_case(
    State(state): State<HttpState>,
    console: Console,
    Form(form): Form<NewCaseForm>,
) -> Result<Redirect, PageError> {
    console.check_csrf(&form.csrf)?;
    let case = state
        .app
        .create_case(
            &console.principal,
            NewCase {
                name: form.name,
                description: form.description,
                members: names(&form.members),
                custodians: names(&form.custodians),
            },
        )
        .await?;
    Ok(Redirect::to(&format!("/cases/{}", case.id)))
}

pub async fn case_home(
    State(state): State<HttpState>,
    console: Console,
    Path(case_id): Path<String>,
) -> Page {
    let case = state.app.get_case(&console.principal, &case_id).await?;
    let holds = state
        .app
        .list_case_holds(&console.principal, &case_id, true)
        .await?;
    let open = case.status == CaseStatus::Open;
    let exports = state.console.exports.list(&console.principal, &case_id);
    let content = html! {
        p { "Status: " strong { (status_word(case.status)) } @if let Some(closed) = case.closed_at { " since " (time(closed)) } }
        @if !case.description.is_empty() { p { (case.description) } }
        @if open {
            p { a.button href={ "/cases/" (case.id) "/search" } { "Search this case" } }
        }
        h2 { "Custodians and members" }
        div.columns {
            div {
                h3 { "Custodians" }
                @if case.custodians.is_empty() { p { "None yet." } }
                ul { @for custodian in &case.custodians { li { (custodian) } } }
            }
            div {
                h3 { "Members" }
                ul { @for member in &case.members { li { (member) } } }
            }
        }
        @if open {
            form method="post" action={ "/cases/" (case.id) "/edit" } {
                (csrf_field(&console))
                fieldset {
                    legend { "Change custodians and members" }
                    label for="add_custodians" { "Add custodians (one per line)" }
                    textarea #add_custodians name="add_custodians" {}
                    label for="remove_custodians" { "Remove custodians (one per line)" }
                    textarea #remove_custodians name="remove_custodians" {}
                    label for="add_members" { "Add members" }
                    textarea #add_members name="add_members" {}
                    label for="remove_members" { "Remove members" }
                    textarea #remove_members name="remove_members" {}
                    button type="submit" { "Save changes" }
                }
            }
        }
        h2 { "Holds" }
        @if holds.is_empty() { p { "No holds on this case." } }
        @else {
            table {
                caption { "Case holds" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Query" } th scope="col" { "Status" } th scope="col" { "Items held" } th scope="col" { "Action" } } }
                tbody {
                    @for view in &holds {
                        @let hold = &view.record;
                        @let (name, query) = match &hold.kind { HoldKind::Case { name, query, .. } => (name.clone(), query.clone()), _ => (String::new(), String::new()) };
                        tr {
                            td { (name) }
                            td { code { @if query.is_empty() { "(everything)" } @else { (query) } } }
                            td { @match hold.released_at { Some(at) => { "Released " (time(at)) }, None => { "Active" } } }
                            td { @if hold.released_at.is_none() { (view.items_held) } @else { "—" } }
                            td {
                                @if hold.released_at.is_none() {
                                    form method="post" action={ "/cases/" (case.id) "/holds/" (hold.id) "/release" } {
                                        (csrf_field(&console))
                                        button type="submit" { "Release" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if open {
            form method="post" action={ "/cases/" (case.id) "/holds" } {
                (csrf_field(&console))
                fieldset {
                    legend { "Place a case hold" }
                    label for="hold-name" { "Name" }
                    input #hold-name name="name" required maxlength="200";
                    label for="hold-query" { "KQL query (empty holds everything of the custodians)" }
                    input #hold-query.kql name="query" data-error="hold-query-error" aria-describedby="hold-query-error";
                    p #hold-query-error.field-error aria-live="polite" {}
                    button type="submit" { "Place hold" }
                }
            }
            h2 { "Export" }
            form method="post" action={ "/cases/" (case.id) "/export" } {
                (csrf_field(&console))
                label for="export-query" { "KQL query (required; the items of the custodians that match it are exported)" }
                input #export-query.kql name="query" required data-error="export-query-error" aria-describedby="export-query-error";
                p #export-query-error.field-error aria-live="polite" {}
                p.hint { "Writes every matching item into a BagIt bag, checks it against the server's digest, and offers it as a tar download (the same bag as the CLI's holdfast export)." }
                button type="submit" { "Start export" }
            }
            @if !exports.is_empty() {
                table {
                    caption { "Your exports in this case (kept for a day)" }
                    thead { tr { th scope="col" { "Started" } th scope="col" { "Query" } th scope="col" { "Status" } } }
                    tbody {
                        @for job in &exports {
                            tr {
                                td { a href={ "/cases/" (case.id) "/exports/" (job.id) } { (time(job.started_at)) } }
                                td { code { @if job.query.is_empty() { "(everything)" } @else { (job.query) } } }
                                td { @match job.state() { JobState::Running => { "Running" }, JobState::Ready { count, .. } => { "Ready, " (count) " items" }, JobState::Failed(_) => { "Failed" } } }
                            }
                        }
                    }
                }
            }
            h2 { "Close the case" }
            form method="post" action={ "/cases/" (case.id) "/close" } {
                (csrf_field(&console))
                p { "A case with active holds cannot be closed. Closing ends searches and exports in it." }
                button.danger type="submit" { "Close case" }
            }
        }
    };
    Ok(page(&case.name, Some(&console), content))
}

#[derive(Deserialize)]
pub struct EditCaseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    add_custodians: String,
    #[serde(default)]
    remove_custodians: String,
    #[serde(default)]
    add_members: String,
    #[serde(default)]
    remove_members: String,
}

pub async fn edit_case(
    State(state): State<HttpState>,
    console: Console,
    Path(case_id): Path<String>,
    Form(form): Form<EditCaseForm>,
) -> Result<Redirect, PageError> {
    console.check_csrf(&form.csrf)?;
    let change = CaseChange {
        add_custodians: names(&form.add_custodians),
        remove_custodians: names(&form.remove_custodians),
        add_members: names(&form.add_members),
        remove_members: names(&form.remove_members),
        ..CaseChange::default()
    };
    state
        .app
        .update_case(&console.principal, &case_id, change)
        .await?;
    Ok(Redirect::to(&format!("/cases/{case_id}")))
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub async fn close_case(
    State(state): State<HttpState>,
    console: Console,
    Path(case_id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Redirect, PageError> {
    console.check_csrf(&form.csrf)?;
    state.app.close_case(&console.principal, &case_id).await?;
    Ok(Redirect::to(&format!("/cases/{case_id}")))
}

#[derive(Deserialize)]
pub struct HoldForm {
    #[serde(default)]
    csrf: String,
    name: String,
    #[serde(default)]
    query: String,
}

pub async fn place_case_hold(
    State(state): State<HttpState>,
    console: Console,
    Path(case_id): Path<String>,
    Form(form): Form<HoldForm>,
) -> Result<Redirect, PageError> {
    console.check_csrf(&form.csrf)?;
    state
        .app
        .place_case_hold(
            &console.principal,
            NewCaseHold {
                case_id: case_id.clone(),
                name: form.name,
                query: form.query,
                ..NewCaseHold::default()
            },
        )
        .await?;
    Ok(Redirect::to(&format!("/cases/{case_id}")))
}

pub async fn release_case_hold(
    State(state): State<HttpState>,
    console: Console,
    Path((case_id, hold_id)): Path<(String, String)>,
    Form(form): Form<CsrfOnly>,
) -> Result<Redirect, PageError> {
    console.check_csrf(&form.csrf)?;
    state
        .app
        .release_case_hold(&console.principal, &case_id, &hold_id)
        .await?;
    Ok(Redirect::to(&format!("/cases/{case_id}")))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SearchQuery {
    q: String,
    sort: String,
    page_token: String,
    mailbox: String,
}

/// Mailboxes listed in the search page's facet: the ones with the most hits (a case with
/// thousands of custodians would otherwise list them all on every page).
const FACET_MAILBOXES: usize = 25;

fn top_mailboxes(counts: &std::collections::BTreeMap<String, u64>) -> Vec<(&String, &u64)> {
    let mut top: Vec<(&String, &u64)> = counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    top.truncate(FACET_MAILBOXES);
    top
}

fn snippet_markup(snippet: &Snippet) -> Markup {
    let text = &snippet.text;
    let mut parts = Vec::new();
    let mut at = 0;
    for &(start, end) in &snippet.highlights {
        if start < at
            || start > end
            || end > text.len()
            || !text.is_char_boundary(start)
            || !text.is_char_boundary(end)
        {
            continue;
        }
        parts.push((false, &text[at..start]));
        parts.push((true, &text[start..end]));
        at = end;
    }
    parts.push((false, &text[at..]));
    html! {
        span.snippet-field { (snippet.field) ": " }
        @for (marked, part) in parts {
            @if marked { mark { (part) } } @else { (part) }
        }
    }
}

pub async fn search(
    State(state): State<HttpState>,
    console: Console,
    Path(case_id): Path<String>,
    Query(query): Query<SearchQuery>,
) -> Page {
    let case = state.app.get_case(&console.principal, &case_id).await?;
    let sort = match query.sort.as_str() {
        "newest" => Sort::Newest,
        "oldest" => Sort::Oldest,
        _ => Sort::Relevance,
    };
    let ran = if query.q.is_empty() && query.page_token.is_empty() {
        None
    } else {
        Some(
            state
                .app
                .search(
                    &console.principal,
                    SearchRequest {
                        case_id: case_id.clone(),
                        query: query.q.clone(),
                        mailboxes: if query.mailbox.is_empty() {
                            Vec::new()
                        } else {
                            vec![query.mailbox.clone()]
                        },
                        sort,
                        page_size: 50,
                        page_token: query.page_token.clone(),
                    },
                )
                .await,
        )
    };
    let link = |q: &str, mailbox: &str, sort: &str| {
        format!(
            "/cases/{case_id}/search?{}",
            encode(&[("q", q), ("mailbox", mailbox), ("sort", sort)])
        )
    };
    let content = html! {
        p { a href={ "/cases/" (case.id) } { "Back to the case" } }
        @if let Some(Err(error)) = &ran {
            div.error-summary role="alert" tabindex="-1" {
                h2 { "There is a problem" }
                p { a href="#q" { (error) } }
            }
        }
        form method="get" action={ "/cases/" (case.id) "/search" } role="search" {
            label for="q" { "KQL query" }
            p.hint #q-hint { "For example: budget NEAR(5) forecast created>=2025-01-01 -location:holds" }
            input #q.kql name="q" value=(query.q) data-error="q-error" aria-describedby="q-hint q-error";
            p #q-error.field-error aria-live="polite" {}
            label for="sort" { "Order" }
            select #sort name="sort" {
                option value="relevance" selected[sort == Sort::Relevance] { "Most relevant first" }
                option value="newest" selected[sort == Sort::Newest] { "Newest first" }
                option value="oldest" selected[sort == Sort::Oldest] { "Oldest first" }
            }
            @if !query.mailbox.is_empty() { input type="hidden" name="mailbox" value=(query.mailbox); }
            button type="submit" { "Search" }
        }
        @if let Some(Ok(results)) = &ran {
            p #result-count role="status" { (results.total) " items match" @if !query.mailbox.is_empty() { " in " (query.mailbox) } "." }
            div.facets {
                section aria-labelledby="by-mailbox" {
                    h2 #by-mailbox { "By mailbox" }
                    @let top = top_mailboxes(&results.counts_by_mailbox);
                    ul {
                        @for (mailbox, count) in &top {
                            li { a href=(link(&query.q, mailbox, &query.sort)) { (mailbox) } " " (count) }
                        }
                        @if results.counts_by_mailbox.len() > top.len() {
                            li { "and " (results.counts_by_mailbox.len() - top.len()) " more mailboxes (narrow with mailbox: in the query)" }
                        }
                        @if !query.mailbox.is_empty() { li { a href=(link(&query.q, "", &query.sort)) { "All custodians" } } }
                    }
                }
                section aria-labelledby="by-app" {
                    h2 #by-app { "By app" }
                    ul { @for (app, count) in &results.counts_by_app {
                        li { a href=(link(&format!("{} app:\"{}\"", query.q, app), &query.mailbox, &query.sort)) { (app) } " " (count) }
                    } }
                }
                section aria-labelledby="by-location" {
                    h2 #by-location { "By location" }
                    ul { @for (location, count) in &results.counts_by_location {
                        li { a href=(link(&format!("{} location:{}", query.q, if location == "active" { "active" } else { "holds" }), &query.mailbox, &query.sort)) {
                            (if location == "active" { "In the user's view" } else { "Holds area" }) } " " (count) }
                    } }
                }
            }
            table.hits {
                caption { "Results" }
                thead { tr { th scope="col" { "Created" } th scope="col" { "Mailbox" } th scope="col" { "App" } th scope="col" { "Location" } th scope="col" { "Snippet" } } }
                tbody {
                    @for hit in &results.hits {
                        tr {
                            td { a href={ "/cases/" (case.id) "/items/" (hit.id) } { (time(hit.created_at)) } }
                            td { (hit.mailbox_id) }
                            td { (hit.app) }
                            td { @match hit.location { HitLocation::Active => "In the user's view", HitLocation::HoldsArea => "Holds area" } }
                            td { @for snippet in &hit.snippets { p { (snippet_markup(snippet)) } } }
                        }
                    }
                }
            }
            @if !results.next_page_token.is_empty() {
                p { a rel="next" href={ "/cases/" (case.id) "/search?" (encode(&[("q", &query.q), ("sort", &query.sort), ("mailbox", &query.mailbox), ("page_token", &results.next_page_token)])) } { "Next page" } }
            }
        }
    };
    Ok(page(
        &format!("Search: {}", case.name),
        Some(&console),
        content,
    ))
}

fn interaction_fields(item: &StoredInteraction) -> Markup {
    let content = &item.content;
    html! {
        dl.fields {
            dt { "Id" } dd { code { (item.id) } }
            dt { "Mailbox" } dd { (content.mailbox_id) }
            dt { "Thread" } dd { (content.thread_id) }
            dt { "App" } dd { (content.app) }
            dt { "Created" } dd { (time(content.created_at)) }
            dt { "Received" } dd { (time(item.received_at)) }
            dt { "Location" } dd { @if item.location.is_visible_to_user() { "In the user's view" } @else { "Holds area (deleted or expired; kept for holds)" } }
            dt { "Model" } dd { (content.model.provider) " " (content.model.name) " " (content.model.version) }
            dt { "Sensitivity label" } dd { (content.sensitivity_label) }
            dt { "Content SHA-256" } dd { code { (hex::encode(item.content_sha256)) } }
            @if !content.plugins.is_empty() { dt { "Plugins" } dd { (plugin_names(&content.plugins)) } }
            @if !content.accessed_resources.is_empty() { dt { "Resources" } dd { (resource_names(&content.accessed_resources)) } }
            @for (key, value) in &content.attributes { dt { (key) } dd { (value) } }
            @if let Some(annex) = &item.annex {
                dt { "Attached later" }
                dd {
                    "From the trace's tool spans sent by " (annex.principals.join(", ")) ", last on " (time(annex.updated_at)) " (not part of the content or its SHA-256)"
                    @if !annex.plugins.is_empty() { br; "Plugins: " (plugin_names(&annex.plugins)) }
                    @if !annex.accessed_resources.is_empty() { br; "Resources: " (resource_names(&annex.accessed_resources)) }
                }
            }
        }
    }
}

fn plugin_names(plugins: &[crate::domain::Plugin]) -> String {
    let names: Vec<&str> = plugins
        .iter()
        .map(|p| {
            if p.name.is_empty() {
                p.id.as_str()
            } else {
                p.name.as_str()
            }
        })
        .collect();
    names.join(", ")
}

fn resource_names(resources: &[crate::domain::AccessedResource]) -> String {
    let names: Vec<&str> = resources
        .iter()
        .map(|r| {
            if r.name.is_empty() {
                r.url.as_str()
            } else {
                r.name.as_str()
            }
        })
        .collect();
    names.join(", ")
}

/// Longest part of a prompt or response shown inline; the rest is in the export.
const PREVIEW_BYTES: usize = 20_000;

fn bounded(text: &str) -> Markup {
    if text.len() <= PREVIEW_BYTES {
        return html! { (text) };
    }
    let mut end = PREVIEW_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    html! { (&text[..end]) p.hint { "… shown up to 20 KB of " (text.len() / 1024) " KB; the export has all of it." } }
}

pub async fn item(
    State(state): State<HttpState>,
    console: Console,
    Path((case_id, item_id)): Path<(String, String)>,
) -> Page {
    let found = state
        .app
        .case_item(&console.principal, &case_id, &item_id)
        .await?;
    let item = &found.item;
    let content = html! {
        p { a href={ "/cases/" (case_id) "/search" } { "Back to the search" } }
        (interaction_fields(item))
        h2 { "Prompt" }
        div.turn.prompt { (bounded(&item.content.prompt)) }
        h2 { "Response" }
        div.turn.response { (bounded(&item.content.response)) }
        @if !found.thread.is_empty() {
            h2 { "The thread, newest first (turns still in the user's view)" }
            ol.thread {
                @for turn in &found.thread {
                    li aria-current=[(turn.id == item.id).then_some("true")] {
                        p.meta { (time(turn.content.created_at)) @if turn.id == item.id { " — this item" } }
                        p { strong { "Prompt: " } (bounded(&turn.content.prompt)) }
                        p { strong { "Response: " } (bounded(&turn.content.response)) }
                    }
                }
            }
        }
        @if console.principal.has_any(&[Role::EdiscoveryAdmin]) {
            h2 { "Why is this still here?" }
            @match state.app.explain_retention(&console.principal, &item_id).await {
                Ok(explanation) => {
                    ul { @for reason in &explanation.reasons { li { (reason) } } }
                    p { @if explanation.decision.destroyable { "The sweeper may destroy it now." } @else { "Nothing allows destroying it now." } }
                }
                Err(error) => { p { (error) } }
            }
        }
    };
    Ok(page("Item", Some(&console), content))
}

#[derive(Deserialize)]
pub struct ExportForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    query: String,
}

/// Starts an export of the case as a BagIt bag, and shows its progress.
pub async fn export(
    State(state): State<HttpState>,
    console: Console,
    Path(case_id): Path<String>,
    Form(form): Form<ExportForm>,
) -> Result<Response, PageError> {
    console.check_csrf(&form.csrf)?;
    let case = state.app.get_case(&console.principal, &case_id).await?;
    let case_id = case.id.to_string();
    state.app.check_disk_space()?;
    // Before the export is opened (and audited as started).
    state.console.exports.check_can_start(&console.principal)?;
    let export = state
        .app
        .export(
            &console.principal,
            ExportRequest {
                case_id: case_id.clone(),
                query: form.query.clone(),
                ..ExportRequest::default()
            },
        )
        .await?;
    let parameters = holdfast_export::bag::ExportParameters {
        case_id: case_id.clone(),
        case_name: case.name,
        query: form.query,
        mailboxes: Vec::new(),
        principal: console.principal.name.clone(),
        started_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let job = state.console.exports.start(
        std::sync::Arc::clone(&state.app),
        &console.principal,
        parameters,
        export,
    )?;
    Ok(Redirect::to(&format!("/cases/{case_id}/exports/{}", job.id)).into_response())
}

fn export_job_not_found() -> PageError {
    PageError::from(crate::error::Error::NotFound(
        "no such export of yours in this case (exports are kept for a day, and not across a restart)"
            .into(),
    ))
}

/// An export's progress; once ready, its digests and the download.
pub async fn export_job(
    State(state): State<HttpState>,
    console: Console,
    Path((case_id, job_id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let case = state.app.get_case(&console.principal, &case_id).await?;
    let job = state
        .console
        .exports
        .get(&console.principal, &case_id, &job_id)
        .ok_or_else(export_job_not_found)?;
    let written = job.written.load(std::sync::atomic::Ordering::Relaxed);
    let job_state = job.state();
    let running = matches!(job_state, JobState::Running);
    let content = html! {
        p { "Case: " a href={ "/cases/" (case.id) } { (case.name) } }
        dl {
            dt { "Query" } dd { code { @if job.query.is_empty() { "(everything)" } @else { (job.query) } } }
            dt { "Started" } dd { (time(job.started_at)) }
        }
        @match &job_state {
            JobState::Running => {
                p #export-status role="status" { "Writing the bag: " (written) " of " (job.total) " items." }
                progress max=(job.total.max(1)) value=(written) aria-labelledby="export-status" {}
                p.hint { "This page refreshes every two seconds." }
            },
            JobState::Ready { count, content_digest, tar_sha256, tar_bytes } => {
                p #export-status role="status" { "Export ready: " (count) " items, checked against the server's digest." }
                dl.digests {
                    dt { "Content digest (bag-info.txt, Holdfast-Content-Digest)" } dd { code #content-digest { (content_digest) } }
                    dt { "SHA-256 of the download" } dd { code #tar-sha256 { (tar_sha256) } }
                    dt { "Size" } dd { (tar_bytes) " bytes" }
                }
                p { a.button #download href={ "/cases/" (case_id) "/exports/" (job.id) "/bag.tar" } download { "Download the bag (tar)" } }
                p.hint { "Unpack it and check it with " code { "holdfast export verify DIR" } "." }
            },
            JobState::Failed(message) => {
                p #export-status.error role="alert" { "The export failed: " (message) }
            },
        }
    };
    let mut response = page("Export", Some(&console), content).into_response();
    if running {
        response
            .headers_mut()
            .insert(header::REFRESH, HeaderValue::from_static("2"));
    }
    Ok(response)
}

/// The finished bag as a tar download (audited; a HEAD request is not a download).
pub async fn export_download(
    State(state): State<HttpState>,
    console: Console,
    method: axum::http::Method,
    Path((case_id, job_id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    // Still a member of the case, and the case still open (a removed member loses the
    // download with the case, and a closed case's evidence leaves through new exports only).
    let case = state.app.get_case(&console.principal, &case_id).await?;
    case.require_open()?;
    let job = state
        .console
        .exports
        .get(&console.principal, &case_id, &job_id)
        .ok_or_else(export_job_not_found)?;
    let JobState::Ready {
        tar_sha256,
        count,
        tar_bytes,
        ..
    } = job.state()
    else {
        return Err(PageError::from(crate::error::Error::FailedPrecondition(
            "this export is not ready".into(),
        )));
    };
    let file = tokio::fs::File::open(job.tar_path())
        .await
        .map_err(|_| export_job_not_found())?;
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(tar_bytes));
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"{}.tar\"", job.bag_name()))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if method == axum::http::Method::HEAD {
        return Ok(headers.into_response());
    }
    state
        .app
        .audit_done(
            &console.principal,
            "DownloadExport",
            job.id.clone(),
            serde_json::json!({ "case_id": case_id, "items": count, "tar_sha256": tar_sha256 }),
            "ok".into(),
        )
        .await?;
    let stream = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = vec![0u8; 64 << 10];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok::<_, std::io::Error>(buffer), file))
            }
            Err(error) => Some((Err(error), file)),
        }
    });
    Ok((headers, axum::body::Body::from_stream(stream)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct KqlQuery {
    q: String,
}

/// The live check of a KQL query as it is typed: `{"ok": true}` or the message and the
/// position of the first error.
pub async fn kql_check(_console: Console, Query(query): Query<KqlQuery>) -> Response {
    let body = match crate::search::kql::parse(&query.q) {
        Ok(_) => serde_json::json!({ "ok": true }),
        Err(error) => serde_json::json!({
            "ok": false, "position": error.position, "message": error.message }),
    };
    axum::Json(body).into_response()
}

pub async fn policies(State(state): State<HttpState>, console: Console) -> Page {
    let policies = state.app.list_policies(&console.principal).await?;
    let admin = console.principal.has_any(&[Role::RetentionAdmin]);
    let content = html! {
        @if policies.is_empty() { p { "No policies: only the default retention applies." } }
        @else {
            table {
                caption { "Retention policies" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Scope" } th scope="col" { "Action" } th scope="col" { "Period" } th scope="col" { "State" } th scope="col" { "Lock" } } }
                tbody {
                    @for record in &policies {
                        @let policy = &record.policy;
                        tr {
                            td { (policy.name) }
                            td { @match &policy.scope {
                                holdfast_retention::policy::Scope::OrgWide { exclude } => { "Every mailbox" @if !exclude.is_empty() { " except " (exclude.len()) } },
                                holdfast_retention::policy::Scope::Include(include) => { (include.len()) " mailbox(es)" },
                            } }
                            td { (action_name(policy.action).replace('_', " ")) }
                            td { @match policy.period { holdfast_retention::policy::Period::Days(days) => { (days) " days" }, holdfast_retention::policy::Period::Forever => { "Forever" } } }
                            td { @if policy.enabled { "Enabled" } @else { "Disabled" } }
                            td {
                                @if policy.locked { "Locked (preservation lock)" }
                                @else if admin && policy.enabled {
                                    form method="post" action={ "/policies/" (record.id) "/lock" } {
                                        (csrf_field(&console))
                                        label for={ "confirm-" (record.id) } { "Type LOCK to confirm" }
                                        p.hint { "A locked policy can never be disabled, deleted, shortened or narrowed, by anyone." }
                                        input id={ "confirm-" (record.id) } name="confirm" required autocomplete="off";
                                        button.danger type="submit" { "Lock" }
                                    }
                                } @else { "Not locked" }
                            }
                        }
                    }
                }
            }
        }
        @if admin {
            h2 { "New policy" }
            form method="post" action="/policies" {
                (csrf_field(&console))
                label for="p-name" { "Name" }
                input #p-name name="name" required maxlength="200";
                fieldset {
                    legend { "Scope" }
                    label { input type="radio" name="scope" value="org" checked; " Every mailbox" }
                    label { input type="radio" name="scope" value="include"; " Only these mailboxes" }
                    label for="p-mailboxes" { "Mailboxes (included, or excluded from every mailbox), one per line" }
                    textarea #p-mailboxes name="mailboxes" {}
                }
                label for="p-action" { "Action" }
                select #p-action name="action" {
                    option value="retain_then_delete" { "Retain, then delete" }
                    option value="retain_only" { "Retain only" }
                    option value="delete_only" { "Delete only" }
                }
                label for="p-days" { "Days from creation (0: forever, retain only)" }
                input #p-days name="days" type="number" min="0" max="36500" value="365" required;
                p.hint { "Preview shows what the policy would do at the next sweeper pass, per mailbox, without saving it." }
                button type="submit" name="intent" value="preview" { "Preview impact" }
                button type="submit" name="intent" value="save" { "Save policy" }
            }
        }
    };
    Ok(page("Retention policies", Some(&console), content))
}

#[derive(Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    csrf: String,
    name: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    mailboxes: String,
    action: String,
    #[serde(default)]
    days: u32,
    #[serde(default)]
    intent: String,
}

pub async fn create_policy(
    State(state): State<HttpState>,
    console: Console,
    Form(form): Form<PolicyForm>,
) -> Result<Response, PageError> {
    console.check_csrf(&form.csrf)?;
    let org_wide = form.scope != "include";
    let mailboxes = names(&form.mailboxes);
    let spec = PolicySpec {
        name: form.name.clone(),
        org_wide,
        include: if org_wide {
            Vec::new()
        } else {
            mailboxes.clone()
        },
        exclude: if org_wide { mailboxes } else { Vec::new() },
        apps: Vec::new(),
        action: match form.action.as_str() {
            "retain_only" => Some(holdfast_retention::policy::Action::RetainOnly),
            "delete_only" => Some(holdfast_retention::policy::Action::DeleteOnly),
            "retain_then_delete" => Some(holdfast_retention::policy::Action::RetainThenDelete),
            _ => None,
        },
        days: form.days,
        enabled: true,
    };
    if form.intent == "save" {
        state.app.create_policy(&console.principal, spec).await?;
        return Ok(Redirect::to("/policies").into_response());
    }
    let preview = state
        .app
        .preview_policy(&console.principal, "", spec)
        .await?;
    let content = html! {
        p role="status" {
            "If saved now, " strong { (form.name) } " would move " strong { (preview.total_move_now) }
            " item(s) out of their users' view at the next sweeper pass, and make "
            strong { (preview.total_destroyable) } " item(s) destroyable once they have spent the minimum time in the holds area ("
            (preview.items_examined) " items examined)."
        }
        @if !preview.mailboxes.is_empty() {
            table {
                caption { "Impact per mailbox" }
                thead { tr { th scope="col" { "Mailbox" } th scope="col" { "Items it applies to" } th scope="col" { "Leave the view now" } th scope="col" { "Become destroyable" } } }
                tbody { @for m in &preview.mailboxes { tr { td { (m.mailbox_id) } td { (m.items) } td { (m.move_now) } td { (m.destroyable) } } } }
            }
        }
        p { "Nothing was saved. " a href="/policies" { "Back to the policies" } " to save it." }
    };
    Ok(page("Policy preview", Some(&console), content).into_response())
}

#[derive(Deserialize)]
pub struct LockForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

pub async fn lock_policy(
    State(state): State<HttpState>,
    console: Console,
    Path(policy_id): Path<String>,
    Form(form): Form<LockForm>,
) -> Result<Redirect, PageError> {
    console.check_csrf(&form.csrf)?;
    if form.confirm.trim() != "LOCK" {
        return Err(PageError::from(crate::error::Error::invalid(
            "confirm",
            "type LOCK to confirm: a locked policy can never be loosened",
        )));
    }
    state
        .app
        .lock_policy(&console.principal, &policy_id)
        .await?;
    Ok(Redirect::to("/policies"))
}

pub async fn sweeper(State(state): State<HttpState>, console: Console) -> Page {
    let report = state.app.sweeper_status(&console.principal).await?;
    let status = &report.status;
    let stats = |s: &crate::sweeper::SweepStats| {
        html! {
            dl.fields {
                dt { "Started" } dd { @if let Some(at) = s.started_at { (time(at)) } @else { "—" } }
                dt { "Due entries examined" } dd { (s.examined) }
                dt { "Moved to the holds area" } dd { (s.moved) }
                dt { "Destroyed" } dd { (s.destroyed) }
                dt { "Kept by a hold" } dd { (s.skipped_held) }
                dt { "Item errors" } dd { (s.item_errors) }
                dt { "Holds that could not be evaluated (kept everything)" } dd { (s.unevaluable_holds.len()) }
            }
        }
    };
    let content = html! {
        p role="status" { "The sweeper is " @if status.running { "running a pass now." } @else { "idle." }
            " Passes run every " (status.interval_seconds) " seconds." }
        @if let Some(error) = &status.last_error { div.error-summary role="alert" { h2 { "The last pass failed" } p { (error) } } }
        @if report.replan_pending { p { "A policy or hold change is still being applied to every item." } }
        p { (report.erasure_pending) " destroyed item(s) still to be erased from the files"
            @if let Some(oldest) = report.erasure_oldest { " (oldest destroyed " (time(oldest)) ")" } "." }
        h2 { "Last pass" }
        @if let Some(last) = &status.last_run { (stats(last)) } @else { p { "No pass since the server started." } }
        h2 { "Since the server started" }
        (stats(&status.totals))
        @if console.principal.has_any(&[Role::RetentionAdmin]) {
            form method="post" action="/sweeper" {
                (csrf_field(&console))
                button type="submit" { "Run a pass now" }
            }
        }
    };
    Ok(page("Sweeper", Some(&console), content))
}

pub async fn run_sweep(
    State(state): State<HttpState>,
    console: Console,
    Form(form): Form<CsrfOnly>,
) -> Result<Redirect, PageError> {
    console.check_csrf(&form.csrf)?;
    state.app.run_sweep(&console.principal).await?;
    Ok(Redirect::to("/sweeper"))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AuditFilter {
    actor: String,
    action: String,
    page_token: String,
}

pub async fn audit(
    State(state): State<HttpState>,
    console: Console,
    Query(filter): Query<AuditFilter>,
) -> Page {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let page_of = state
        .app
        .query_audit_log(
            &console.principal,
            crate::app::audit_log::AuditLogRequest {
                query: AuditQuery {
                    actor: non_empty(&filter.actor),
                    action: non_empty(&filter.action),
                    ..AuditQuery::default()
                },
                page_size: 100,
                page_token: filter.page_token.clone(),
            },
        )
        .await?;
    let content = html! {
        form method="get" action="/audit" {
            label for="actor" { "Who (principal name)" }
            input #actor name="actor" value=(filter.actor);
            label for="action" { "Action (e.g. Search, Export, PlaceCaseHold, Purge)" }
            input #action name="action" value=(filter.action);
            button type="submit" { "Filter" }
        }
        form method="post" action="/audit/verify" {
            (csrf_field(&console))
            button type="submit" { "Verify the whole chain" }
        }
        table {
            caption { "Audit log, oldest first" }
            thead { tr { th scope="col" { "#" } th scope="col" { "When (UTC)" } th scope="col" { "Who" } th scope="col" { "Did" } th scope="col" { "To" } th scope="col" { "Result" } th scope="col" { "Details" } } }
            tbody {
                @for entry in &page_of.entries {
                    tr {
                        td { (entry.sequence) }
                        td { (time(entry.time)) }
                        td { (entry.actor) }
                        td { (entry.action) }
                        td { (entry.target) }
                        td { (entry.result) }
                        td { code { (entry.parameters.to_string()) } }
                    }
                }
            }
        }
        @if !page_of.next_page_token.is_empty() {
            p { a rel="next" href={ "/audit?" (encode(&[("actor", &filter.actor), ("action", &filter.action), ("page_token", &page_of.next_page_token)])) } { "Next page" } }
        }
    };
    Ok(page("Audit log", Some(&console), content))
}

pub async fn verify_audit(
    State(state): State<HttpState>,
    console: Console,
    Form(form): Form<CsrfOnly>,
) -> Page {
    console.check_csrf(&form.csrf)?;
    let verification = state.app.verify_audit_log(&console.principal).await?;
    let content = html! {
        @match &verification.problem {
            None => { p role="status" { "The chain is intact: " (verification.num_entries) " entries." } }
            Some((sequence, problem)) => { div.error-summary role="alert" { h2 { "The chain is broken" } p { "At entry " (sequence) ": " (problem) } } }
        }
        p { "Head hash (keep it elsewhere to detect a truncated log later): " code { (verification.head_hash) } }
        p { a href="/audit" { "Back to the audit log" } }
    };
    Ok(page("Audit log verification", Some(&console), content))
}

/// A hold's state in words (never by colour alone).
fn hold_state(hold: &crate::lifecycle::HoldRecord, now: DateTime<Utc>) -> String {
    match (&hold.kind, hold.released_at) {
        (_, Some(at)) => format!(
            "Released {}{}",
            time(at),
            hold.released_by
                .as_deref()
                .map(|by| format!(" by {by}"))
                .unwrap_or_default()
        ),
        (HoldKind::Delay { until }, None) if *until <= now => format!("Ended {}", time(*until)),
        (HoldKind::Delay { until }, None) => format!("Active until {}", time(*until)),
        (HoldKind::Litigation { days: Some(days) }, None) => {
            format!("Active: keeps each item {days} days from its creation")
        }
        (HoldKind::Litigation { days: None }, None) => "Active until released".into(),
        (HoldKind::Case { .. }, None) => "Active until released by the case's members".into(),
    }
}

fn hold_kind_word(kind: &HoldKind) -> &'static str {
    match kind {
        HoldKind::Litigation { .. } => "Litigation hold",
        HoldKind::Delay { .. } => "Delay hold (after a release)",
        HoldKind::Case { .. } => "Case hold",
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct HoldsFilter {
    mailbox: String,
    released: bool,
}

pub async fn holds(
    State(state): State<HttpState>,
    console: Console,
    Query(filter): Query<HoldsFilter>,
) -> Page {
    let holds = state
        .app
        .list_holds(&console.principal, &filter.mailbox, filter.released)
        .await?;
    let admin = console.principal.has_any(&[Role::RetentionAdmin]);
    let now = Utc::now();
    let content = html! {
        form method="get" action="/holds" {
            label for="h-mailbox" { "Mailbox (empty: every mailbox)" }
            input #h-mailbox name="mailbox" value=(filter.mailbox);
            label { input type="checkbox" name="released" value="true" checked[filter.released]; " Include released holds" }
            button type="submit" { "Show" }
        }
        @if holds.is_empty() { p { "No holds." } }
        @else {
            table {
                caption { "Holds" }
                thead { tr { th scope="col" { "Kind" } th scope="col" { "Mailboxes" } th scope="col" { "State" } th scope="col" { "Placed" } th scope="col" { "Action" } } }
                tbody {
                    @for hold in &holds {
                        tr {
                            td { (hold_kind_word(&hold.kind)) }
                            td { @for mailbox in &hold.mailboxes { (mailbox) br; } }
                            td { (hold_state(hold, now)) }
                            td { (time(hold.created_at)) " by " (hold.created_by) }
                            td {
                                @if let HoldKind::Case { case_id, .. } = &hold.kind {
                                    @if hold.released_at.is_none() {
                                        "Released by the members of case " code { (case_id) }
                                    }
                                } @else if admin && hold.is_active(now) {
                                    @let (action, button, consequence) = match hold.kind {
                                        HoldKind::Delay { .. } => ("clear", "End the delay now",
                                            "Ending it makes the items it kept destroyable at the next sweeper pass."),
                                        _ => ("release", "Release",
                                            "A delay hold then keeps the mailbox's items for the configured days."),
                                    };
                                    form method="post" action={ "/holds/" (hold.id) "/" (action) } {
                                        (csrf_field(&console))
                                        label {
                                            input type="checkbox" name="confirm" value="yes" required;
                                            " I understand: " (consequence)
                                        }
                                        button.danger type="submit" { (button) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if admin {
            h2 { "Place a litigation hold" }
            form method="post" action="/holds" {
                (csrf_field(&console))
                label for="lh-mailbox" { "Mailbox" }
                input #lh-mailbox name="mailbox" required;
                label for="lh-days" { "Days to keep each item from its creation (0: until released)" }
                input #lh-days name="days" type="number" min="0" max="36500" value="0";
                p.hint { "While it is active nothing in the mailbox is destroyed. Releasing it leaves a delay hold for the configured number of days." }
                button type="submit" { "Place hold" }
            }
        }
    };
    Ok(page("Holds", Some(&console), content))
}

#[derive(Deserialize)]
pub struct LitigationHoldForm {
    #[serde(default)]
    csrf: String,
    mailbox: String,
    #[serde(default)]
    days: u32,
}

pub async fn place_litigation_hold(
    State(state): State<HttpState>,
    console: Console,
    Form(form): Form<LitigationHoldForm>,
) -> Result<Redirect, PageError> {
    console.check_csrf(&form.csrf)?;
    state
        .app
        .place_litigation_hold(&console.principal, &form.mailbox, form.days)
        .await?;
    Ok(Redirect::to(&format!(
        "/holds?{}",
        encode(&[("mailbox", &form.mailbox)])
    )))
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

impl ConfirmForm {
    /// The session's form, with its "I understand" box ticked.
    fn check(&self, console: &Console) -> Result<(), PageError> {
        console.check_csrf(&self.csrf)?;
        if self.confirm != "yes" {
            return Err(PageError::from(crate::error::Error::invalid(
                "confirm",
                "tick the box to confirm that you understand the consequence",
            )));
        }
        Ok(())
    }
}

pub async fn release_hold(
    State(state): State<HttpState>,
    console: Console,
    Path(hold_id): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> Result<Redirect, PageError> {
    form.check(&console)?;
    state.app.release_hold(&console.principal, &hold_id).await?;
    Ok(Redirect::to("/holds"))
}

pub async fn clear_delay_hold(
    State(state): State<HttpState>,
    console: Console,
    Path(hold_id): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> Result<Redirect, PageError> {
    form.check(&console)?;
    state
        .app
        .clear_delay_hold(&console.principal, &hold_id)
        .await?;
    Ok(Redirect::to("/holds"))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MailboxQuery {
    mailbox: String,
}

pub async fn mailboxes(
    State(state): State<HttpState>,
    console: Console,
    Query(query): Query<MailboxQuery>,
) -> Page {
    let status = if query.mailbox.is_empty() {
        None
    } else {
        Some(
            state
                .app
                .mailbox_status(&console.principal, &query.mailbox)
                .await?,
        )
    };
    let now = Utc::now();
    let content = html! {
        form method="get" action="/mailboxes" {
            label for="m-mailbox" { "Mailbox" }
            input #m-mailbox name="mailbox" value=(query.mailbox) required;
            button type="submit" { "Show status" }
        }
        @if let Some(status) = &status {
            h2 { (status.mailbox) }
            p role="status" { (status.active_items) " item(s) in the user's view, " (status.holds_area_items) " in the holds area." }
            h3 { "Policies that apply" }
            @if status.policies.is_empty() {
                p { @if status.default_retention_days == 0 { "None: items are kept forever (no default retention)." }
                    @else { "None: the default retention of " (status.default_retention_days) " days applies." } }
            } @else {
                ul { @for record in &status.policies {
                    li { (record.policy.name) ": " (action_name(record.policy.action).replace('_', " ")) ", "
                        @match record.policy.period { holdfast_retention::policy::Period::Days(days) => { (days) " days" }, holdfast_retention::policy::Period::Forever => { "forever" } }
                        @if record.policy.locked { " (locked)" } }
                } }
            }
            h3 { "Active holds" }
            @if status.holds.is_empty() { p { "None." } }
            ul { @for hold in &status.holds { li { (hold_kind_word(&hold.kind)) ": " (hold_state(hold, now)) } } }
        }
    };
    Ok(page("Mailbox status", Some(&console), content))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DispositionFilter {
    mailbox: String,
    page_token: String,
}

pub async fn dispositions(
    State(state): State<HttpState>,
    console: Console,
    Query(filter): Query<DispositionFilter>,
) -> Page {
    let page_of = state
        .app
        .list_dispositions(&console.principal, &filter.mailbox, 100, &filter.page_token)
        .await?;
    let content = html! {
        p { "What the sweeper destroyed: never the content, only what it was, why and when." }
        form method="get" action="/dispositions" {
            label for="d-mailbox" { "Mailbox (empty: every mailbox)" }
            input #d-mailbox name="mailbox" value=(filter.mailbox);
            button type="submit" { "Show" }
        }
        @if page_of.dispositions.is_empty() {
            p { "Nothing has been destroyed" @if !filter.mailbox.is_empty() { " in " (filter.mailbox) } "." }
        }
        @else {
            table {
                caption { "Disposition records, newest first" }
                thead { tr { th scope="col" { "Destroyed" } th scope="col" { "Mailbox" } th scope="col" { "Item" } th scope="col" { "Created" } th scope="col" { "Why it left the view" } th scope="col" { "Policies" } th scope="col" { "Content SHA-256" } } }
                tbody {
                    @for d in &page_of.dispositions {
                        tr {
                            td { (time(d.purged_at)) }
                            td { (d.mailbox) }
                            td { code { (d.id) } }
                            td { (time(d.created_at)) }
                            td { @match d.reason {
                                holdfast_retention::MoveReason::Expired => "Retention expired",
                                holdfast_retention::MoveReason::UserDeleted => "Deleted by the user",
                                holdfast_retention::MoveReason::PurgeRequested => "Purged",
                            } ", " (time(d.moved_at)) }
                            td { (d.policies.join(", ")) }
                            td { code { (d.content_sha256) } }
                        }
                    }
                }
            }
        }
        @if !page_of.next_page_token.is_empty() {
            p { a rel="next" href={ "/dispositions?" (encode(&[("mailbox", &filter.mailbox), ("page_token", &page_of.next_page_token)])) } { "Next page" } }
        }
    };
    Ok(page("Dispositions", Some(&console), content))
}

pub async fn tokens(State(state): State<HttpState>, console: Console) -> Page {
    let tokens = state.app.list_tokens(&console.principal).await?;
    Ok(page(
        "Tokens",
        Some(&console),
        tokens_content(&console, &tokens, None),
    ))
}

fn tokens_content(
    console: &Console,
    tokens: &[crate::auth::Principal],
    created: Option<(&str, &str)>,
) -> Markup {
    html! {
        @if let Some((name, token)) = created {
            div role="status" {
                h2 { "Token created for " (name) }
                p { "Copy it now: it is shown once and not kept by the server." }
                p { code #new-token { (token) } }
            }
        }
        table {
            caption { "Tokens (only a prefix of each token's SHA-256 is shown)" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Roles" } th scope="col" { "Defined in" } th scope="col" { "Hash prefix" } th scope="col" { "Action" } } }
            tbody {
                @for token in tokens {
                    tr {
                        td { (token.name) }
                        td { (token.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")) }
                        td { @match token.source { crate::auth::TokenSource::Config => "Config file", crate::auth::TokenSource::Api => "Created here or by the CLI" } }
                        td { code { (hex::encode(&token.token_sha256[..6])) } }
                        td {
                            @if matches!(token.source, crate::auth::TokenSource::Api) {
                                form method="post" action={ "/tokens/" (token.name) "/revoke" } {
                                    (csrf_field(console))
                                    button.danger type="submit" { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "New token" }
        form method="post" action="/tokens" {
            (csrf_field(console))
            label for="t-name" { "Name" }
            input #t-name name="name" required;
            fieldset {
                legend { "Roles" }
                @for role in Role::ALL {
                    label { input type="checkbox" name="roles" value=(role.as_str()); " " (role.as_str()) }
                }
            }
            button type="submit" { "Create token" }
        }
    }
}

pub async fn create_token(
    State(state): State<HttpState>,
    console: Console,
    body: axum::body::Bytes,
) -> Page {
    // `roles` repeats (one per checkbox): read the pairs in order.
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|_| PageError::from(crate::error::Error::invalid("body", "not a form")))?;
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    console.check_csrf(&field("csrf"))?;
    let roles = pairs
        .iter()
        .filter(|(k, _)| k == "roles")
        .map(|(_, v)| {
            Role::from_name(v).ok_or_else(|| {
                PageError::from(crate::error::Error::invalid(
                    "roles",
                    format!("{:?} is not a role", v.chars().take(40).collect::<String>()),
                ))
            })
        })
        .collect::<Result<std::collections::BTreeSet<Role>, PageError>>()?;
    let name = field("name");
    let (token, _) = state
        .app
        .create_token(&console.principal, name.clone(), roles)
        .await?;
    let tokens = state.app.list_tokens(&console.principal).await?;
    Ok(page(
        "Tokens",
        Some(&console),
        tokens_content(&console, &tokens, Some((&name, &token))),
    ))
}

pub async fn revoke_token(
    State(state): State<HttpState>,
    console: Console,
    Path(name): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Redirect, PageError> {
    console.check_csrf(&form.csrf)?;
    state.app.revoke_token(&console.principal, name).await?;
    Ok(Redirect::to("/tokens"))
}
