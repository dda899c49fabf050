//! KQL: parse any text; a parsed query is translated into a tantivy query over a small
//! in-RAM index and run, and its snippet highlighter is applied. None of it may panic.
//! A parse error's position is within the query (or at its end). Runs on a thread with
//! tokio's 2 MiB stack, as searches do in the server.

use std::sync::OnceLock;

use holdfast_server::search::kql::{self, TextField};
use holdfast_server::search::query::{translate, Highlighter};
use holdfast_server::search::schema::{self, Fields, WordTokenizer, TOKENIZER};
use tantivy::collector::Count;
use tantivy::{doc, Index, IndexReader};

const PROMPTS: &[(&str, &str)] = &[
    (
        "Please summarise the Q3 budget forecast",
        "The budget looks fine",
    ),
    ("best plan and worst plan", "cats and dogs, résumé"),
    (
        "予算の要約 일정 alice@contoso.com don't",
        "budgets budgeted budgeting",
    ),
];

struct Fixture {
    reader: IndexReader,
    fields: Fields,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (schema, fields) = schema::schema();
        let index = Index::create_in_ram(schema);
        index.tokenizers().register(
            TOKENIZER,
            tantivy::tokenizer::TextAnalyzer::from(WordTokenizer),
        );
        let mut writer = index.writer_with_num_threads(1, 15_000_000).unwrap();
        for (n, (prompt, response)) in PROMPTS.iter().enumerate() {
            writer
                .add_document(doc!(
                    fields.id => format!("{n:026}"),
                    fields.mailbox => "alice@contoso.com",
                    fields.mailbox_key => schema::mailbox_key("alice@contoso.com"),
                    fields.thread => "t-1",
                    fields.app => "word",
                    fields.app_name => "Word",
                    fields.model => "gpt-4o",
                    fields.plugin => "bingwebsearch",
                    fields.resource => "budget.xlsx",
                    fields.label => "confidential",
                    fields.flagged => if n == 0 { "true" } else { "false" },
                    fields.location => schema::location_term(n != 2),
                    fields.created => 1_735_725_600_000_000i64 + n as i64 * 86_400_000_000,
                    fields.prompt => *prompt,
                    fields.response => *response,
                ))
                .unwrap();
        }
        writer.commit().unwrap();
        Fixture {
            reader: index.reader().unwrap(),
            fields,
        }
    })
}

fn check(text: &str) {
    let query = match kql::parse(text) {
        Ok(query) => query,
        Err(error) => {
            // A character position in the query, or its end.
            assert!(error.position <= text.chars().count(), "{error}");
            return;
        }
    };
    let fixture = fixture();
    let searcher = fixture.reader.searcher();
    if let Ok(tantivy_query) = translate(&query, &fixture.fields, &searcher) {
        let _ = searcher.search(&*tantivy_query, &Count);
    }
    let highlighter = Highlighter::new(&query);
    for field in [TextField::Any, TextField::Prompt, TextField::Response] {
        for (prompt, response) in PROMPTS {
            let _ = highlighter.snippet(field, prompt);
            let _ = highlighter.snippet(field, response);
        }
        let _ = highlighter.snippet(field, text);
    }
}

/// One input of the target (the fuzz binary and the corpus replay test call this).
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    fixture();
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || check(&text))
        .unwrap()
        .join()
        .unwrap();
}
