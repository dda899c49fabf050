//! The fixture corpus with known answers: every operator, property and date form of SPEC §5,
//! run through the real store, indexer and tantivy index.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use holdfast_retention::MoveReason;
use ulid::Ulid;

use super::index::{self, IndexSettings, SearchIndex};
use super::kql;
use super::searcher::{execute, Sort};
use crate::domain::{
    AccessedResource, HistorySelector, InteractionContent, InteractionId, MailboxId, Model, Plugin,
    Safety,
};
use crate::store::conformance::{on_both_backends, Backend, OpenedCluster};
use crate::store::{NewInteraction, RocksStore, Store};

on_both_backends!(
    every_operator_property_and_date_form_has_its_known_answer,
    scope_counts_sorting_and_paging,
    a_deleted_index_is_rebuilt_with_identical_results,
    exports_list_every_match_in_id_order,
);

struct Fixture {
    key: &'static str,
    mailbox: &'static str,
    app: &'static str,
    thread: &'static str,
    created: DateTime<Utc>,
    prompt: &'static str,
    response: &'static str,
}

fn at(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap()
}

fn corpus() -> Vec<Fixture> {
    let f = |key, mailbox, app, thread, created, prompt, response| Fixture {
        key,
        mailbox,
        app,
        thread,
        created,
        prompt,
        response,
    };
    vec![
        f(
            "k01",
            "alice@contoso.com",
            "Word",
            "t-1",
            at(2025, 1, 1, 10, 0, 0),
            "Please summarise the Q3 budget forecast",
            "The budget looks fine",
        ),
        f(
            "k02",
            "alice@contoso.com",
            "Teams",
            "t-1",
            at(2025, 1, 15, 9, 0, 0),
            "the best plan and the very worst outcome",
            "ok",
        ),
        f(
            "k03",
            "bob@contoso.com",
            "Outlook",
            "",
            at(2025, 3, 31, 23, 59, 59),
            "worst case, best effort",
            "understood",
        ),
        f(
            "k04",
            "bob@contoso.com",
            "Word",
            "",
            at(2025, 4, 1, 0, 0, 0),
            "Mon résumé est prêt",
            "Très bien",
        ),
        f(
            "k05",
            "carol@contoso.com",
            "BizChat",
            "",
            at(2025, 4, 15, 12, 0, 0),
            "予算の要約をお願いします",
            "はい、これが要約です",
        ),
        f(
            "k06",
            "carol@contoso.com",
            "WebChat",
            "",
            at(2025, 2, 1, 8, 0, 0),
            "don't forget alice@contoso.com",
            "Noted",
        ),
        f(
            "k07",
            "alice@contoso.com",
            "Word",
            "",
            at(2025, 5, 1, 0, 0, 0),
            "budgetary constraints and budgets",
            "cats and dogs",
        ),
        f(
            "k08",
            "dave@contoso.com",
            "Word",
            "",
            at(2025, 2, 2, 0, 0, 0),
            "회의 일정을 알려주세요",
            "내일입니다",
        ),
        f(
            "k09",
            "alice@contoso.com",
            "Word",
            "secret",
            at(2025, 6, 1, 0, 0, 0),
            "budget secret plan",
            "deleted by the user",
        ),
    ]
}

fn content(fixture: &Fixture) -> InteractionContent {
    InteractionContent {
        client_key: fixture.key.into(),
        mailbox_id: MailboxId::parse(fixture.mailbox).unwrap(),
        thread_id: fixture.thread.into(),
        app: fixture.app.into(),
        created_at: fixture.created,
        prompt: fixture.prompt.into(),
        response: fixture.response.into(),
        model: if fixture.key == "k01" {
            Model {
                provider: "openai".into(),
                name: "gpt-4o".into(),
                version: "2024-08-06".into(),
            }
        } else {
            Model::default()
        },
        plugins: if fixture.key == "k03" {
            vec![Plugin {
                id: "BingWebSearch".into(),
                name: "Bing".into(),
                version: "1".into(),
            }]
        } else {
            Vec::new()
        },
        accessed_resources: if fixture.key == "k04" {
            vec![AccessedResource {
                name: "Budget.xlsx".into(),
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
        contexts: Vec::new(),
        safety: Safety {
            jailbreak_detected: fixture.key == "k06",
            ..Default::default()
        },
        sensitivity_label: if fixture.key == "k02" {
            "Confidential".into()
        } else {
            String::new()
        },
        attributes: Default::default(),
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    index: Arc<SearchIndex>,
    shutdown: tokio_util::sync::CancellationToken,
    indexer: Option<index::IndexerThread>,
    /// The cluster's engines, when the corpus is stored on them (dropped last).
    cluster: Option<OpenedCluster>,
}

impl Harness {
    /// The corpus stored on `backend` and indexed.
    fn on(backend: Backend) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, cluster) = backend.open(&dir.path().join("store"));
        let items: Vec<NewInteraction> = corpus()
            .iter()
            .map(|f| NewInteraction::new(InteractionId(Ulid::new()), Utc::now(), content(f)))
            .collect();
        store.write_interactions(&items).unwrap();
        let selector = HistorySelector {
            mailbox_id: MailboxId::parse("alice@contoso.com").unwrap(),
            thread_id: "secret".into(),
            before: None,
        };
        store
            .move_to_holds_area(&selector, MoveReason::UserDeleted, Utc::now())
            .unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (index, indexer) = index::start(
            &dir.path().join("index"),
            Arc::clone(&store),
            IndexSettings::default(),
            shutdown.clone(),
        )
        .unwrap();
        let harness = Harness {
            _dir: dir,
            store,
            index,
            shutdown,
            indexer: Some(indexer),
            cluster,
        };
        harness.wait_until_indexed();
        harness
    }

    fn wait_until_indexed(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.index.progress.committed.load(Ordering::Acquire)
            < self.store.last_index_sequence()
        {
            assert!(Instant::now() < deadline, "the index did not catch up");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn mailboxes() -> Vec<MailboxId> {
        ["alice", "bob", "carol", "dave"]
            .iter()
            .map(|m| MailboxId::parse(&format!("{m}@contoso.com")).unwrap())
            .collect()
    }

    fn keys_in(&self, query: &str, mailboxes: &[MailboxId]) -> BTreeSet<String> {
        let parsed = kql::parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        let searcher = self.index.reader.searcher();
        let results = execute(
            &searcher,
            &self.index.fields,
            &parsed,
            mailboxes,
            Sort::Relevance,
            0,
            100,
        )
        .unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(
            results.total as usize,
            results.hits.len(),
            "{query}: exact total"
        );
        let ids: Vec<InteractionId> = results.hits.iter().map(|h| h.id).collect();
        self.store
            .get_interactions(&ids)
            .unwrap()
            .into_iter()
            .map(|item| item.unwrap().content.client_key)
            .collect()
    }

    fn keys(&self, query: &str) -> BTreeSet<String> {
        self.keys_in(query, &Self::mailboxes())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(indexer) = self.indexer.take() {
            indexer.join();
        }
    }
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

fn every_operator_property_and_date_form_has_its_known_answer(backend: Backend) {
    let h = Harness::on(backend);
    let cases: &[(&str, &[&str])] = &[
        ("budget", &["k01", "k09"]),
        ("BUDGET", &["k01", "k09"]),
        ("budg*", &["k01", "k07", "k09"]),
        ("\"best plan\"", &["k02"]),
        ("\"plan best\"", &[]),
        ("best NEAR(5) worst", &["k02", "k03"]),
        ("worst NEAR(5) best", &["k02", "k03"]),
        ("best NEAR(4) worst", &["k03"]),
        ("best NEAR worst", &["k02", "k03"]),
        ("budget OR cats", &["k01", "k07", "k09"]),
        ("budget -secret", &["k01"]),
        ("budget NOT secret", &["k01"]),
        ("budget AND forecast", &["k01"]),
        ("cats and dogs", &["k07"]),
        ("budget OR cats AND dogs", &["k01", "k07", "k09"]),
        ("(budget OR cats) AND dogs", &["k07"]),
        (
            "NOT budget",
            &["k02", "k03", "k04", "k05", "k06", "k07", "k08"],
        ),
        ("resume", &["k04"]),
        ("RÉSUMÉ", &["k04"]),
        ("tres", &["k04"]),
        ("予算の要約", &["k05"]),
        ("要約", &["k05"]),
        ("일정", &["k08"]),
        ("alice@contoso.com", &["k06"]),
        ("don't", &["k06"]),
        ("prompt:budget", &["k01", "k09"]),
        ("response:budget", &["k01"]),
        ("response:(cats OR fine)", &["k01", "k07"]),
        ("mailbox:ALICE@contoso.com", &["k01", "k02", "k07", "k09"]),
        ("participants:bob@contoso.com", &["k03", "k04"]),
        ("thread:t-1", &["k01", "k02"]),
        ("app:word", &["k01", "k04", "k07", "k08", "k09"]),
        ("app:Outlook", &["k03"]),
        ("plugin:bingwebsearch", &["k03"]),
        ("model:gpt-4o", &["k01"]),
        ("resource:budget.xlsx", &["k04"]),
        ("label:confidential", &["k02"]),
        ("flagged:true", &["k06"]),
        ("location:holds", &["k09"]),
        ("location:active budget", &["k01"]),
        ("created>=2025-04-01", &["k04", "k05", "k07", "k09"]),
        ("created<2025-04-01", &["k01", "k02", "k03", "k06", "k08"]),
        ("created<=2025-03-31", &["k01", "k02", "k03", "k06", "k08"]),
        ("created>2025-03-31", &["k04", "k05", "k07", "k09"]),
        (
            "sent:2025-01-01..2025-03-31",
            &["k01", "k02", "k03", "k06", "k08"],
        ),
        ("received:2025-04-15", &["k05"]),
        ("budget AND created>=2025-05-01", &["k09"]),
        ("nothingmatchesthis", &[]),
    ];
    for (query, expected) in cases {
        assert_eq!(h.keys(query), set(expected), "query {query:?}");
    }
}

fn scope_counts_sorting_and_paging(backend: Backend) {
    let h = Harness::on(backend);
    let bob = [MailboxId::parse("bob@contoso.com").unwrap()];
    assert_eq!(h.keys_in("worst", &bob), set(&["k03"]));

    let searcher = h.index.reader.searcher();
    let query = kql::parse("budget OR cats OR worst").unwrap();
    let all = Harness::mailboxes();
    let results = execute(&searcher, &h.index.fields, &query, &all, Sort::Newest, 0, 2).unwrap();
    assert_eq!(results.total, 5);
    assert_eq!(results.hits.len(), 2);
    assert_eq!(results.by_mailbox["alice@contoso.com"], 4);
    assert_eq!(results.by_mailbox["bob@contoso.com"], 1);
    assert_eq!(results.by_app["Word"], 3);
    assert_eq!(results.by_location["holds"], 1);
    assert_eq!(results.by_location["active"], 4);
    let first = h.store.get_interactions(&[results.hits[0].id]).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(first.content.client_key, "k09", "newest first");

    let oldest = execute(
        &searcher,
        &h.index.fields,
        &query,
        &all,
        Sort::Oldest,
        0,
        10,
    )
    .unwrap();
    let keys: Vec<String> = h
        .store
        .get_interactions(&oldest.hits.iter().map(|x| x.id).collect::<Vec<_>>())
        .unwrap()
        .into_iter()
        .map(|i| i.unwrap().content.client_key)
        .collect();
    assert_eq!(keys, ["k01", "k02", "k03", "k07", "k09"]);
    let page2 = execute(&searcher, &h.index.fields, &query, &all, Sort::Oldest, 2, 2).unwrap();
    assert_eq!(page2.hits, oldest.hits[2..4]);
}

#[test]
fn a_prefix_expanding_too_far_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(&dir.path().join("store")).unwrap());
    let words: Vec<String> = (0..10_050).map(|n| format!("zzz{n}")).collect();
    let mut fixture = content(&corpus()[0]);
    fixture.prompt = words.join(" ");
    store
        .write_interactions(&[NewInteraction::new(
            InteractionId(Ulid::new()),
            Utc::now(),
            fixture,
        )])
        .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (index, indexer) = index::start(
        &dir.path().join("index"),
        Arc::clone(&store),
        IndexSettings::default(),
        shutdown.clone(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while index.progress.committed.load(Ordering::Acquire) < store.last_index_sequence() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let searcher = index.reader.searcher();
    let mailboxes = [MailboxId::parse("alice@contoso.com").unwrap()];
    let error = execute(
        &searcher,
        &index.fields,
        &kql::parse("zzz*").unwrap(),
        &mailboxes,
        Sort::Relevance,
        0,
        10,
    )
    .unwrap_err();
    assert!(error.to_string().contains("more than 10000"), "{error}");
    let ok = execute(
        &searcher,
        &index.fields,
        &kql::parse("zzz100*").unwrap(),
        &mailboxes,
        Sort::Relevance,
        0,
        10,
    )
    .unwrap();
    assert_eq!(ok.total, 1);
    shutdown.cancel();
    indexer.join();
}

/// An index over one item whose prompt is `prompt`, with its indexer caught up.
fn index_of_one_prompt(
    prompt: String,
) -> (
    tempfile::TempDir,
    Arc<SearchIndex>,
    tokio_util::sync::CancellationToken,
    index::IndexerThread,
) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(&dir.path().join("store")).unwrap());
    let mut fixture = content(&corpus()[0]);
    fixture.prompt = prompt;
    store
        .write_interactions(&[NewInteraction::new(
            InteractionId(Ulid::new()),
            Utc::now(),
            fixture,
        )])
        .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (index, indexer) = index::start(
        &dir.path().join("index"),
        Arc::clone(&store),
        IndexSettings::default(),
        shutdown.clone(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while index.progress.committed.load(Ordering::Acquire) < store.last_index_sequence() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    (dir, index, shutdown, indexer)
}

#[test]
fn the_prefixes_of_one_query_share_one_allowance_of_terms() {
    // Three prefixes of 7,000 words each: every one is within its own limit of 10,000, but
    // all three together pass the per-query limit of 20,000.
    let words: Vec<String> = ["zqa", "zqb", "zqc"]
        .iter()
        .flat_map(|stem| (0..7_000).map(move |n| format!("{stem}{n}")))
        .collect();
    let (_dir, index, shutdown, indexer) = index_of_one_prompt(words.join(" "));
    let searcher = index.reader.searcher();
    let mailboxes = [MailboxId::parse("alice@contoso.com").unwrap()];
    let run = |query: &str| {
        execute(
            &searcher,
            &index.fields,
            &kql::parse(query).unwrap(),
            &mailboxes,
            Sort::Relevance,
            0,
            10,
        )
    };
    assert_eq!(run("zqa*").unwrap().total, 1);
    assert_eq!(run("zqa* OR zqb*").unwrap().total, 1);
    let error = run("zqa* OR zqb* OR zqc*").unwrap_err();
    assert!(
        matches!(error, super::query::QueryError::TooManyQueryTerms { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("in all"), "{error}");
    // The same prefix twice counts twice: the work is done twice.
    assert!(run("zqa* zqa* zqa*").is_err());
    shutdown.cancel();
    indexer.join();
}

#[test]
fn snippets_look_at_a_bounded_window_of_the_text() {
    use super::query::{Highlighter, SNIPPET_SCAN_BYTES};
    let highlighter = Highlighter::new(&kql::parse("needle OR budg*").unwrap());
    // A match near the start of a 1 MiB text is found and highlighted.
    let mut text = String::from("one needle here ");
    text.push_str(&"hay ".repeat((1 << 20) / 4));
    let (snippet, highlights) = highlighter
        .snippet(kql::TextField::Prompt, &text)
        .expect("a snippet");
    assert!(snippet.len() < 400);
    assert_eq!(highlights, [(4, 10)]);
    // A match only past the window is not looked for.
    let mut far = "hay ".repeat(SNIPPET_SCAN_BYTES);
    far.push_str("needle");
    assert!(highlighter.snippet(kql::TextField::Prompt, &far).is_none());
    // A word cut by the end of the window is not taken for a word of the text.
    let mut cut = "x".repeat(SNIPPET_SCAN_BYTES - 7);
    cut.push_str(" budgetary");
    assert!(highlighter.snippet(kql::TextField::Prompt, &cut).is_none());
    // Multi-byte characters across the window's end cut nothing in half.
    for shift in 0..4 {
        let mut text = "x".repeat(SNIPPET_SCAN_BYTES - 6 + shift);
        text.push_str(" needle 予算予算予算 ");
        text.push_str(&"é".repeat(100));
        let _ = highlighter.snippet(kql::TextField::Prompt, &text);
    }
}

fn a_deleted_index_is_rebuilt_with_identical_results(backend: Backend) {
    let mut h = Harness::on(backend);
    let queries = [
        "budget",
        "best NEAR(5) worst",
        "location:holds",
        "予算の要約",
        "created<2025-04-01",
    ];
    let before: Vec<_> = queries.iter().map(|q| h.keys(q)).collect();
    // Keep the data directory when the first harness goes.
    let kept = std::mem::replace(&mut h._dir, tempfile::tempdir().unwrap());
    let dir = kept.path().to_path_buf();
    let store = Arc::clone(&h.store);
    let cluster = h.cluster.take();
    drop(h);
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (index, indexer) = index::start(
        &dir.join("index"),
        Arc::clone(&store),
        IndexSettings::default(),
        shutdown.clone(),
    )
    .unwrap();
    let rebuilt = Harness {
        _dir: kept,
        store,
        index,
        shutdown,
        indexer: Some(indexer),
        cluster,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while rebuilt.index.progress.rebuilding.load(Ordering::Acquire) {
        assert!(Instant::now() < deadline, "rebuild did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
    rebuilt.wait_until_indexed();
    let after: Vec<_> = queries.iter().map(|q| rebuilt.keys(q)).collect();
    assert_eq!(before, after);
}

fn exports_list_every_match_in_id_order(backend: Backend) {
    let h = Harness::on(backend);
    let searcher = h.index.reader.searcher();
    let query = kql::parse("budget OR cats OR worst").unwrap();
    let ids =
        super::searcher::matching_ids(&searcher, &h.index.fields, &query, &Harness::mailboxes())
            .unwrap();
    assert_eq!(ids.len(), 5);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
}
