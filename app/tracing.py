"""OpenTelemetry tracing, on when ``otlp_endpoint`` is set: spans for the request, the guide
step and the upstream call, with GenAI semantic-convention attributes."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, Tracer

SERVICE = "guide-align-gateway"
# GenAI semantic conventions (https://opentelemetry.io/docs/specs/semconv/gen-ai/)
GENAI_SYSTEM = "openai"  # the upstream speaks the OpenAI API


def build_provider(settings: Any, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """A tracer provider exporting in batches over OTLP/HTTP to ``settings.otlp_endpoint``
    (``exporter`` replaces the OTLP one); None when tracing is off."""
    if exporter is None:
        if not settings.otlp_endpoint:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        exporter = OTLPSpanExporter(endpoint=endpoint)
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def tracer_of(provider: TracerProvider | None) -> Tracer:
    """The gateway's tracer (a no-op one when tracing is off)."""
    if provider is None:
        return trace.NoOpTracer()
    return provider.get_tracer("guide_align")


def request_attributes(span: Span, body: dict[str, Any]) -> None:
    """GenAI request attributes of a chat completion call."""
    if not span.is_recording():
        return
    span.set_attribute("gen_ai.operation.name", "chat")
    span.set_attribute("gen_ai.system", GENAI_SYSTEM)
    if isinstance(body.get("model"), str):
        span.set_attribute("gen_ai.request.model", body["model"])
    for key, attr in (("max_tokens", "gen_ai.request.max_tokens"),
                      ("temperature", "gen_ai.request.temperature"),
                      ("top_p", "gen_ai.request.top_p")):
        if isinstance(body.get(key), int | float) and not isinstance(body.get(key), bool):
            span.set_attribute(attr, body[key])
    span.set_attribute("gen_ai.request.stream", bool(body.get("stream")))


def response_attributes(span: Span, answer: dict[str, Any]) -> None:
    """GenAI response attributes from a completion or a stream chunk (usage, model, reasons)."""
    if not span.is_recording():
        return
    if isinstance(answer.get("model"), str):
        span.set_attribute("gen_ai.response.model", answer["model"])
    if isinstance(answer.get("id"), str):
        span.set_attribute("gen_ai.response.id", answer["id"])
    usage = answer.get("usage")
    if isinstance(usage, dict):
        for key, attr in (("prompt_tokens", "gen_ai.usage.input_tokens"),
                          ("completion_tokens", "gen_ai.usage.output_tokens")):
            if isinstance(usage.get(key), int):
                span.set_attribute(attr, usage[key])
    choices = answer.get("choices")
    if isinstance(choices, list):
        reasons = [c["finish_reason"] for c in choices
                   if isinstance(c, dict) and isinstance(c.get("finish_reason"), str)]
        if reasons:
            span.set_attribute("gen_ai.response.finish_reasons", reasons)
