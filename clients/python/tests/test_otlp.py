"""The real OpenTelemetry Python SDK exports GenAI spans to holdfast over OTLP/gRPC and
OTLP/HTTP (protobuf), and a hand-written OTLP/JSON body arrives over HTTP: each inference span
lands as the expected interaction, found by search and export; a re-sent batch stores nothing
twice; a span without a user is reported in partial_success; tool spans attach to their
trace's interactions whichever export brings them, even after a crash."""

import json
import time
import urllib.error
import urllib.request
import uuid

from conftest import INGEST_TOKEN, OTHER_INGEST_TOKEN, REVIEWER_TOKEN
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def http(server, method, path, token, body=None, content_type="application/json"):
    if body is None or isinstance(body, bytes):
        data = body
    else:
        data = json.dumps(body).encode()
    request = urllib.request.Request(server.http_addr + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def exported(server, mailbox, marker, expected):
    """The exported items of `mailbox` matching `marker`, once `expected` are indexed."""
    status, body = http(server, "POST", "/api/v1/cases", REVIEWER_TOKEN,
                        {"name": f"otlp {uuid.uuid4().hex[:8]}", "custodians": [mailbox]})
    assert status == 201, body
    case = json.loads(body)["id"]
    deadline = time.monotonic() + 30
    while True:
        status, body = http(server, "POST", f"/api/v1/cases/{case}/export", REVIEWER_TOKEN,
                            {"query": marker})
        assert status == 200, body
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        items = [line["interaction"] for line in lines if "interaction" in line]
        if len(items) >= expected or time.monotonic() > deadline:
            return items
        time.sleep(0.2)


def tracer(exporter, service="assistant-backend"):
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, provider.get_tracer("holdfast-tests")


def grpc_exporter(server):
    return GrpcSpanExporter(endpoint=server.grpc_addr, insecure=True,
                            headers={"authorization": f"Bearer {INGEST_TOKEN}"})


def http_exporter(server):
    return HttpSpanExporter(endpoint=f"{server.http_addr}/v1/traces",
                            headers={"Authorization": f"Bearer {INGEST_TOKEN}"})


def emit_three_forms(tracer_, mailbox, marker):
    # The current conventions, with a tool call of the same trace ending first.
    with tracer_.start_as_current_span("invoke_agent helper") as agent:
        agent.set_attribute("gen_ai.operation.name", "invoke_agent")
        with tracer_.start_as_current_span("execute_tool get_budget") as tool:
            tool.set_attribute("gen_ai.operation.name", "execute_tool")
            tool.set_attribute("gen_ai.tool.name", "get_budget")
        with tracer_.start_as_current_span("chat gpt-4o") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.provider.name", "openai")
            span.set_attribute("gen_ai.request.model", "gpt-4o")
            span.set_attribute("gen_ai.conversation.id", f"conv-{marker}")
            span.set_attribute("user.id", mailbox)
            span.set_attribute("gen_ai.input.messages", json.dumps([
                {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                {"role": "user",
                 "parts": [{"type": "text", "content": f"current {marker} budget?"}]},
            ]))
            span.set_attribute("gen_ai.output.messages", json.dumps([
                {"role": "assistant", "parts": [{"type": "text", "content": "Five million."}],
                 "finish_reason": "stop"},
            ]))
            span.set_attribute("gen_ai.response.finish_reasons", ["stop"])
    # The legacy event form.
    with tracer_.start_as_current_span("chat legacy") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.system", "openai")
        span.set_attribute("enduser.id", mailbox)
        span.add_event("gen_ai.user.message", {"content": f"legacy {marker} question"})
        span.add_event("gen_ai.choice", {"gen_ai.event.content": json.dumps(
            {"index": 0, "finish_reason": "stop",
             "message": {"role": "assistant", "content": "legacy answer"}})})
    # OpenInference.
    with tracer_.start_as_current_span("ChatCompletion") as span:
        span.set_attribute("openinference.span.kind", "LLM")
        span.set_attribute("llm.model_name", "claude-sonnet")
        span.set_attribute("user.id", mailbox)
        span.set_attribute("session.id", f"session-{marker}")
        span.set_attribute("llm.input_messages.0.message.role", "user")
        span.set_attribute("llm.input_messages.0.message.content", f"openinference {marker} ask")
        span.set_attribute("llm.output_messages.0.message.role", "assistant")
        span.set_attribute("llm.output_messages.0.message.content", "openinference reply")


def check_three_forms(server, mailbox, marker, app):
    items = exported(server, mailbox, marker, 3)
    by_prompt = {item["content"]["prompt"]: item["content"] for item in items}
    annexes = {item["content"]["prompt"]: item.get("annex") for item in items}
    assert set(by_prompt) == {f"current {marker} budget?", f"legacy {marker} question",
                              f"openinference {marker} ask"}, items
    current = by_prompt[f"current {marker} budget?"]
    assert current["response"] == "Five million."
    assert current["thread_id"] == f"conv-{marker}"
    assert current["app"] == app
    assert current["model"]["provider"] == "openai"
    assert current["model"]["name"] == "gpt-4o"
    assert current["attributes"]["gen_ai.system_instructions"] == "Be brief."
    # The tool is attached beside the content, which stays what the span said.
    assert current["plugins"] == [], current
    annex = annexes[f"current {marker} budget?"]
    assert [p["name"] for p in annex["plugins"]] == ["get_budget"], annex
    assert annex["principals"] == ["backend"], annex
    assert annexes[f"legacy {marker} question"] is None
    assert by_prompt[f"legacy {marker} question"]["response"] == "legacy answer"
    openinference = by_prompt[f"openinference {marker} ask"]
    assert openinference["response"] == "openinference reply"
    assert openinference["thread_id"] == f"session-{marker}"
    assert openinference["model"]["name"] == "claude-sonnet"
    return items


def test_the_sdk_exports_over_grpc(server):
    marker = uuid.uuid4().hex[:12]
    provider, tracer_ = tracer(grpc_exporter(server))
    emit_three_forms(tracer_, "grpc.user@contoso.com", marker)
    provider.shutdown()
    check_three_forms(server, "grpc.user@contoso.com", marker, "assistant-backend")
    # A token without the ingest role is refused (from its headers, before the body).
    memory = InMemorySpanExporter()
    provider, tracer_ = tracer(memory)
    with tracer_.start_as_current_span("chat") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("user.id", "grpc.user@contoso.com")
        span.set_attribute("gen_ai.input.messages", f"refused {marker}")
    refused = GrpcSpanExporter(endpoint=server.grpc_addr, insecure=True,
                               headers={"authorization": f"Bearer {REVIEWER_TOKEN}"})
    assert refused.export(memory.get_finished_spans()) == SpanExportResult.FAILURE
    assert grpc_exporter(server).export(memory.get_finished_spans()) == SpanExportResult.SUCCESS
    provider.shutdown()


def test_the_sdk_exports_over_http_protobuf_and_a_resent_batch_is_stored_once(server):
    marker = uuid.uuid4().hex[:12]
    exporter = http_exporter(server)

    class Keeping:
        """Exports through the real exporter and keeps what it sent, to send it again."""
        sent = []

        def export(self, spans):
            self.sent.extend(spans)
            return exporter.export(spans)

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis=0):
            return True

    keeping = Keeping()
    provider, tracer_ = tracer(keeping, service="http-backend")
    emit_three_forms(tracer_, "http.user@contoso.com", marker)
    provider.shutdown()
    check_three_forms(server, "http.user@contoso.com", marker, "http-backend")
    # OTLP retries re-send whole batches: the same spans again store nothing new.
    assert exporter.export(keeping.sent) == SpanExportResult.SUCCESS
    time.sleep(1)
    assert len(exported(server, "http.user@contoso.com", marker, 3)) == 3


def test_otlp_json_over_http_and_partial_success(server):
    marker = uuid.uuid4().hex[:12]
    start = time.time_ns()
    trace = uuid.uuid4().hex
    def span(span_id, attributes):
        return {"traceId": trace, "spanId": span_id, "name": "chat", "kind": 3,
                "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 1000),
                "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes]}
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-app"}}]},
        "scopeSpans": [{"spans": [
            span("0000000000000001", [("gen_ai.operation.name", "chat"),
                                      ("user.id", "json.user@contoso.com"),
                                      ("gen_ai.input.messages", f"json {marker} prompt"),
                                      ("gen_ai.output.messages", "json reply")]),
            span("0000000000000002", [("gen_ai.operation.name", "chat"),
                                      ("gen_ai.input.messages", "nobody's prompt")]),
            span("0000000000000003", [("http.route", "/health")]),
        ]}],
    }]}
    status, answer = http(server, "POST", "/v1/traces", INGEST_TOKEN, body)
    assert status == 200, answer
    partial = json.loads(answer)["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1, partial
    assert "user.id" in partial["errorMessage"], partial
    assert "nobody" not in partial["errorMessage"], "never the content"
    items = exported(server, "json.user@contoso.com", marker, 1)
    assert [item["content"]["prompt"] for item in items] == [f"json {marker} prompt"]
    assert items[0]["content"]["client_key"] == f"{trace}:0000000000000001"
    assert items[0]["content"]["app"] == "json-app"

    # Malformed: 400 with a google.rpc.Status, not retried by clients.
    status, answer = http(server, "POST", "/v1/traces", INGEST_TOKEN, b"{not json")
    assert status == 400, answer
    assert json.loads(answer)["code"] == 3
    # A reviewer may not ingest.
    status, _ = http(server, "POST", "/v1/traces", REVIEWER_TOKEN, body)
    assert status == 403


def otlp_json(trace, spans, token=INGEST_TOKEN):
    """An OTLP/JSON export of `spans`: (span id, start, end, attributes) of one trace."""
    return {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": trace, "spanId": span_id, "name": "span", "kind": 1,
         "startTimeUnixNano": str(start), "endTimeUnixNano": str(end),
         "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes]}
        for span_id, start, end, attributes in spans]}]}]}


def test_tool_spans_that_arrive_later_attach_even_after_a_crash(own_server):
    server = own_server
    marker = uuid.uuid4().hex[:12]
    mailbox = "late.tools@contoso.com"
    trace = uuid.uuid4().hex
    t = time.time_ns()

    def chat(span_id, end, prompt):
        return (span_id, t, end, [("gen_ai.operation.name", "chat"), ("user.id", mailbox),
                                  ("gen_ai.input.messages", f"{prompt} {marker}"),
                                  ("gen_ai.output.messages", "answer")])

    # Two inference spans arrive first: the first ended at t+100, the second at t+300.
    status, answer = http(server, "POST", "/v1/traces", INGEST_TOKEN,
                          otlp_json(trace, [chat("00000000000000a1", t + 100, "first"),
                                            chat("00000000000000a2", t + 300, "second")]))
    assert status == 200, answer
    # A crash: what is known of the trace must outlive it.
    server.kill()
    server.start()
    tools = otlp_json(trace, [
        ("00000000000000b1", t, t + 50, [("gen_ai.operation.name", "retrieval"),
                                         ("gen_ai.data_source.id", "kb-policies")]),
        ("00000000000000b2", t, t + 200, [("gen_ai.operation.name", "execute_tool"),
                                          ("gen_ai.tool.name", "search_web")]),
    ])
    # Another token's spans never attach to this token's traces.
    status, answer = http(server, "POST", "/v1/traces", OTHER_INGEST_TOKEN, otlp_json(
        trace, [("00000000000000c1", t, t + 10, [("gen_ai.operation.name", "execute_tool"),
                                                  ("gen_ai.tool.name", "intruder")])]))
    assert status == 200, answer
    status, answer = http(server, "POST", "/v1/traces", INGEST_TOKEN, tools)
    assert status == 200, answer

    def annexes():
        items = exported(server, mailbox, marker, 2)
        assert len(items) == 2, items
        return {item["content"]["prompt"].split()[0]: item.get("annex") for item in items}

    deadline = time.monotonic() + 30
    while (found := annexes())["second"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
    # Each inference gets what had ended by the time it ended.
    first, second = found["first"], found["second"]
    assert [r["name"] for r in first["accessed_resources"]] == ["kb-policies"], first
    assert first["plugins"] == [], first
    assert [p["name"] for p in second["plugins"]] == ["search_web"], second
    assert [r["name"] for r in second["accessed_resources"]] == ["kb-policies"], second
    # Resending changes nothing.
    status, answer = http(server, "POST", "/v1/traces", INGEST_TOKEN, tools)
    assert status == 200, answer
    assert annexes() == found
    # The attached names are searchable.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        hits = exported(server, mailbox, f"{marker} AND plugin:search_web", 0)
        if len(hits) == 1:
            break
        time.sleep(0.2)
    assert [item["content"]["prompt"] for item in hits] == [f"second {marker}"]


def test_holdfast_otel_puts_the_user_and_conversation_on_every_span(server):
    import holdfast.otel

    marker = uuid.uuid4().hex[:12]
    mailbox = "helper.user@contoso.com"
    provider = holdfast.otel.init(endpoint=f"{server.http_addr}/v1/traces", token=INGEST_TOKEN,
                                  service_name="otel-helper", set_global=False)
    tracer_ = provider.get_tracer("holdfast-tests")
    with holdfast.otel.interaction(user_id=mailbox, conversation_id=f"conv-{marker}"):
        with tracer_.start_as_current_span("chat") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.input.messages", f"helper {marker} prompt")
            span.set_attribute("gen_ai.output.messages", "helper reply")
    # Outside the block a span has no user: refused, so nothing lands for it.
    with tracer_.start_as_current_span("chat") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.input.messages", f"helper {marker} orphan")
    provider.shutdown()  # flushes the batch processor
    items = exported(server, mailbox, marker, 1)
    assert [item["content"]["prompt"] for item in items] == [f"helper {marker} prompt"]
    assert items[0]["content"]["thread_id"] == f"conv-{marker}"
    assert items[0]["content"]["app"] == "otel-helper"
