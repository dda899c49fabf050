//! The tantivy schema of the eDiscovery index and the tokenizer that feeds it the words of
//! `analysis::words`. Text is indexed, never stored: hits are hydrated from RocksDB.

use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, FAST, STORED,
    STRING,
};
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};
use tantivy::TantivyDocument;

use super::analysis;
use crate::domain::StoredInteraction;

/// Name under which `WordTokenizer` is registered.
pub const TOKENIZER: &str = "holdfast_words";
/// Bumped whenever the schema or the analysis changes: an index of another version is rebuilt.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// The interaction id (raw term, for deletes; stored, to find the record).
    pub id: Field,
    pub mailbox: Field,
    /// `mailbox_key(mailbox)`: a number, so that searches filter by mailbox cheaply.
    pub mailbox_key: Field,
    pub thread: Field,
    /// Lower-cased application name, for `app:`.
    pub app: Field,
    /// The application name as sent, for counts per app.
    pub app_name: Field,
    pub model: Field,
    pub plugin: Field,
    pub resource: Field,
    pub label: Field,
    /// `true` when any safety flag is set.
    pub flagged: Field,
    /// `active` or `holds`.
    pub location: Field,
    /// `created_at` in microseconds.
    pub created: Field,
    pub prompt: Field,
    pub response: Field,
}

pub fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let keyword_fast = STRING | FAST;
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        id: builder.add_text_field("id", STRING | STORED | FAST),
        mailbox: builder.add_text_field("mailbox", keyword_fast.clone()),
        mailbox_key: builder.add_u64_field("mailbox_key", NumericOptions::default().set_fast()),
        thread: builder.add_text_field("thread", STRING),
        app: builder.add_text_field("app", STRING),
        app_name: builder.add_text_field("app_name", TextOptions::default().set_fast(None)),
        model: builder.add_text_field("model", STRING),
        plugin: builder.add_text_field("plugin", STRING),
        resource: builder.add_text_field("resource", STRING),
        label: builder.add_text_field("label", STRING),
        flagged: builder.add_text_field("flagged", STRING),
        location: builder.add_text_field("location", keyword_fast),
        created: builder.add_i64_field(
            "created",
            NumericOptions::default().set_indexed().set_fast(),
        ),
        prompt: builder.add_text_field("prompt", text.clone()),
        response: builder.add_text_field("response", text),
    };
    (builder.build(), fields)
}

pub use crate::domain::mailbox_key;

pub fn location_term(visible_to_user: bool) -> &'static str {
    if visible_to_user {
        "active"
    } else {
        "holds"
    }
}

/// The index document of an interaction.
pub fn document(fields: &Fields, item: &StoredInteraction) -> TantivyDocument {
    let content = &item.content;
    let mut doc = TantivyDocument::default();
    let lower = |text: &str| text.to_lowercase();
    doc.add_text(fields.id, item.id.to_string());
    doc.add_text(fields.mailbox, content.mailbox_id.as_str());
    doc.add_u64(fields.mailbox_key, mailbox_key(content.mailbox_id.as_str()));
    if !content.thread_id.is_empty() {
        doc.add_text(fields.thread, lower(&content.thread_id));
    }
    doc.add_text(fields.app, lower(&content.app));
    doc.add_text(fields.app_name, &content.app);
    let model = &content.model;
    for value in [&model.provider, &model.name, &model.version] {
        if !value.is_empty() {
            doc.add_text(fields.model, lower(value));
        }
    }
    let annex = item.annex.as_ref();
    let plugins = content
        .plugins
        .iter()
        .chain(annex.into_iter().flat_map(|a| &a.plugins));
    let resources = (content.accessed_resources.iter())
        .chain(annex.into_iter().flat_map(|a| &a.accessed_resources));
    for plugin in plugins {
        for value in [&plugin.id, &plugin.name] {
            if !value.is_empty() {
                doc.add_text(fields.plugin, lower(value));
            }
        }
    }
    for resource in resources {
        for value in [&resource.id, &resource.name, &resource.url] {
            if !value.is_empty() {
                doc.add_text(fields.resource, lower(value));
            }
        }
    }
    if !content.sensitivity_label.is_empty() {
        doc.add_text(fields.label, lower(&content.sensitivity_label));
    }
    let safety = &content.safety;
    let flagged = safety.jailbreak_detected
        || safety.cross_prompt_injection_detected
        || safety.content_filtered
        || !safety.categories.is_empty();
    doc.add_text(fields.flagged, if flagged { "true" } else { "false" });
    doc.add_text(
        fields.location,
        location_term(item.location.is_visible_to_user()),
    );
    doc.add_i64(fields.created, content.created_at.timestamp_micros());
    doc.add_text(fields.prompt, &content.prompt);
    doc.add_text(fields.response, &content.response);
    doc
}

/// tantivy's view of `analysis::words`.
#[derive(Clone, Default)]
pub struct WordTokenizer;

pub struct WordStream {
    tokens: Vec<Token>,
    next: usize,
}

impl Tokenizer for WordTokenizer {
    type TokenStream<'a> = WordStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream {
        let tokens = analysis::words(text)
            .into_iter()
            .map(|word| Token {
                offset_from: word.start,
                offset_to: word.end,
                position: word.position,
                text: word.text,
                position_length: 1,
            })
            .collect();
        WordStream { tokens, next: 0 }
    }
}

impl TokenStream for WordStream {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}
