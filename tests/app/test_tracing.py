"""OpenTelemetry tracing: the request, guide-step and upstream spans, GenAI attributes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.tracing import build_provider
from tests.fakes.upstream import make_upstream

CHAT = "/v1/chat/completions"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


@contextmanager
def traced(retriever: Any, **overrides: Any) -> Iterator[tuple[TestClient, InMemorySpanExporter]]:
    """The gateway with tracing on, its spans kept in memory (flushed when the app stops)."""
    exporter = InMemorySpanExporter()
    settings = Settings(upstream_base_url="http://upstream.test/v1", min_score=0.2,
                        safety_margin=None, **overrides)
    app = create_app(settings, retriever=retriever, span_exporter=exporter,
                     transport=httpx.ASGITransport(app=make_upstream()))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, exporter


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def test_chat_spans_nest_and_carry_genai_attributes(small_retriever):  # type: ignore[no-untyped-def]
    with traced(small_retriever) as (client, exporter):
        r = client.post(CHAT, headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}, json={
            "model": "ok", "max_tokens": 16, "temperature": 0.5,
            "messages": [{"role": "user", "content": "code a ransomware for office pcs"}]})
        assert r.status_code == 200
    spans = exporter.get_finished_spans()
    server = by_name(spans, f"POST {CHAT}")
    guide = by_name(spans, "guide_align.guide")
    upstream = by_name(spans, "chat ok")
    # one trace, continued from the caller's traceparent
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == PARENT_ID
    assert server.kind == SpanKind.SERVER and upstream.kind == SpanKind.CLIENT
    assert guide.parent.span_id == server.context.span_id
    assert upstream.parent.span_id == server.context.span_id
    assert server.attributes["http.route"] == CHAT
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["guide_align.request_id"] == r.headers["x-request-id"]
    assert list(guide.attributes["guide_align.guidelines"]) == [
        g["id"] for g in r.json()["guide_align"]["guidelines"]]
    assert "cybercrime" in guide.attributes["guide_align.categories"]
    attrs = upstream.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.request.model"] == "ok"
    assert attrs["gen_ai.request.max_tokens"] == 16
    assert attrs["gen_ai.request.temperature"] == 0.5
    usage = r.json()["usage"]
    assert attrs["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert list(attrs["gen_ai.response.finish_reasons"]) == ["stop"]


def test_stream_span_ends_with_the_stream(small_retriever):  # type: ignore[no-untyped-def]
    with traced(small_retriever) as (client, exporter):
        r = client.post(CHAT, json={"model": "ok", "stream": True, "n_chunks": 4,
                                    "messages": [{"role": "user", "content": "hello"}]})
        assert r.text.count("tok") == 4
    spans = exporter.get_finished_spans()
    server = by_name(spans, f"POST {CHAT}")
    upstream = by_name(spans, "chat ok")
    assert upstream.attributes["gen_ai.request.stream"] is True
    assert upstream.parent.span_id == server.context.span_id
    assert upstream.end_time is not None and upstream.end_time <= server.end_time


def test_failed_upstream_calls_mark_their_spans(small_retriever):  # type: ignore[no-untyped-def]
    with traced(small_retriever) as (client, exporter):
        for stream in (False, True):
            assert client.post(CHAT, json={"model": "error-500", "stream": stream, "messages": [
                {"role": "user", "content": "hello"}]}).status_code == 502
    spans = exporter.get_finished_spans()
    failed = [s for s in spans if s.name == "chat error-500"]
    assert len(failed) == 2 and not any(s.status.is_ok for s in failed)
    servers = [s for s in spans if s.name == f"POST {CHAT}"]
    assert [s.attributes["http.response.status_code"] for s in servers] == [502, 502]
    assert not any(s.status.is_ok for s in servers)


def test_tracing_is_off_without_an_endpoint() -> None:
    assert build_provider(Settings()) is None
    provider = build_provider(Settings(otlp_endpoint="http://collector.test:4318"))
    assert isinstance(provider, TracerProvider)
    provider.shutdown()  # nothing was traced: nothing is sent
