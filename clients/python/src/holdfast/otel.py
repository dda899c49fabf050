"""Send OpenTelemetry GenAI traces to holdfast (the `otel` extra).

    import holdfast.otel
    holdfast.otel.init(service_name="contoso-chat")      # OTLP/HTTP to holdfast, with the token
    with holdfast.otel.interaction(user_id="alice@contoso.com", conversation_id=chat.id):
        answer = llm.chat(...)                           # instrumented spans carry both ids

Every span started inside `interaction(...)` gets `user.id` and `gen_ai.conversation.id`,
which is how holdfast knows whose mailbox an inference belongs in and which thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Iterator, Optional

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from holdfast.client import _env_token

DEFAULT_ENDPOINT = "http://127.0.0.1:8080/v1/traces"

_user: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("holdfast_user", default=None)
_conversation: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "holdfast_conversation", default=None)


class InteractionAttributes(SpanProcessor):
    """Puts the current `interaction(...)`'s user and conversation on every span it starts."""

    def on_start(self, span, parent_context=None) -> None:
        user = _user.get()
        if user:
            span.set_attribute("user.id", user)
        conversation = _conversation.get()
        if conversation:
            span.set_attribute("gen_ai.conversation.id", conversation)


@contextlib.contextmanager
def interaction(user_id: str, conversation_id: Optional[str] = None) -> Iterator[None]:
    """Within this block, spans carry `user.id` (and `gen_ai.conversation.id`)."""
    user_token = _user.set(user_id)
    conversation_token = _conversation.set(conversation_id)
    try:
        yield
    finally:
        _conversation.reset(conversation_token)
        _user.reset(user_token)


def init(endpoint: Optional[str] = None, token: Optional[str] = None, *,
         service_name: Optional[str] = None, capture_content: bool = True,
         set_global: bool = True, exporter=None) -> TracerProvider:
    """A tracer provider that exports to holdfast's OTLP/HTTP endpoint (`endpoint`, else
    `HOLDFAST_OTLP_ENDPOINT`, else http://127.0.0.1:8080/v1/traces) with an ingest token
    (`token`, else `HOLDFAST_TOKEN` / `HOLDFAST_TOKEN_FILE`). `capture_content` turns on the
    GenAI instrumentations' prompt and response capture (without it holdfast has only
    metadata). Installed as the global provider unless `set_global=False`."""
    if capture_content:
        os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    if exporter is None:
        token = token or _env_token()
        if not token:
            raise ValueError("no token: pass token= or set HOLDFAST_TOKEN or HOLDFAST_TOKEN_FILE")
        exporter = OTLPSpanExporter(
            endpoint=endpoint or os.environ.get("HOLDFAST_OTLP_ENDPOINT") or DEFAULT_ENDPOINT,
            headers={"Authorization": f"Bearer {token}"},
        )
    attributes = {"service.name": service_name} if service_name else {}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(InteractionAttributes())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider
