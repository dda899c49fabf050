//! Translation of a KQL `Query` into a tantivy query over the schema, and the snippets that
//! show where a hit matched. Matching uses exactly the semantics of SPEC §5, because holds
//! (with the retention issue) must match exactly what a search finds.

use std::collections::BTreeSet;
use std::ops::Bound;

use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, Occur, PhraseQuery, Query as TantivyQuery, RangeQuery,
    TermQuery, TermSetQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{Searcher, Term};

use super::analysis;
use super::kql::{KeywordProperty, LocationValue, Query, TextField, TextMatch};
use super::schema::Fields;

/// Most distinct words one prefix may expand to (SPEC §5).
pub const MAX_PREFIX_TERMS: usize = 10_000;
/// Most terms all the prefixes of one query may expand to together, counted per text field
/// (a prefix over the prompt and the response counts its words twice): one prefix within its
/// own limit always fits, many cannot multiply the work.
pub const MAX_QUERY_TERMS: usize = 2 * MAX_PREFIX_TERMS;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("the prefix {prefix}* matches more than {MAX_PREFIX_TERMS} words; make it longer")]
    TooManyTerms { prefix: String },
    #[error(
        "the prefixes of the query match more than {MAX_QUERY_TERMS} words in all (at \
         {prefix}*); use fewer or longer prefixes"
    )]
    TooManyQueryTerms { prefix: String },
    #[error("the page starts past the end of the results")]
    OffsetPastEnd,
    #[error("search index error: {0}")]
    Index(String),
}

/// What is left of a query's allowance of expanded terms.
struct TermBudget {
    remaining: usize,
}

fn text_fields(fields: &Fields, field: TextField) -> Vec<Field> {
    match field {
        TextField::Any => vec![fields.prompt, fields.response],
        TextField::Prompt => vec![fields.prompt],
        TextField::Response => vec![fields.response],
    }
}

fn union(queries: Vec<Box<dyn TantivyQuery>>) -> Box<dyn TantivyQuery> {
    if queries.len() == 1 {
        return queries.into_iter().next().expect("one query");
    }
    Box::new(BooleanQuery::union(queries))
}

fn term_query(field: Field, text: &str) -> Box<dyn TantivyQuery> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, text),
        IndexRecordOption::WithFreqs,
    ))
}

/// Every word of `field` starting with `prefix`, over all segments; stops as soon as there
/// are more than `MAX_PREFIX_TERMS` (an error).
fn expand_prefix(
    searcher: &Searcher,
    field: Field,
    prefix: &str,
    found: &mut BTreeSet<String>,
) -> Result<(), QueryError> {
    let upper = {
        let mut bytes = prefix.as_bytes().to_vec();
        // The smallest byte string above every word with this prefix.
        while let Some(last) = bytes.pop() {
            if last < 0xff {
                bytes.push(last + 1);
                break;
            }
        }
        bytes
    };
    for segment in searcher.segment_readers() {
        let inverted = segment
            .inverted_index(field)
            .map_err(|e| QueryError::Index(e.to_string()))?;
        let mut range = inverted.terms().range().ge(prefix.as_bytes());
        if !upper.is_empty() {
            range = range.lt(&upper);
        }
        let mut stream = range
            .into_stream()
            .map_err(|e| QueryError::Index(e.to_string()))?;
        while stream.advance() {
            if let Ok(word) = std::str::from_utf8(stream.key()) {
                found.insert(word.to_string());
                if found.len() > MAX_PREFIX_TERMS {
                    return Err(QueryError::TooManyTerms {
                        prefix: prefix.to_string(),
                    });
                }
            }
        }
    }
    Ok(())
}

fn keyword_field(fields: &Fields, property: KeywordProperty) -> Field {
    match property {
        KeywordProperty::Mailbox => fields.mailbox,
        KeywordProperty::Thread => fields.thread,
        KeywordProperty::App => fields.app,
        KeywordProperty::Model => fields.model,
        KeywordProperty::Plugin => fields.plugin,
        KeywordProperty::Resource => fields.resource,
        KeywordProperty::Label => fields.label,
    }
}

/// Builds the tantivy query. `searcher` is needed to expand prefixes; a prefix expanding to
/// more than `MAX_PREFIX_TERMS` words, or all prefixes together to more than
/// `MAX_QUERY_TERMS` terms, is an error.
pub fn translate(
    query: &Query,
    fields: &Fields,
    searcher: &Searcher,
) -> Result<Box<dyn TantivyQuery>, QueryError> {
    let mut budget = TermBudget {
        remaining: MAX_QUERY_TERMS,
    };
    translate_within(query, fields, searcher, &mut budget)
}

fn translate_within(
    query: &Query,
    fields: &Fields,
    searcher: &Searcher,
    budget: &mut TermBudget,
) -> Result<Box<dyn TantivyQuery>, QueryError> {
    let translate =
        |query: &Query, budget: &mut TermBudget| translate_within(query, fields, searcher, budget);
    Ok(match query {
        Query::And(parts) => {
            let mut clauses = Vec::with_capacity(parts.len());
            for part in parts {
                match part {
                    Query::Not(inner) => clauses.push((Occur::MustNot, translate(inner, budget)?)),
                    other => clauses.push((Occur::Must, translate(other, budget)?)),
                }
            }
            if clauses.iter().all(|(occur, _)| *occur == Occur::MustNot) {
                clauses.push((Occur::Must, Box::new(AllQuery)));
            }
            Box::new(BooleanQuery::new(clauses))
        }
        Query::Or(parts) => union(
            parts
                .iter()
                .map(|part| translate(part, budget))
                .collect::<Result<_, _>>()?,
        ),
        Query::Not(inner) => Box::new(BooleanQuery::new(vec![
            (Occur::Must, Box::new(AllQuery)),
            (Occur::MustNot, translate(inner, budget)?),
        ])),
        Query::Text { field, matcher } => {
            let targets = text_fields(fields, *field);
            match matcher {
                TextMatch::Term(word) => {
                    union(targets.iter().map(|f| term_query(*f, word)).collect())
                }
                TextMatch::Phrase(words) => union(
                    targets
                        .iter()
                        .map(|f| {
                            let terms =
                                words.iter().map(|w| Term::from_field_text(*f, w)).collect();
                            Box::new(PhraseQuery::new(terms)) as Box<dyn TantivyQuery>
                        })
                        .collect(),
                ),
                TextMatch::Prefix(prefix) => {
                    let mut queries: Vec<Box<dyn TantivyQuery>> = Vec::new();
                    let mut total = BTreeSet::new();
                    for target in targets {
                        let mut words = BTreeSet::new();
                        expand_prefix(searcher, target, prefix, &mut words)?;
                        total.extend(words.iter().cloned());
                        if total.len() > MAX_PREFIX_TERMS {
                            return Err(QueryError::TooManyTerms {
                                prefix: prefix.clone(),
                            });
                        }
                        budget.remaining =
                            budget.remaining.checked_sub(words.len()).ok_or_else(|| {
                                QueryError::TooManyQueryTerms {
                                    prefix: prefix.clone(),
                                }
                            })?;
                        let terms: Vec<Term> = words
                            .iter()
                            .map(|w| Term::from_field_text(target, w))
                            .collect();
                        if !terms.is_empty() {
                            queries.push(Box::new(TermSetQuery::new(terms)));
                        }
                    }
                    if queries.is_empty() {
                        Box::new(EmptyQuery)
                    } else {
                        union(queries)
                    }
                }
            }
        }
        Query::Near {
            field,
            left,
            right,
            distance,
        } => {
            // Positions at most `distance` apart = at most `distance - 1` words between; a
            // phrase of two terms with that slop, in each order.
            let slop = distance.saturating_sub(1);
            let mut queries: Vec<Box<dyn TantivyQuery>> = Vec::new();
            for target in text_fields(fields, *field) {
                for (first, second) in [(left, right), (right, left)] {
                    let terms = vec![
                        (0, Term::from_field_text(target, first)),
                        (1, Term::from_field_text(target, second)),
                    ];
                    queries.push(Box::new(PhraseQuery::new_with_offset_and_slop(terms, slop)));
                }
            }
            union(queries)
        }
        Query::Keyword { property, value } => Box::new(TermQuery::new(
            Term::from_field_text(keyword_field(fields, *property), value),
            IndexRecordOption::Basic,
        )),
        Query::Flagged(flagged) => Box::new(TermQuery::new(
            Term::from_field_text(fields.flagged, if *flagged { "true" } else { "false" }),
            IndexRecordOption::Basic,
        )),
        Query::Location(location) => Box::new(TermQuery::new(
            Term::from_field_text(
                fields.location,
                match location {
                    LocationValue::Active => "active",
                    LocationValue::Holds => "holds",
                },
            ),
            IndexRecordOption::Basic,
        )),
        Query::Created { from, to } => {
            let bound = |value: &Option<i64>, inclusive: bool| match value {
                None => Bound::Unbounded,
                Some(v) if inclusive => Bound::Included(Term::from_field_i64(fields.created, *v)),
                Some(v) => Bound::Excluded(Term::from_field_i64(fields.created, *v)),
            };
            Box::new(RangeQuery::new(bound(from, true), bound(to, false)))
        }
    })
}

/// How much of a prompt or response a snippet looks at (from its start).
pub const SNIPPET_SCAN_BYTES: usize = 32 << 10;

/// The words a snippet highlights: every positive text condition of the query, by field.
#[derive(Debug, Default, Clone)]
pub struct Highlighter {
    /// (field, word or prefix, is_prefix)
    words: Vec<(TextField, String, bool)>,
}

impl Highlighter {
    pub fn new(query: &Query) -> Highlighter {
        let mut highlighter = Highlighter::default();
        highlighter.collect(query, false);
        highlighter
    }

    fn collect(&mut self, query: &Query, negated: bool) {
        match query {
            Query::And(parts) | Query::Or(parts) => {
                for part in parts {
                    self.collect(part, negated);
                }
            }
            Query::Not(inner) => self.collect(inner, !negated),
            Query::Text { field, matcher } if !negated => match matcher {
                TextMatch::Term(word) => self.words.push((*field, word.clone(), false)),
                TextMatch::Phrase(words) => {
                    for word in words {
                        self.words.push((*field, word.clone(), false));
                    }
                }
                TextMatch::Prefix(prefix) => self.words.push((*field, prefix.clone(), true)),
            },
            Query::Near {
                field, left, right, ..
            } if !negated => {
                self.words.push((*field, left.clone(), false));
                self.words.push((*field, right.clone(), false));
            }
            _ => {}
        }
    }

    fn matches(&self, field: TextField, word: &str) -> bool {
        self.words.iter().any(|(f, w, prefix)| {
            (*f == TextField::Any || *f == field)
                && if *prefix {
                    word.starts_with(w.as_str())
                } else {
                    word == w
                }
        })
    }

    /// A window of `text` around its first matching word, with the byte ranges (relative to
    /// the snippet) of every matching word in it. Only the first `SNIPPET_SCAN_BYTES` of the
    /// text are looked at, so that a page of hits over 1 MiB texts costs a bounded amount of
    /// work. `None` when nothing matches there.
    pub fn snippet(&self, field: TextField, text: &str) -> Option<(String, Vec<(usize, usize)>)> {
        const CONTEXT: usize = 80;
        let mut scanned = text.len().min(SNIPPET_SCAN_BYTES);
        while !text.is_char_boundary(scanned) {
            scanned -= 1;
        }
        let cut = scanned < text.len();
        let text = &text[..scanned];
        let mut words = analysis::words(text);
        if cut {
            // The last word may be cut in half by the window: it is not a word of the text.
            words.pop();
        }
        let first = words.iter().find(|w| self.matches(field, &w.text))?;
        let mut start = first.start.saturating_sub(CONTEXT);
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (first.end + 2 * CONTEXT).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        let highlights = words
            .iter()
            .filter(|w| w.start >= start && w.end <= end && self.matches(field, &w.text))
            .map(|w| (w.start - start, w.end - start))
            .collect();
        Some((text[start..end].to_string(), highlights))
    }
}
