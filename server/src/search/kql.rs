//! The keyword query language (KQL) of SPEC §5: a lexer and a recursive-descent parser that
//! produce a `Query` AST. Translating the AST into index queries is the index's business.
//!
//! Grammar (upper-case operators only; lower-case `and`/`or`/`not` are words):
//!
//! ```text
//! query    := or EOF
//! or       := and ( "OR" and )*
//! and      := unary ( "AND"? unary )*            juxtaposition is AND
//! unary    := "NOT" unary | "-" unary | near
//! near     := primary ( NEAR primary )*          NEAR or NEAR(n), default n = 8
//! primary  := "(" or ")"
//!           | text_property ":" ( "(" or ")" | text )     prompt: response:
//!           | keyword_property ":" value                mailbox: participants: thread: app:
//!                                                       model: plugin: resource: label:
//!           | "flagged:" ("true"|"false") | "location:" ("active"|"holds")
//!           | date_property ( ">=" | ">" | "<=" | "<" ) DATE
//!           | date_property ":" DATE ( ".." DATE )?      created: sent: received:
//!           | text
//! text     := WORDS | WORDS "*" | '"' anything '"'
//! ```
//!
//! A chunk of text is cut into words exactly as indexed text is (`analysis::words`): one word
//! is a term, several are a phrase (`alice@contoso.com` is the phrase `alice contoso com`).
//! A prefix needs at least 3 characters before `*`; other wildcards are refused. Dates are UTC
//! days (`YYYY-MM-DD`); `created:D1..D2` includes both days.

use std::fmt;

use chrono::{NaiveDate, TimeDelta};

use super::analysis;

/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 10_000;
/// Default distance of `NEAR`.
pub const DEFAULT_NEAR_DISTANCE: u32 = 8;
/// Deepest nesting of parentheses and operators accepted.
const MAX_DEPTH: usize = 64;

/// Which text a text query looks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextField {
    /// The prompt or the response.
    Any,
    Prompt,
    Response,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextMatch {
    Term(String),
    /// Consecutive words, inside one field.
    Phrase(Vec<String>),
    /// Words starting with this (normalised) prefix.
    Prefix(String),
}

/// Properties matched exactly (case-insensitively) against a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeywordProperty {
    Mailbox,
    Thread,
    App,
    Model,
    Plugin,
    Resource,
    Label,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationValue {
    Active,
    Holds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    And(Vec<Query>),
    Or(Vec<Query>),
    Not(Box<Query>),
    Text {
        field: TextField,
        matcher: TextMatch,
    },
    /// Both words in the same field, at most `distance` words apart, in either order.
    Near {
        field: TextField,
        left: String,
        right: String,
        distance: u32,
    },
    Keyword {
        property: KeywordProperty,
        value: String,
    },
    Flagged(bool),
    Location(LocationValue),
    /// `created_at` in `[from, to)`, both in microseconds since the epoch.
    Created {
        from: Option<i64>,
        to: Option<i64>,
    },
}

/// A malformed query: where (a 0-based character position) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: {}", self.position, self.message)
    }
}

impl std::error::Error for ParseError {}

fn error<T>(position: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        position,
        message: message.into(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenKind {
    Open,
    Close,
    And,
    Or,
    Not,
    Minus,
    Near(u32),
    /// A quoted phrase, without the quotes.
    Quoted(String),
    /// Any other run of characters up to white space, a parenthesis or a quote.
    Chunk(String),
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    /// Character position of the token's first character.
    position: usize,
}

fn lex(input: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let position = i;
        match c {
            '(' => {
                tokens.push(Token {
                    kind: TokenKind::Open,
                    position,
                });
                i += 1;
            }
            ')' => {
                tokens.push(Token {
                    kind: TokenKind::Close,
                    position,
                });
                i += 1;
            }
            '"' => {
                let Some(length) = chars[i + 1..].iter().position(|&c| c == '"') else {
                    return error(position, "expected a closing '\"' for this phrase");
                };
                let phrase: String = chars[i + 1..i + 1 + length].iter().collect();
                tokens.push(Token {
                    kind: TokenKind::Quoted(phrase),
                    position,
                });
                i += length + 2;
            }
            '-' if chars
                .get(i + 1)
                .is_some_and(|n| !n.is_whitespace() && *n != ')') =>
            {
                tokens.push(Token {
                    kind: TokenKind::Minus,
                    position,
                });
                i += 1;
            }
            _ => {
                let mut end = i;
                while end < chars.len()
                    && !chars[end].is_whitespace()
                    && !matches!(chars[end], '(' | ')' | '"')
                {
                    end += 1;
                }
                let chunk: String = chars[i..end].iter().collect();
                // `NEAR(n)`: the parenthesis belongs to the operator.
                if chunk == "NEAR" && chars.get(end) == Some(&'(') {
                    let Some(length) = chars[end + 1..].iter().position(|&c| c == ')') else {
                        return error(end, "expected ')' after NEAR(n");
                    };
                    let digits: String = chars[end + 1..end + 1 + length].iter().collect();
                    let distance = match digits.trim().parse::<u32>() {
                        Ok(n) if (1..=1000).contains(&n) => n,
                        _ => {
                            return error(end + 1, "expected a distance from 1 to 1000 in NEAR(n)")
                        }
                    };
                    tokens.push(Token {
                        kind: TokenKind::Near(distance),
                        position,
                    });
                    i = end + length + 2;
                    continue;
                }
                let kind = match chunk.as_str() {
                    "AND" => TokenKind::And,
                    "OR" => TokenKind::Or,
                    "NOT" => TokenKind::Not,
                    "NEAR" => TokenKind::Near(DEFAULT_NEAR_DISTANCE),
                    _ => TokenKind::Chunk(chunk),
                };
                tokens.push(Token { kind, position });
                i = end;
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    /// Character length of the input, the position of "end of query".
    end: usize,
    depth: usize,
}

/// Parses a KQL query.
pub fn parse(input: &str) -> Result<Query, ParseError> {
    let length = input.chars().count();
    if length > MAX_QUERY_CHARS {
        return error(
            MAX_QUERY_CHARS,
            format!("the query is {length} characters long; at most {MAX_QUERY_CHARS} are allowed"),
        );
    }
    let mut parser = Parser {
        tokens: lex(input)?,
        next: 0,
        end: length,
        depth: 0,
    };
    if parser.tokens.is_empty() {
        return error(0, "expected a search term; the query is empty");
    }
    let query = parser.or()?;
    match parser.peek() {
        None => Ok(query),
        Some(token) if token.kind == TokenKind::Close => {
            error(token.position, "unexpected ')' without a matching '('")
        }
        Some(token) => error(
            token.position,
            "expected an operator or the end of the query",
        ),
    }
}

fn describe(kind: &TokenKind) -> &'static str {
    match kind {
        TokenKind::Open => "'('",
        TokenKind::Close => "')'",
        TokenKind::And => "AND",
        TokenKind::Or => "OR",
        TokenKind::Not => "NOT",
        TokenKind::Minus => "'-'",
        TokenKind::Near(_) => "NEAR",
        TokenKind::Quoted(_) | TokenKind::Chunk(_) => "a term",
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn position(&self) -> usize {
        self.peek().map_or(self.end, |t| t.position)
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return error(
                self.position(),
                format!("the query nests deeper than {MAX_DEPTH} levels"),
            );
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Query, ParseError> {
        self.enter()?;
        let mut parts = vec![self.and()?];
        while self.peek().is_some_and(|t| t.kind == TokenKind::Or) {
            self.next += 1;
            parts.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Query::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Query, ParseError> {
        let mut parts = vec![self.unary()?];
        loop {
            match self.peek().map(|t| &t.kind) {
                Some(TokenKind::And) => {
                    self.next += 1;
                    parts.push(self.unary()?);
                }
                Some(TokenKind::Or | TokenKind::Close) | None => break,
                Some(_) => parts.push(self.unary()?),
            }
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Query::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Query, ParseError> {
        match self.peek().map(|t| &t.kind) {
            Some(TokenKind::Not | TokenKind::Minus) => {
                self.next += 1;
                self.enter()?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Query::Not(Box::new(inner)))
            }
            _ => self.near(),
        }
    }

    fn near(&mut self) -> Result<Query, ParseError> {
        let left_position = self.position();
        let mut left = self.primary()?;
        while let Some(TokenKind::Near(distance)) = self.peek().map(|t| t.kind.clone()) {
            self.next += 1;
            let right_position = self.position();
            let right = self.primary()?;
            left = Query::Near {
                field: near_field(&left, &right, left_position)?,
                left: near_word(&left, left_position)?,
                right: near_word(&right, right_position)?,
                distance,
            };
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Query, ParseError> {
        let Some(token) = self.peek().cloned() else {
            return error(self.end, "expected a search term at the end of the query");
        };
        self.next += 1;
        match token.kind {
            TokenKind::Open => {
                let inner = self.or()?;
                match self.peek() {
                    Some(t) if t.kind == TokenKind::Close => {
                        self.next += 1;
                        Ok(inner)
                    }
                    _ => error(
                        self.position(),
                        format!(
                            "expected ')' to close the '(' at position {}",
                            token.position
                        ),
                    ),
                }
            }
            TokenKind::Quoted(phrase) => phrase_query(TextField::Any, &phrase, token.position + 1),
            TokenKind::Chunk(chunk) => self.chunk(&chunk, token.position),
            other => error(
                token.position,
                format!("expected a search term, found {}", describe(&other)),
            ),
        }
    }

    /// A chunk of text, or a property restriction.
    fn chunk(&mut self, chunk: &str, position: usize) -> Result<Query, ParseError> {
        if let Some((name, operator, rest)) = split_property(chunk) {
            let value_position = position + name.chars().count() + operator.chars().count();
            let lowered = name.to_lowercase();
            if matches!(lowered.as_str(), "created" | "sent" | "received") {
                return date_query(operator, rest, value_position);
            }
            if operator == ":" {
                if let Some(field) = text_field(&lowered) {
                    return self.text_property(field, rest, value_position);
                }
                if let Some(property) = keyword_property(&lowered) {
                    let value = self.property_value(rest, value_position)?;
                    return Ok(Query::Keyword {
                        property,
                        value: value.to_lowercase(),
                    });
                }
                match lowered.as_str() {
                    "flagged" => {
                        return match self
                            .property_value(rest, value_position)?
                            .to_lowercase()
                            .as_str()
                        {
                            "true" => Ok(Query::Flagged(true)),
                            "false" => Ok(Query::Flagged(false)),
                            _ => error(value_position, "expected flagged:true or flagged:false"),
                        }
                    }
                    "location" => {
                        return match self
                            .property_value(rest, value_position)?
                            .to_lowercase()
                            .as_str()
                        {
                            "active" => Ok(Query::Location(LocationValue::Active)),
                            "holds" | "holds_area" => Ok(Query::Location(LocationValue::Holds)),
                            _ => {
                                error(value_position, "expected location:active or location:holds")
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        text_query(TextField::Any, chunk, position)
    }

    /// The value after `property:`: the rest of the chunk, or a quoted phrase right after.
    fn property_value(&mut self, rest: &str, position: usize) -> Result<String, ParseError> {
        if !rest.is_empty() {
            return Ok(rest.to_string());
        }
        match self.peek().cloned() {
            Some(Token {
                kind: TokenKind::Quoted(value),
                position: p,
            }) if p == position => {
                self.next += 1;
                Ok(value)
            }
            _ => error(position, "expected a value after ':'"),
        }
    }

    fn text_property(
        &mut self,
        field: TextField,
        rest: &str,
        position: usize,
    ) -> Result<Query, ParseError> {
        if !rest.is_empty() {
            return text_query(field, rest, position);
        }
        match self.peek().cloned() {
            Some(Token {
                kind: TokenKind::Quoted(phrase),
                position: p,
            }) if p == position => {
                self.next += 1;
                phrase_query(field, &phrase, p + 1)
            }
            Some(Token {
                kind: TokenKind::Open,
                position: p,
            }) if p == position => {
                self.next += 1;
                let inner = self.or()?;
                match self.peek() {
                    Some(t) if t.kind == TokenKind::Close => self.next += 1,
                    _ => {
                        return error(
                            self.position(),
                            format!("expected ')' to close the '(' at position {p}"),
                        )
                    }
                }
                Ok(restrict(inner, field))
            }
            _ => error(position, "expected a term, a phrase or '(' after ':'"),
        }
    }
}

/// Narrows the text queries inside `query` to `field`.
fn restrict(query: Query, field: TextField) -> Query {
    match query {
        Query::And(parts) => Query::And(parts.into_iter().map(|q| restrict(q, field)).collect()),
        Query::Or(parts) => Query::Or(parts.into_iter().map(|q| restrict(q, field)).collect()),
        Query::Not(inner) => Query::Not(Box::new(restrict(*inner, field))),
        Query::Text {
            field: TextField::Any,
            matcher,
        } => Query::Text { field, matcher },
        Query::Near {
            field: TextField::Any,
            left,
            right,
            distance,
        } => Query::Near {
            field,
            left,
            right,
            distance,
        },
        other => other,
    }
}

fn text_field(name: &str) -> Option<TextField> {
    match name {
        "prompt" => Some(TextField::Prompt),
        "response" => Some(TextField::Response),
        _ => None,
    }
}

fn keyword_property(name: &str) -> Option<KeywordProperty> {
    match name {
        "mailbox" | "participants" => Some(KeywordProperty::Mailbox),
        "thread" => Some(KeywordProperty::Thread),
        "app" => Some(KeywordProperty::App),
        "model" => Some(KeywordProperty::Model),
        "plugin" => Some(KeywordProperty::Plugin),
        "resource" => Some(KeywordProperty::Resource),
        "label" => Some(KeywordProperty::Label),
        _ => None,
    }
}

const PROPERTY_NAMES: &[&str] = &[
    "prompt",
    "response",
    "mailbox",
    "participants",
    "thread",
    "app",
    "model",
    "plugin",
    "resource",
    "label",
    "flagged",
    "location",
    "created",
    "sent",
    "received",
];

/// `name:rest`, `name>=rest`, ... when `name` is a known property.
fn split_property(chunk: &str) -> Option<(&str, &str, &str)> {
    let name_end = chunk.find([':', '<', '>'])?;
    let name = &chunk[..name_end];
    if !PROPERTY_NAMES.contains(&name.to_lowercase().as_str()) {
        return None;
    }
    let after = &chunk[name_end..];
    let operator = [">=", "<=", ":", ">", "<"]
        .into_iter()
        .find(|op| after.starts_with(op))?;
    Some((name, operator, &after[operator.len()..]))
}

/// Microseconds since the epoch at the start of `date`. Every day chrono can represent
/// (years -262143 to +262142) is within ±2^63 µs, so this cannot overflow.
fn day_start_micros(date: NaiveDate) -> i64 {
    date.and_time(chrono::NaiveTime::MIN)
        .and_utc()
        .timestamp_micros()
}

fn parse_date(text: &str, position: usize) -> Result<NaiveDate, ParseError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").or_else(|_| {
        error(
            position,
            format!("expected a date as YYYY-MM-DD, found {text:?}"),
        )
    })
}

/// The start of the day after `date`, or an error at `position` when `date` is the last day
/// chrono can represent (`+262142-12-31`): checked, never an overflow.
fn next_day_micros(date: NaiveDate, position: usize) -> Result<i64, ParseError> {
    match date.checked_add_signed(TimeDelta::days(1)) {
        Some(next) => Ok(day_start_micros(next)),
        None => error(
            position,
            format!(
                "the date {date} is out of range (the last day is {})",
                NaiveDate::MAX
            ),
        ),
    }
}

fn date_query(operator: &str, rest: &str, position: usize) -> Result<Query, ParseError> {
    if operator == ":" {
        if let Some((first, last)) = rest.split_once("..") {
            let last_position = position + first.chars().count() + 2;
            let from = parse_date(first, position)?;
            let to = parse_date(last, last_position)?;
            if to < from {
                return error(position, "the range ends before it starts");
            }
            return Ok(Query::Created {
                from: Some(day_start_micros(from)),
                to: Some(next_day_micros(to, last_position)?),
            });
        }
        let day = parse_date(rest, position)?;
        return Ok(Query::Created {
            from: Some(day_start_micros(day)),
            to: Some(next_day_micros(day, position)?),
        });
    }
    let date = parse_date(rest, position)?;
    Ok(match operator {
        ">=" => Query::Created {
            from: Some(day_start_micros(date)),
            to: None,
        },
        ">" => Query::Created {
            from: Some(next_day_micros(date, position)?),
            to: None,
        },
        "<" => Query::Created {
            from: None,
            to: Some(day_start_micros(date)),
        },
        "<=" => Query::Created {
            from: None,
            to: Some(next_day_micros(date, position)?),
        },
        _ => return error(position, "expected one of >=, >, <=, < or ':'"),
    })
}

/// A quoted phrase: its words, in one field.
fn phrase_query(field: TextField, phrase: &str, position: usize) -> Result<Query, ParseError> {
    let words: Vec<String> = analysis::words(phrase)
        .into_iter()
        .map(|w| w.text)
        .collect();
    match words.len() {
        0 => error(position, "expected words inside the quotes"),
        1 => Ok(Query::Text {
            field,
            matcher: TextMatch::Term(words.into_iter().next().expect("one")),
        }),
        _ => Ok(Query::Text {
            field,
            matcher: TextMatch::Phrase(words),
        }),
    }
}

/// An unquoted chunk: a term, a phrase (several words), or a prefix.
fn text_query(field: TextField, chunk: &str, position: usize) -> Result<Query, ParseError> {
    if let Some(star) = chunk.find('*') {
        let star_position = position + chunk[..star].chars().count();
        if star != chunk.len() - 1 || chunk[..star].contains('*') {
            return error(
                star_position,
                "'*' is allowed only at the end of a word (a prefix like budg*)",
            );
        }
        let stem = &chunk[..star];
        let words = analysis::words(stem);
        if words.len() != 1 || words[0].start != 0 || words[0].end != stem.len() {
            return error(position, "a prefix must be a single word followed by '*'");
        }
        if stem.chars().count() < 3 {
            return error(
                star_position,
                "a prefix needs at least 3 characters before '*'",
            );
        }
        return Ok(Query::Text {
            field,
            matcher: TextMatch::Prefix(words[0].text.clone()),
        });
    }
    let words: Vec<String> = analysis::words(chunk).into_iter().map(|w| w.text).collect();
    match words.len() {
        0 => error(
            position,
            format!("expected a search term; {chunk:?} contains no letters or digits"),
        ),
        1 => Ok(Query::Text {
            field,
            matcher: TextMatch::Term(words.into_iter().next().expect("one")),
        }),
        _ => Ok(Query::Text {
            field,
            matcher: TextMatch::Phrase(words),
        }),
    }
}

fn near_word(query: &Query, position: usize) -> Result<String, ParseError> {
    match query {
        Query::Text {
            matcher: TextMatch::Term(word),
            ..
        } => Ok(word.clone()),
        _ => error(position, "NEAR needs a single word on each side"),
    }
}

fn near_field(left: &Query, right: &Query, position: usize) -> Result<TextField, ParseError> {
    let field = |q: &Query| match q {
        Query::Text { field, .. } => Some(*field),
        _ => None,
    };
    match (field(left), field(right)) {
        (Some(a), Some(b)) if a == b => Ok(a),
        (Some(TextField::Any), Some(b)) => Ok(b),
        (Some(a), Some(TextField::Any)) => Ok(a),
        (Some(_), Some(_)) => error(
            position,
            "NEAR compares words of one field; both sides name different fields",
        ),
        _ => error(position, "NEAR needs a single word on each side"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn term(word: &str) -> Query {
        Query::Text {
            field: TextField::Any,
            matcher: TextMatch::Term(word.into()),
        }
    }

    fn fails_at(query: &str, position: usize, needle: &str) {
        let error = parse(query).expect_err(query);
        assert_eq!(error.position, position, "{query:?}: {error}");
        assert!(error.message.contains(needle), "{query:?}: {error}");
    }

    #[test]
    fn space_is_and_and_or_binds_looser() {
        assert_eq!(
            parse("a b OR c").unwrap(),
            Query::Or(vec![Query::And(vec![term("a"), term("b")]), term("c")])
        );
        assert_eq!(
            parse("a AND (b OR c)").unwrap(),
            Query::And(vec![term("a"), Query::Or(vec![term("b"), term("c")])])
        );
        assert_eq!(
            parse("NOT a b").unwrap(),
            Query::And(vec![Query::Not(Box::new(term("a"))), term("b")])
        );
        assert_eq!(parse("-a").unwrap(), Query::Not(Box::new(term("a"))));
    }

    #[test]
    fn lower_case_operators_are_words() {
        assert_eq!(
            parse("cats and dogs").unwrap(),
            Query::And(vec![term("cats"), term("and"), term("dogs")])
        );
        assert_eq!(parse("or").unwrap(), term("or"));
    }

    #[test]
    fn chunks_are_cut_like_text() {
        let phrase = |words: &[&str]| Query::Text {
            field: TextField::Any,
            matcher: TextMatch::Phrase(words.iter().map(|w| w.to_string()).collect()),
        };
        assert_eq!(
            parse("alice@contoso.com").unwrap(),
            phrase(&["alice", "contoso", "com"])
        );
        assert_eq!(parse("don't").unwrap(), phrase(&["don", "t"]));
        assert_eq!(parse("\"Best Plan\"").unwrap(), phrase(&["best", "plan"]));
        assert_eq!(parse("Résumé").unwrap(), term("resume"));
        assert_eq!(
            parse("予算の要約").unwrap(),
            phrase(&["予算", "算の", "の要", "要約"])
        );
    }

    #[test]
    fn prefixes_and_wildcards() {
        assert_eq!(
            parse("budg*").unwrap(),
            Query::Text {
                field: TextField::Any,
                matcher: TextMatch::Prefix("budg".into())
            }
        );
        fails_at("bu*", 2, "at least 3 characters");
        fails_at("b*dget", 1, "only at the end");
        fails_at("*budget", 0, "only at the end");
        fails_at("bud?et*", 0, "single word");
    }

    #[test]
    fn near_in_either_order_with_a_default_distance() {
        assert_eq!(
            parse("best NEAR(5) worst").unwrap(),
            Query::Near {
                field: TextField::Any,
                left: "best".into(),
                right: "worst".into(),
                distance: 5
            }
        );
        assert_eq!(
            parse("prompt:best NEAR worst").unwrap(),
            Query::Near {
                field: TextField::Prompt,
                left: "best".into(),
                right: "worst".into(),
                distance: 8
            }
        );
        fails_at("best NEAR(0) worst", 10, "distance");
        fails_at("best NEAR(x) worst", 10, "distance");
        fails_at("\"a b\" NEAR c", 0, "single word");
    }

    #[test]
    fn properties() {
        assert_eq!(
            parse("mailbox:Alice@Contoso.com").unwrap(),
            Query::Keyword {
                property: KeywordProperty::Mailbox,
                value: "alice@contoso.com".into()
            }
        );
        assert_eq!(
            parse("participants:bob@x.com").unwrap(),
            Query::Keyword {
                property: KeywordProperty::Mailbox,
                value: "bob@x.com".into()
            }
        );
        assert_eq!(
            parse("plugin:\"Bing Web Search\"").unwrap(),
            Query::Keyword {
                property: KeywordProperty::Plugin,
                value: "bing web search".into()
            }
        );
        assert_eq!(parse("flagged:true").unwrap(), Query::Flagged(true));
        assert_eq!(
            parse("location:holds").unwrap(),
            Query::Location(LocationValue::Holds)
        );
        assert_eq!(
            parse("prompt:(budget OR forecast)").unwrap(),
            Query::Or(vec![
                Query::Text {
                    field: TextField::Prompt,
                    matcher: TextMatch::Term("budget".into())
                },
                Query::Text {
                    field: TextField::Prompt,
                    matcher: TextMatch::Term("forecast".into())
                },
            ])
        );
        // An unknown "property" is text: URLs stay searchable.
        assert!(matches!(
            parse("https://contoso.com").unwrap(),
            Query::Text { .. }
        ));
        fails_at("flagged:maybe", 8, "flagged:true");
        fails_at("location:x", 9, "location:active");
        fails_at("app:", 4, "value");
    }

    #[test]
    fn dates_are_utc_days_with_inclusive_ranges() {
        let day = |y, m, d| day_start_micros(NaiveDate::from_ymd_opt(y, m, d).unwrap());
        assert_eq!(
            parse("created>=2025-01-01").unwrap(),
            Query::Created {
                from: Some(day(2025, 1, 1)),
                to: None
            }
        );
        assert_eq!(
            parse("sent<2025-04-01").unwrap(),
            Query::Created {
                from: None,
                to: Some(day(2025, 4, 1))
            }
        );
        assert_eq!(
            parse("received<=2025-03-31").unwrap(),
            Query::Created {
                from: None,
                to: Some(day(2025, 4, 1))
            }
        );
        assert_eq!(
            parse("created>2025-03-31").unwrap(),
            Query::Created {
                from: Some(day(2025, 4, 1)),
                to: None
            }
        );
        assert_eq!(
            parse("created:2025-01-01..2025-03-31").unwrap(),
            Query::Created {
                from: Some(day(2025, 1, 1)),
                to: Some(day(2025, 4, 1))
            }
        );
        assert_eq!(
            parse("created:2025-04-15").unwrap(),
            Query::Created {
                from: Some(day(2025, 4, 15)),
                to: Some(day(2025, 4, 16))
            }
        );
        fails_at("created>=2025-13-01", 9, "YYYY-MM-DD");
        // The extremes of the calendar: checked arithmetic, an error with a position.
        fails_at("created:+262142-12-31", 8, "out of range");
        fails_at("created<=+262142-12-31", 9, "out of range");
        fails_at("created>+262142-12-31", 8, "out of range");
        fails_at("created:2025-01-01..+262142-12-31", 20, "out of range");
        assert_eq!(
            parse("created>=+262142-12-31").unwrap(),
            Query::Created {
                from: Some(day_start_micros(NaiveDate::MAX)),
                to: None
            }
        );
        assert_eq!(
            parse("created:-262143-01-01").unwrap(),
            Query::Created {
                from: Some(day_start_micros(NaiveDate::MIN)),
                to: Some(day_start_micros(NaiveDate::MIN.succ_opt().unwrap())),
            }
        );
        assert!(parse("created<-262144-12-31").is_err());
        fails_at("created>=+999999999-01-01", 9, "YYYY-MM-DD");
        fails_at("created:2025-01-01..2025-02-30", 20, "YYYY-MM-DD");
        fails_at("created:2025-03-01..2025-01-01", 8, "ends before");
    }

    #[test]
    fn malformed_queries_say_where_and_what() {
        fails_at("", 0, "empty");
        fails_at("   ", 0, "empty");
        fails_at("(a OR b", 7, "')'");
        fails_at("a OR b)", 6, "without a matching");
        fails_at("a OR", 4, "end of the query");
        fails_at("AND a", 0, "found AND");
        fails_at("a AND OR b", 6, "found OR");
        fails_at("\"open phrase", 0, "closing");
        fails_at("!!!", 0, "no letters or digits");
        let long = "a ".repeat(6000);
        fails_at(&long, MAX_QUERY_CHARS, "at most");
        let deep = format!("{}a{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).unwrap_err().message.contains("nests deeper"));
    }

    proptest! {
        #[test]
        fn dates_never_overflow(
            year in -300_000i32..300_000,
            month in 1u32..=12,
            day in 1u32..=31,
            operator in prop_oneof![
                Just(":"), Just(">="), Just(">"), Just("<="), Just("<")
            ],
        ) {
            let _ = parse(&format!("created{operator}{year:+}-{month:02}-{day:02}"));
            let _ = parse(&format!("created:2025-01-01..{year:+}-{month:02}-{day:02}"));
        }

        #[test]
        fn the_parser_never_panics(input in "\\PC{0,200}") {
            let _ = parse(&input);
        }

        #[test]
        fn the_parser_never_panics_on_query_like_input(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("AND".to_string()), Just("OR".to_string()), Just("NOT".to_string()),
                    Just("(".to_string()), Just(")".to_string()), Just("\"".to_string()),
                    Just("NEAR(3)".to_string()), Just("NEAR".to_string()), Just("-".to_string()),
                    Just("prompt:".to_string()), Just("created>=2025-01-01".to_string()),
                    Just("created:2025-01-01..".to_string()), Just("budg*".to_string()),
                    "[a-z]{1,6}".prop_map(|s| s), Just("*".to_string()), Just(":".to_string()),
                ],
                0..20,
            )
        ) {
            let _ = parse(&parts.join(" "));
            let _ = parse(&parts.concat());
        }
    }
}
