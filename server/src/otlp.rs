//! OpenTelemetry GenAI spans as interactions: which spans of an OTLP trace export are
//! inference calls, and how each becomes an interaction (the table in `docs/otlp.md`). Pure:
//! no storage, no I/O; the application layer (`app/otlp.rs`) stores what this produces.
//!
//! Three forms of instrumentation are read: the current GenAI semantic conventions
//! (`gen_ai.input.messages` / `gen_ai.output.messages`), their legacy event form
//! (`gen_ai.user.message`, `gen_ai.choice`, ...) with OpenLLMetry's indexed attributes
//! (`gen_ai.prompt.{i}.content`), and OpenInference (`llm.input_messages.{i}.message.*`).
//! Reasons for refusing a span name the span and the attribute to set, never its text.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use holdfast_content::{AccessedResource, Model, Plugin, Safety};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value as Json;

use crate::validate::UnvalidatedContent;

/// `gen_ai.operation.name` values of an inference call.
const INFERENCE_OPERATIONS: &[&str] = &["chat", "generate_content", "text_completion"];

/// Tool and resource entries kept per span and per trace.
const MAX_TOOLS: usize = 64;

/// What the server's configuration and the caller's token say about mapping.
#[derive(Debug, Clone)]
pub struct Options {
    /// Attributes naming the user, in order (span first, then resource).
    pub user_attributes: Vec<String>,
    /// The app to record (the token's `otlp_app`); `None`: the resource's `service.name`.
    pub app: Option<String>,
    /// Store LLM spans without content as metadata-only evidence instead of refusing them.
    pub metadata_only: bool,
    /// The longest attribute value and list entry kept (longer ones are cut and say so).
    pub max_field_bytes: usize,
    /// The most spans one export may hold.
    pub max_spans: usize,
}

/// The most bytes of tool and resource names kept per trace.
const MAX_TOOL_BYTES: usize = 16 << 10;

/// The tools and resources a trace's tool, retrieval and MCP spans named, each with when its
/// span ended (nanoseconds since the epoch), within `MAX_TOOL_BYTES`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceTools {
    pub plugins: Vec<(u64, Plugin)>,
    pub resources: Vec<(u64, AccessedResource)>,
    bytes: usize,
}

impl TraceTools {
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty() && self.resources.is_empty()
    }

    fn add_plugin(&mut self, ended: u64, plugin: Plugin) {
        // The same tool again: its earliest end counts (whichever arrived first).
        if let Some(known) = self.plugins.iter_mut().find(|(_, p)| *p == plugin) {
            known.0 = known.0.min(ended);
            return;
        }
        let size = plugin.id.len() + plugin.name.len() + plugin.version.len();
        if self.plugins.len() < MAX_TOOLS && self.bytes + size <= MAX_TOOL_BYTES {
            self.bytes += size;
            self.plugins.push((ended, plugin));
        }
    }

    fn add_resource(&mut self, ended: u64, resource: AccessedResource) {
        if let Some(known) = self.resources.iter_mut().find(|(_, r)| *r == resource) {
            known.0 = known.0.min(ended);
            return;
        }
        let size = resource.id.len()
            + resource.name.len()
            + resource.resource_type.len()
            + resource.url.len()
            + resource.action.len();
        if self.resources.len() < MAX_TOOLS && self.bytes + size <= MAX_TOOL_BYTES {
            self.bytes += size;
            self.resources.push((ended, resource));
        }
    }

    /// Rebuilds stored entries (within the same bounds).
    pub fn from_entries(
        plugins: Vec<(u64, Plugin)>,
        resources: Vec<(u64, AccessedResource)>,
    ) -> TraceTools {
        let mut tools = TraceTools::default();
        for (ended, plugin) in plugins {
            tools.add_plugin(ended, plugin);
        }
        for (ended, resource) in resources {
            tools.add_resource(ended, resource);
        }
        tools
    }

    /// The entries here that `before` lacks.
    pub fn since(&self, before: &TraceTools) -> TraceTools {
        TraceTools::from_entries(
            self.plugins
                .iter()
                .filter(|entry| !before.plugins.contains(entry))
                .cloned()
                .collect(),
            self.resources
                .iter()
                .filter(|entry| !before.resources.contains(entry))
                .cloned()
                .collect(),
        )
    }

    /// Adds `other`'s entries not already here (within the bounds).
    pub fn merge(&mut self, other: &TraceTools) {
        for (ended, plugin) in &other.plugins {
            self.add_plugin(*ended, plugin.clone());
        }
        for (ended, resource) in &other.resources {
            self.add_resource(*ended, resource.clone());
        }
    }

    /// The tools and resources of spans that ended by `end`: what an inference that ended
    /// then can have used.
    pub fn ended_by(&self, end: u64, max: usize) -> (Vec<Plugin>, Vec<AccessedResource>) {
        (
            self.plugins
                .iter()
                .filter(|(ended, _)| *ended <= end)
                .map(|(_, p)| p.clone())
                .take(max)
                .collect(),
            self.resources
                .iter()
                .filter(|(ended, _)| *ended <= end)
                .map(|(_, r)| r.clone())
                .take(max)
                .collect(),
        )
    }
}

/// One inference span: its interaction, or why it cannot be one.
#[derive(Debug)]
pub struct LlmSpan {
    /// The trace id, lower-case hex (tools of the trace attach by it).
    pub trace_id: String,
    /// When the span ended (tools of spans that ended by then attach).
    pub end: u64,
    pub content: Result<UnvalidatedContent, String>,
}

/// What one export request holds.
#[derive(Debug, Default)]
pub struct Mapped {
    /// Inference spans, in the request's order.
    pub llm_spans: Vec<LlmSpan>,
    /// Tools and resources named by this request's other spans, by trace id.
    pub tools: HashMap<String, TraceTools>,
    /// Spans that are neither (accepted and ignored).
    pub ignored: usize,
}

/// Reads an export request. Refuses one with more than `max_spans` spans (an exporter's
/// batch is far smaller), so that what one request costs is bounded.
pub fn map_request(
    request: &ExportTraceServiceRequest,
    options: &Options,
) -> Result<Mapped, String> {
    let spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    if spans > options.max_spans {
        return Err(format!(
            "{spans} spans in one export, more than {}: lower the exporter's batch size \
             (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)",
            options.max_spans
        ));
    }
    let mut mapped = Mapped::default();
    for resource_spans in &request.resource_spans {
        let resource: &[KeyValue] = resource_spans
            .resource
            .as_ref()
            .map_or(&[], |r| r.attributes.as_slice());
        // What the resource says, read once and bounded: it is copied into every span.
        let resource = ResourceView::read(resource, options);
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                if is_inference(span) {
                    mapped.llm_spans.push(LlmSpan {
                        content: interaction(span, &resource, options),
                        trace_id: hex(&span.trace_id),
                        end: span.end_time_unix_nano,
                    });
                } else if let Some(tools) = tools_of(span, options) {
                    if valid_trace_id(&span.trace_id) {
                        mapped
                            .tools
                            .entry(hex(&span.trace_id))
                            .or_default()
                            .merge(&tools);
                    }
                } else {
                    mapped.ignored += 1;
                }
            }
        }
    }
    Ok(mapped)
}

fn valid_trace_id(id: &[u8]) -> bool {
    id.len() == 16 && id.iter().any(|b| *b != 0)
}

fn valid_span_id(id: &[u8]) -> bool {
    id.len() == 8 && id.iter().any(|b| *b != 0)
}

/// The resource's user, thread, app and label: each read once per resource, and refused
/// (as absent, which the span's refusal then names) when longer than a field may be.
struct ResourceView {
    user: Option<String>,
    conversation: Option<String>,
    session: Option<String>,
    app: Option<String>,
    label: Option<String>,
}

impl ResourceView {
    fn read(attributes: &[KeyValue], options: &Options) -> ResourceView {
        let bounded = |key: &str| {
            string(attributes, key).filter(|value| value.len() <= options.max_field_bytes)
        };
        ResourceView {
            user: options.user_attributes.iter().find_map(|key| bounded(key)),
            conversation: bounded("gen_ai.conversation.id"),
            session: bounded("session.id"),
            app: bounded("service.name"),
            label: bounded("holdfast.sensitivity_label"),
        }
    }
}

fn is_inference(span: &Span) -> bool {
    let attributes = &span.attributes;
    string(attributes, "gen_ai.operation.name")
        .is_some_and(|op| INFERENCE_OPERATIONS.contains(&op.as_str()))
        || string(attributes, "openinference.span.kind")
            .is_some_and(|kind| kind.eq_ignore_ascii_case("LLM"))
}

/// The tools and resources a tool, retrieval or MCP span names; `None` for other spans.
fn tools_of(span: &Span, options: &Options) -> Option<TraceTools> {
    let attributes = &span.attributes;
    let operation = string(attributes, "gen_ai.operation.name").unwrap_or_default();
    let kind = string(attributes, "openinference.span.kind")
        .unwrap_or_default()
        .to_ascii_uppercase();
    let mcp_method = string(attributes, "mcp.method.name");
    // Control characters would make every inference of the trace fail validation.
    let cut = |text: String| {
        let clean: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        cut(clean, options.max_field_bytes)
    };
    let ended = span.end_time_unix_nano;
    let mut tools = TraceTools::default();
    if operation == "execute_tool" || kind == "TOOL" || mcp_method.is_some() {
        let name = string(attributes, "gen_ai.tool.name")
            .or_else(|| string(attributes, "tool.name"))
            .unwrap_or_else(|| span.name.clone());
        if mcp_method.as_deref() != Some("resources/read") {
            tools.add_plugin(
                ended,
                Plugin {
                    id: cut(string(attributes, "gen_ai.tool.call.id").unwrap_or_default()),
                    name: cut(name),
                    version: String::new(),
                },
            );
        }
        if let Some(uri) = string(attributes, "mcp.resource.uri") {
            tools.add_resource(
                ended,
                AccessedResource {
                    id: String::new(),
                    name: cut(uri.clone()),
                    resource_type: "mcp".into(),
                    url: cut(uri),
                    action: cut(mcp_method.unwrap_or_default()),
                    sensitivity_label: String::new(),
                },
            );
        }
    } else if operation == "retrieval" || kind == "RETRIEVER" {
        if let Some(source) = string(attributes, "gen_ai.data_source.id") {
            tools.add_resource(
                ended,
                AccessedResource {
                    id: cut(source.clone()),
                    name: cut(source),
                    resource_type: "data_source".into(),
                    action: "read".into(),
                    ..AccessedResource::default()
                },
            );
        }
        for (_, fields) in indexed(attributes, "retrieval.documents.") {
            if let Some(id) = fields.get("document.id") {
                tools.add_resource(
                    ended,
                    AccessedResource {
                        id: cut(id.clone()),
                        name: cut(id.clone()),
                        resource_type: "document".into(),
                        action: "read".into(),
                        ..AccessedResource::default()
                    },
                );
            }
        }
        if tools.is_empty() {
            tools.add_plugin(
                ended,
                Plugin {
                    name: cut(span.name.clone()),
                    ..Plugin::default()
                },
            );
        }
    } else {
        return None;
    }
    Some(tools)
}

/// One inference span as an interaction. Refusals name the span by its ids (never its
/// name or text) and say what to set.
fn interaction(
    span: &Span,
    resource: &ResourceView,
    options: &Options,
) -> Result<UnvalidatedContent, String> {
    let attributes = &span.attributes;
    if !valid_trace_id(&span.trace_id) || !valid_span_id(&span.span_id) {
        return Err("a span: its trace id is not 16 bytes or its span id not 8".into());
    }
    let span_name = format!("span {}:{}", hex(&span.trace_id), hex(&span.span_id));
    let user = options
        .user_attributes
        .iter()
        .find_map(|key| string(attributes, key))
        .or_else(|| resource.user.clone())
        .ok_or_else(|| {
            format!(
                "{span_name}: no user: set one of {} on the span or its resource (holdfast \
                 archives each interaction in its user's mailbox)",
                options.user_attributes.join(", ")
            )
        })?;
    let created_at = i64::try_from(span.start_time_unix_nano)
        .ok()
        .filter(|nanos| *nanos > 0)
        .map(DateTime::<Utc>::from_timestamp_nanos)
        .ok_or_else(|| format!("{span_name}: no start time"))?;

    let text = texts(span);
    if text.prompt.is_empty() && text.response.is_empty() && !options.metadata_only {
        return Err(format!(
            "{span_name}: no prompt or response captured: turn on content capture in the \
             instrumentation (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true, or \
             OPENINFERENCE_HIDE_INPUTS/OUTPUTS unset), or configure this token with \
             otlp_metadata_only to keep such spans as metadata"
        ));
    }

    let model = Model {
        provider: [
            "gen_ai.provider.name",
            "gen_ai.system",
            "llm.provider",
            "llm.system",
        ]
        .iter()
        .find_map(|key| string(attributes, key))
        .unwrap_or_default(),
        name: [
            "gen_ai.response.model",
            "gen_ai.request.model",
            "llm.model_name",
        ]
        .iter()
        .find_map(|key| string(attributes, key))
        .unwrap_or_default(),
        version: String::new(),
    };
    let finish_reasons = strings(attributes, "gen_ai.response.finish_reasons");
    let mut safety = Safety {
        content_filtered: finish_reasons.iter().any(|r| r == "content_filter"),
        ..Safety::default()
    };
    for attribute in attributes {
        if let Some(name) = attribute.key.strip_prefix("gen_ai.guardrail.") {
            let value = attribute.value.as_ref().and_then(plain).unwrap_or_default();
            if ["blocked", "block", "deny", "denied", "intervened", "true"]
                .contains(&value.to_ascii_lowercase().as_str())
            {
                safety.content_filtered = true;
            }
            if safety.categories.len() < 16 {
                safety
                    .categories
                    .push(cut(format!("guardrail.{name}={value}"), 256));
            }
        }
    }

    let mut kept = BTreeMap::new();
    let mut keep = |key: &str, value: String| {
        if !value.is_empty() {
            kept.insert(key.to_string(), cut(value, options.max_field_bytes));
        }
    };
    keep("otel.trace_id", hex(&span.trace_id));
    keep("otel.span_id", hex(&span.span_id));
    keep("otel.parent_span_id", hex(&span.parent_span_id));
    keep("otel.span_name", span.name.clone());
    for key in [
        "gen_ai.operation.name",
        "gen_ai.request.model",
        "gen_ai.response.id",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "openinference.span.kind",
    ] {
        keep(key, string(attributes, key).unwrap_or_default());
    }
    keep("gen_ai.response.finish_reasons", finish_reasons.join(","));
    keep("gen_ai.system_instructions", text.system);
    if text.prompt.is_empty() && text.response.is_empty() {
        keep("holdfast.content", "metadata-only".into());
    }

    Ok(UnvalidatedContent {
        client_key: format!("{}:{}", hex(&span.trace_id), hex(&span.span_id)),
        mailbox_id: user,
        thread_id: string(attributes, "gen_ai.conversation.id")
            .or_else(|| resource.conversation.clone())
            .or_else(|| string(attributes, "session.id"))
            .or_else(|| resource.session.clone())
            .unwrap_or_else(|| hex(&span.trace_id)),
        app: options
            .app
            .clone()
            .or_else(|| resource.app.clone())
            .unwrap_or_else(|| "otel".into()),
        created_at,
        prompt: text.prompt,
        response: text.response,
        model,
        plugins: Vec::new(),
        accessed_resources: Vec::new(),
        contexts: Vec::new(),
        safety,
        sensitivity_label: string(attributes, "holdfast.sensitivity_label")
            .or_else(|| resource.label.clone())
            .unwrap_or_default(),
        attributes: kept,
    })
}

/// The prompt, response and system instructions of an inference span.
#[derive(Debug, Default)]
struct Texts {
    prompt: String,
    response: String,
    system: String,
}

/// One chat message: its role and its text parts.
#[derive(Debug)]
struct Message {
    role: String,
    text: String,
}

fn texts(span: &Span) -> Texts {
    let attributes = &span.attributes;
    // 1. The current conventions.
    let input = find(attributes, "gen_ai.input.messages").map(messages);
    let output = find(attributes, "gen_ai.output.messages").map(messages);
    let mut system = find(attributes, "gen_ai.system_instructions")
        .map(|value| join(messages(value).iter().map(|m| m.text.as_str())))
        .unwrap_or_default();
    if input.is_some() || output.is_some() {
        let input = input.unwrap_or_default();
        return Texts {
            prompt: prompt_of(&input),
            response: join(output.unwrap_or_default().iter().map(|m| m.text.as_str())),
            system: or(system, system_of(&input)),
        };
    }
    // 2. The legacy event form.
    let mut input = Vec::new();
    let mut output = Vec::new();
    for event in &span.events {
        let body = |keys: &[&str]| keys.iter().find_map(|key| find(&event.attributes, key));
        match event.name.as_str() {
            "gen_ai.user.message" | "gen_ai.system.message" => {
                if let Some(value) = body(&["content", "gen_ai.event.content"]) {
                    let role = if event.name == "gen_ai.user.message" {
                        "user"
                    } else {
                        "system"
                    };
                    input.push(Message {
                        role: role.into(),
                        text: event_text(value),
                    });
                }
            }
            "gen_ai.choice" => {
                if let Some(value) = body(&["message", "message.content", "content"])
                    .or_else(|| body(&["gen_ai.event.content"]))
                {
                    output.push(Message {
                        role: "assistant".into(),
                        text: event_text(value),
                    });
                }
            }
            "gen_ai.content.prompt" => {
                if let Some(value) = body(&["gen_ai.prompt"]) {
                    input.extend(messages(value));
                }
            }
            "gen_ai.content.completion" => {
                if let Some(value) = body(&["gen_ai.completion"]) {
                    output.extend(messages(value));
                }
            }
            _ => {}
        }
    }
    // 3. Indexed attributes: OpenLLMetry, then OpenInference.
    for (prefix, role_key, content_keys, into_input) in [
        ("gen_ai.prompt.", "role", &["content"][..], true),
        ("gen_ai.completion.", "role", &["content"][..], false),
        (
            "llm.input_messages.",
            "message.role",
            &["message.content"][..],
            true,
        ),
        (
            "llm.output_messages.",
            "message.role",
            &["message.content"][..],
            false,
        ),
    ] {
        // One form per span, in this order: a span that carries two gets one copy.
        let starts_a_form = prefix == "gen_ai.prompt." || prefix == "llm.input_messages.";
        if starts_a_form && (!input.is_empty() || !output.is_empty()) {
            break;
        }
        for (_, fields) in indexed(attributes, prefix) {
            let mut text: Vec<&str> = content_keys
                .iter()
                .filter_map(|key| fields.get(*key).map(String::as_str))
                .collect();
            // OpenInference's multi-part form: message.contents.{j}.message_content.text
            let mut parts: Vec<(usize, &str)> = fields
                .iter()
                .filter_map(|(key, value)| {
                    let rest = key.strip_prefix("message.contents.")?;
                    let (j, field) = rest.split_once('.')?;
                    (field == "message_content.text")
                        .then(|| j.parse().ok().map(|j| (j, value.as_str())))?
                })
                .collect();
            parts.sort();
            text.extend(parts.into_iter().map(|(_, t)| t));
            let message = Message {
                role: fields.get(role_key).cloned().unwrap_or_default(),
                text: join(text.into_iter()),
            };
            if into_input {
                input.push(message);
            } else {
                output.push(message);
            }
        }
    }
    system = or(system, system_of(&input));
    Texts {
        prompt: prompt_of(&input),
        response: join(
            output
                .iter()
                .filter(|m| m.role.is_empty() || m.role == "assistant")
                .map(|m| m.text.as_str()),
        ),
        system,
    }
}

/// The prompt of an inference: the last user message (earlier turns were archived as their
/// own interactions); without roles, every message that is not the system's.
fn prompt_of(input: &[Message]) -> String {
    if let Some(last) = input.iter().rev().find(|m| m.role == "user") {
        return last.text.clone();
    }
    join(
        input
            .iter()
            .filter(|m| m.role != "system" && m.role != "developer")
            .map(|m| m.text.as_str()),
    )
}

fn system_of(input: &[Message]) -> String {
    join(
        input
            .iter()
            .filter(|m| m.role == "system" || m.role == "developer")
            .map(|m| m.text.as_str()),
    )
}

/// Messages from an attribute value: a JSON string, a structured array, a string array, or
/// one plain string.
fn messages(value: &AnyValue) -> Vec<Message> {
    match &value.value {
        Some(Value::StringValue(text)) => match serde_json::from_str::<Json>(text) {
            Ok(Json::Array(items)) => items.iter().map(message_of_json).collect(),
            Ok(object @ Json::Object(_)) => vec![message_of_json(&object)],
            _ => vec![Message {
                role: String::new(),
                text: text.clone(),
            }],
        },
        Some(Value::ArrayValue(array)) => array
            .values
            .iter()
            .map(|item| message_of_json(&to_json(item)))
            .collect(),
        Some(Value::KvlistValue(_)) => vec![message_of_json(&to_json(value))],
        _ => Vec::new(),
    }
}

/// A message in the conventions' JSON form (`role` and `parts`), or the common chat form
/// (`role` and `content`, a string or a list of typed parts), or a bare string.
fn message_of_json(json: &Json) -> Message {
    let role = json
        .get("role")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    let text = match json {
        Json::String(text) => text.clone(),
        _ => {
            let parts = json.get("parts").or_else(|| json.get("content"));
            match parts {
                Some(Json::String(text)) => text.clone(),
                Some(Json::Array(parts)) => join(parts.iter().filter_map(part_text)),
                _ => String::new(),
            }
        }
    };
    Message { role, text }
}

/// The text of one message part (`{"type": "text", "content": ...}` or `"text": ...`);
/// other parts (tool calls, images, reasoning) are not prompt or response text.
fn part_text(part: &Json) -> Option<&str> {
    match part {
        Json::String(text) => Some(text),
        Json::Object(fields) => {
            let kind = fields.get("type").and_then(Json::as_str).unwrap_or("text");
            if kind != "text" {
                return None;
            }
            fields
                .get("content")
                .or_else(|| fields.get("text"))
                .and_then(Json::as_str)
        }
        _ => None,
    }
}

/// The text of a legacy event's body: a string, a message (`{content}`), or JSON of either.
fn event_text(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(text)) => match serde_json::from_str::<Json>(text) {
            // A body in JSON; text that merely looks like JSON (no message in it) is kept
            // as it is.
            Ok(json @ Json::Object(_))
                if ["message", "content", "parts"]
                    .iter()
                    .any(|key| json.get(key).is_some()) =>
            {
                let message = json.get("message").unwrap_or(&json);
                message_of_json(message).text
            }
            _ => text.clone(),
        },
        Some(Value::KvlistValue(_)) => {
            let json = to_json(value);
            let message = json.get("message").unwrap_or(&json);
            message_of_json(message).text
        }
        _ => plain(value).unwrap_or_default(),
    }
}

fn join<'a>(texts: impl Iterator<Item = &'a str>) -> String {
    texts
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn or(first: String, second: String) -> String {
    if first.is_empty() {
        second
    } else {
        first
    }
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// A scalar value as text (strings, numbers, booleans); `None` for empty or structured.
fn plain(value: &AnyValue) -> Option<String> {
    let text = match value.value.as_ref()? {
        Value::StringValue(text) => text.trim().to_string(),
        Value::IntValue(number) => number.to_string(),
        Value::DoubleValue(number) => number.to_string(),
        Value::BoolValue(flag) => flag.to_string(),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

fn string(attributes: &[KeyValue], key: &str) -> Option<String> {
    find(attributes, key).and_then(plain)
}

/// A string array attribute (or one string).
fn strings(attributes: &[KeyValue], key: &str) -> Vec<String> {
    match find(attributes, key).and_then(|v| v.value.as_ref()) {
        Some(Value::ArrayValue(array)) => array.values.iter().filter_map(plain).collect(),
        Some(_) => find(attributes, key).and_then(plain).into_iter().collect(),
        None => Vec::new(),
    }
}

/// Attributes `{prefix}{i}.{field}` grouped by `i` (in order), with their scalar values.
fn indexed(attributes: &[KeyValue], prefix: &str) -> BTreeMap<usize, HashMap<String, String>> {
    let mut groups: BTreeMap<usize, HashMap<String, String>> = BTreeMap::new();
    for attribute in attributes {
        let Some(rest) = attribute.key.strip_prefix(prefix) else {
            continue;
        };
        let Some((index, field)) = rest.split_once('.') else {
            continue;
        };
        let (Ok(index), Some(value)) = (index.parse(), attribute.value.as_ref().and_then(plain))
        else {
            continue;
        };
        groups
            .entry(index)
            .or_default()
            .insert(field.to_string(), value);
    }
    groups
}

fn to_json(value: &AnyValue) -> Json {
    match &value.value {
        Some(Value::StringValue(text)) => Json::String(text.clone()),
        Some(Value::BoolValue(flag)) => Json::Bool(*flag),
        Some(Value::IntValue(number)) => Json::from(*number),
        Some(Value::DoubleValue(number)) => Json::from(*number),
        Some(Value::ArrayValue(array)) => Json::Array(array.values.iter().map(to_json).collect()),
        Some(Value::KvlistValue(list)) => Json::Object(
            list.values
                .iter()
                .map(|kv| {
                    let value = kv.value.as_ref().map_or(Json::Null, to_json);
                    (kv.key.clone(), value)
                })
                .collect(),
        ),
        _ => Json::Null,
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// `text` cut to at most `max` bytes at a character boundary, saying it was cut.
fn cut(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let note = format!(" [cut from {} bytes]", text.len());
    let mut end = max.saturating_sub(note.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &text[..end])
}

#[cfg(test)]
#[path = "otlp_tests.rs"]
mod tests;
