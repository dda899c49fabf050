use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::Event, ResourceSpans, ScopeSpans};

use super::*;

fn s(text: &str) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(text.into())),
    }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        ..KeyValue::default()
    }
}

fn list(values: Vec<AnyValue>) -> AnyValue {
    AnyValue {
        value: Some(Value::ArrayValue(ArrayValue { values })),
    }
}

fn object(fields: Vec<KeyValue>) -> AnyValue {
    AnyValue {
        value: Some(Value::KvlistValue(KeyValueList { values: fields })),
    }
}

fn span(span_id: u8, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![span_id; 8],
        name: "chat gpt-4o".into(),
        start_time_unix_nano: 1_767_225_600_000_000_000, // 2026-01-01T00:00:00Z
        end_time_unix_nano: 1_767_225_601_000_000_000,
        attributes,
        ..Span::default()
    }
}

fn request(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

fn options() -> Options {
    Options {
        user_attributes: crate::config::OtlpConfig::default().user_attributes,
        app: None,
        metadata_only: false,
        max_field_bytes: 8 << 10,
        max_spans: 10_000,
    }
}

fn one(resource: Vec<KeyValue>, span: Span) -> Result<UnvalidatedContent, String> {
    let mut mapped = map_request(&request(resource, vec![span]), &options()).unwrap();
    assert_eq!(mapped.llm_spans.len(), 1, "{mapped:?}");
    mapped.llm_spans.remove(0).content
}

#[test]
fn the_current_conventions_as_a_json_string() {
    let input = r#"[{"role":"system","parts":[{"type":"text","content":"Be brief."}]},
        {"role":"user","parts":[{"type":"text","content":"first question"}]},
        {"role":"assistant","parts":[{"type":"text","content":"first answer"}]},
        {"role":"user","parts":[{"type":"text","content":"What is the budget?"},
                                {"type":"image","uri":"x"}]}]"#;
    let output = r#"[{"role":"assistant","parts":[{"type":"text","content":"It is 5M."},
        {"type":"tool_call","name":"lookup"}],"finish_reason":"stop"}]"#;
    let item = one(
        vec![kv("service.name", s("copilot-backend"))],
        span(
            1,
            vec![
                kv("gen_ai.operation.name", s("chat")),
                kv("gen_ai.provider.name", s("openai")),
                kv("gen_ai.request.model", s("gpt-4o")),
                kv("gen_ai.response.model", s("gpt-4o-2024-08-06")),
                kv("gen_ai.conversation.id", s("conv-1")),
                kv("user.id", s("Alice@Contoso.com")),
                kv("gen_ai.input.messages", s(input)),
                kv("gen_ai.output.messages", s(output)),
                kv("gen_ai.response.finish_reasons", list(vec![s("stop")])),
                kv("holdfast.sensitivity_label", s("Confidential")),
            ],
        ),
    )
    .unwrap();
    assert_eq!(item.mailbox_id, "Alice@Contoso.com");
    assert_eq!(
        item.client_key,
        "07070707070707070707070707070707:0101010101010101"
    );
    assert_eq!(item.thread_id, "conv-1");
    assert_eq!(item.app, "copilot-backend");
    assert_eq!(item.created_at.to_rfc3339(), "2026-01-01T00:00:00+00:00");
    assert_eq!(item.prompt, "What is the budget?");
    assert_eq!(item.response, "It is 5M.");
    assert_eq!(item.model.provider, "openai");
    assert_eq!(item.model.name, "gpt-4o-2024-08-06");
    assert_eq!(item.attributes["gen_ai.request.model"], "gpt-4o");
    assert_eq!(item.attributes["gen_ai.system_instructions"], "Be brief.");
    assert_eq!(item.sensitivity_label, "Confidential");
    assert!(!item.safety.content_filtered);
}

#[test]
fn the_current_conventions_as_structured_values_and_string_arrays() {
    let message = |role: &str, text: &str| {
        object(vec![
            kv("role", s(role)),
            kv(
                "parts",
                list(vec![object(vec![
                    kv("type", s("text")),
                    kv("content", s(text)),
                ])]),
            ),
        ])
    };
    let item = one(
        vec![kv("enduser.id", s("bob@contoso.com"))],
        span(
            2,
            vec![
                kv("gen_ai.operation.name", s("generate_content")),
                kv(
                    "gen_ai.input.messages",
                    list(vec![message("user", "structured prompt")]),
                ),
                kv(
                    "gen_ai.output.messages",
                    list(vec![s("plain"), s("strings")]),
                ),
                kv(
                    "gen_ai.response.finish_reasons",
                    list(vec![s("content_filter")]),
                ),
            ],
        ),
    )
    .unwrap();
    assert_eq!(item.mailbox_id, "bob@contoso.com", "the resource's user");
    assert_eq!(item.prompt, "structured prompt");
    assert_eq!(item.response, "plain\n\nstrings");
    assert!(item.safety.content_filtered);
    assert_eq!(
        item.thread_id, "07070707070707070707070707070707",
        "no conversation: the trace"
    );
    assert_eq!(item.app, "otel");
}

#[test]
fn the_legacy_event_form_and_indexed_attributes() {
    let mut legacy = span(3, vec![kv("gen_ai.operation.name", s("chat"))]);
    legacy
        .attributes
        .push(kv("user.id", s("carol@contoso.com")));
    legacy.events = vec![
        Event {
            name: "gen_ai.system.message".into(),
            attributes: vec![kv("content", s("You are helpful."))],
            ..Event::default()
        },
        Event {
            name: "gen_ai.user.message".into(),
            attributes: vec![kv("content", s("legacy prompt"))],
            ..Event::default()
        },
        Event {
            name: "gen_ai.choice".into(),
            attributes: vec![kv(
                "message",
                object(vec![
                    kv("role", s("assistant")),
                    kv("content", s("legacy answer")),
                ]),
            )],
            ..Event::default()
        },
    ];
    let item = one(vec![], legacy).unwrap();
    assert_eq!(item.prompt, "legacy prompt");
    assert_eq!(item.response, "legacy answer");
    assert_eq!(
        item.attributes["gen_ai.system_instructions"],
        "You are helpful."
    );

    let indexed = span(
        4,
        vec![
            kv("gen_ai.operation.name", s("chat")),
            kv(
                "traceloop.association.properties.user_id",
                s("dan@contoso.com"),
            ),
            kv("gen_ai.prompt.0.role", s("system")),
            kv("gen_ai.prompt.0.content", s("sys")),
            kv("gen_ai.prompt.1.role", s("user")),
            kv("gen_ai.prompt.1.content", s("indexed prompt")),
            kv("gen_ai.completion.0.role", s("assistant")),
            kv("gen_ai.completion.0.content", s("indexed answer")),
        ],
    );
    let item = one(vec![], indexed).unwrap();
    assert_eq!(item.mailbox_id, "dan@contoso.com");
    assert_eq!(item.prompt, "indexed prompt");
    assert_eq!(item.response, "indexed answer");
}

#[test]
fn openinference_llm_spans() {
    let item = one(
        vec![kv("service.name", s("rag-app"))],
        span(
            5,
            vec![
                kv("openinference.span.kind", s("LLM")),
                kv("user.id", s("erin@contoso.com")),
                kv("session.id", s("session-9")),
                kv("llm.model_name", s("claude")),
                kv("llm.provider", s("anthropic")),
                kv("llm.input_messages.0.message.role", s("user")),
                kv("llm.input_messages.0.message.content", s("oi prompt")),
                kv("llm.output_messages.0.message.role", s("assistant")),
                kv(
                    "llm.output_messages.0.message.contents.0.message_content.text",
                    s("oi part one"),
                ),
                kv(
                    "llm.output_messages.0.message.contents.1.message_content.text",
                    s("oi part two"),
                ),
            ],
        ),
    )
    .unwrap();
    assert_eq!(item.prompt, "oi prompt");
    assert_eq!(item.response, "oi part one\n\noi part two");
    assert_eq!(item.thread_id, "session-9");
    assert_eq!(item.model.name, "claude");
    assert_eq!(item.model.provider, "anthropic");
}

#[test]
fn spans_without_a_user_or_content_say_what_to_set() {
    let no_user = one(
        vec![],
        span(
            6,
            vec![
                kv("gen_ai.operation.name", s("chat")),
                kv("gen_ai.input.messages", s("secret prompt text")),
            ],
        ),
    )
    .unwrap_err();
    assert!(no_user.contains("user.id"), "{no_user}");
    assert!(!no_user.contains("secret"), "never the content: {no_user}");

    let no_content = span(
        7,
        vec![
            kv("gen_ai.operation.name", s("chat")),
            kv("user.id", s("alice@contoso.com")),
        ],
    );
    let refused = one(vec![], no_content.clone()).unwrap_err();
    assert!(
        refused.contains("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"),
        "{refused}"
    );
    let mut metadata_only = options();
    metadata_only.metadata_only = true;
    let mapped = map_request(&request(vec![], vec![no_content]), &metadata_only).unwrap();
    let item = mapped.llm_spans[0].content.as_ref().unwrap();
    assert_eq!(item.attributes["holdfast.content"], "metadata-only");
    assert!(item.prompt.is_empty());
}

#[test]
fn tool_retrieval_and_mcp_spans_name_tools_and_other_spans_are_ignored() {
    let spans = vec![
        span(
            8,
            vec![
                kv("gen_ai.operation.name", s("execute_tool")),
                kv("gen_ai.tool.name", s("get_weather")),
                kv("gen_ai.tool.call.id", s("call-1")),
            ],
        ),
        span(
            9,
            vec![
                kv("mcp.method.name", s("resources/read")),
                kv("mcp.resource.uri", s("file:///budget.xlsx")),
            ],
        ),
        span(
            10,
            vec![
                kv("openinference.span.kind", s("RETRIEVER")),
                kv("retrieval.documents.0.document.id", s("doc-42")),
            ],
        ),
        span(11, vec![kv("http.method", s("GET"))]),
    ];
    let mapped = map_request(&request(vec![], spans), &options()).unwrap();
    assert!(mapped.llm_spans.is_empty());
    assert_eq!(mapped.ignored, 1);
    let tools = &mapped.tools["07070707070707070707070707070707"];
    let (plugins, resources) = tools.ended_by(u64::MAX, 100);
    assert_eq!(plugins.len(), 1);
    assert_eq!(plugins[0].name, "get_weather");
    assert_eq!(plugins[0].id, "call-1");
    let names: Vec<&str> = resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["file:///budget.xlsx", "doc-42"]);
    // Only tools that ended by an inference's end attach to it.
    let (before, _) = tools.ended_by(1_767_225_600_000_000_000, 100);
    assert!(before.is_empty());
}

#[test]
fn long_values_are_cut_at_a_character_boundary_and_say_so() {
    let text = "é".repeat(100);
    let kept = cut(text.clone(), 50);
    assert!(kept.len() <= 50, "{}", kept.len());
    assert!(kept.ends_with("[cut from 200 bytes]"), "{kept}");
    assert_eq!(cut("short".into(), 50), "short");
}

#[test]
fn an_export_past_the_span_limit_is_refused_whole() {
    let mut few = options();
    few.max_spans = 2;
    let spans = (1..=3).map(|id| span(id, vec![])).collect();
    let refused = map_request(&request(vec![], spans), &few).unwrap_err();
    assert!(
        refused.contains("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
        "{refused}"
    );
}

#[test]
fn resource_values_longer_than_a_field_are_not_copied_into_spans() {
    let long = "x".repeat((8 << 10) + 1);
    let refused = one(
        vec![kv("user.id", s(&long))],
        span(
            12,
            vec![
                kv("gen_ai.operation.name", s("chat")),
                kv("gen_ai.input.messages", s("hello")),
            ],
        ),
    )
    .unwrap_err();
    assert!(refused.contains("no user"), "{refused}");
    assert!(refused.len() < 1024, "the value is not in the message");
}

#[test]
fn a_prompt_that_looks_like_json_is_kept_and_one_form_wins() {
    let mut legacy = span(
        13,
        vec![
            kv("gen_ai.operation.name", s("chat")),
            kv("user.id", s("alice@contoso.com")),
            // A second form on the same span: ignored, the events win.
            kv("gen_ai.completion.0.content", s("indexed answer")),
        ],
    );
    legacy.events = vec![
        Event {
            name: "gen_ai.user.message".into(),
            attributes: vec![kv("content", s(r#"{"a": 1}"#))],
            ..Event::default()
        },
        Event {
            name: "gen_ai.choice".into(),
            attributes: vec![kv("message.content", s("event answer"))],
            ..Event::default()
        },
    ];
    let item = one(vec![], legacy).unwrap();
    assert_eq!(item.prompt, r#"{"a": 1}"#);
    assert_eq!(item.response, "event answer");
}

#[test]
fn tool_names_lose_control_characters_and_bad_trace_ids_are_not_remembered() {
    let mut tool = span(
        14,
        vec![
            kv("gen_ai.operation.name", s("execute_tool")),
            kv("gen_ai.tool.name", s("get\tweather\n")),
        ],
    );
    let mapped = map_request(&request(vec![], vec![tool.clone()]), &options()).unwrap();
    let (plugins, _) = mapped.tools["07070707070707070707070707070707"].ended_by(u64::MAX, 9);
    assert_eq!(plugins[0].name, "get weather");
    tool.trace_id = vec![1; 3];
    let mapped = map_request(&request(vec![], vec![tool]), &options()).unwrap();
    assert!(mapped.tools.is_empty());
}
