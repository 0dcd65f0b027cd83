"""Request observability: the ASGI middleware (request id, timing, metrics, access log, request
span), ``GET /metrics``, and the hooks the chat route calls for the guide step and upstream."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import require_admin
from app.backtrack import Report
from app.logging_setup import request_id_var
from app.metrics import Metrics
from app.tracing import request_attributes, response_attributes, tracer_of
from app.upstream import sse_events
from guide.step import Guidance

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("guide_align.access")
router = APIRouter()

REQUEST_ID_HEADER = "x-request-id"
# A client's request id is kept when it is short and plain; otherwise a new one is made.
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_SCOPE_KEY = "guide_align.request"
_MAX_ERROR_BODY = 8192


@dataclass
class RequestInfo:
    """What the middleware learns about one request while it is served."""

    request_id: str
    route: str = "unmatched"
    status: int = 0
    model: str = ""
    prompt: str | None = None
    error_body: bytearray = field(default_factory=bytearray)
    upstream_span: Span | None = None


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _SANE_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


def _route(app: Any, scope: Scope) -> str:
    """The matched route's template path (never the raw URL), or "unmatched": the route the
    router recorded in the scope, else (a middleware answered first, e.g. a 429) the route
    that would have served it."""
    route = scope.get("route")
    if route is None:
        found: dict[Match, Any] = {}
        for candidate in getattr(app, "routes", ()):
            match, child = candidate.matches({**scope, "route": None})
            if match != Match.NONE:
                found.setdefault(match, child.get("route") or candidate)
        route = found.get(Match.FULL) or found.get(Match.PARTIAL)
    return str(getattr(route, "path", None) or "unmatched")


def _error_code(body: bytes) -> str:
    try:
        code = orjson.loads(body)["error"]["code"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "unknown"
    return str(code)[:64] if code is not None else "unknown"


class ObservabilityMiddleware:
    """Pure ASGI (streams and cancellation pass straight through): request id in and out,
    latency to the end of the body, request metrics, the access log line and the request span."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = getattr(scope.get("app"), "state", None)
        metrics: Metrics | None = getattr(state, "metrics", None)
        settings = getattr(state, "settings", None)
        info = RequestInfo(request_id=_request_id(scope))
        scope[_SCOPE_KEY] = info
        id_token = request_id_var.set(info.request_id)
        method = scope["method"]
        tracer = getattr(state, "tracer", None) or tracer_of(None)
        parent = None  # a caller's traceparent, read only when tracing is on
        if not isinstance(tracer, trace.NoOpTracer):
            parent = extract({k.decode("latin-1"): v.decode("latin-1")
                              for k, v in scope["headers"]})
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                info.status = message["status"]
                headers = MutableHeaders(scope=message)
                if REQUEST_ID_HEADER not in headers:
                    headers.append(REQUEST_ID_HEADER, info.request_id)
            elif (message["type"] == "http.response.body" and info.status == 429
                  and len(info.error_body) < _MAX_ERROR_BODY):
                info.error_body += message.get("body", b"")[:_MAX_ERROR_BODY]
            await send(message)

        with tracer.start_as_current_span(method, context=parent,
                                          kind=SpanKind.SERVER) as span:
            try:
                await self.app(scope, receive, send_wrapper)
            except BaseException:
                if not info.status:
                    info.status = 500
                raise
            finally:
                seconds = time.perf_counter() - started
                info.route = _route(scope.get("app"), scope)
                _end_upstream_span(info)
                if span.is_recording():
                    span.update_name(f"{method} {info.route}")
                    span.set_attribute("http.request.method", method)
                    span.set_attribute("http.route", info.route)
                    span.set_attribute("url.path", scope["path"])
                    span.set_attribute("http.response.status_code", info.status)
                    span.set_attribute("guide_align.request_id", info.request_id)
                    if info.status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                if metrics is not None:
                    _record(metrics, method, info, seconds)
                extra: dict[str, Any] = {"method": method, "route": info.route,
                                         "status": info.status,
                                         "latency_ms": round(seconds * 1000, 2)}
                if info.model:
                    extra["model"] = info.model
                if info.prompt is not None and getattr(settings, "log_prompts", False):
                    extra["prompt"] = info.prompt
                log.info("%s %s %d", method, scope["path"], info.status, extra=extra)
                request_id_var.reset(id_token)


def _record(metrics: Metrics, method: str, info: RequestInfo, seconds: float) -> None:
    status = str(info.status)
    model = metrics.model_label(info.model)
    metrics.requests.labels(method, info.route, status, model).inc()
    metrics.request_seconds.labels(method, info.route, status, model).observe(seconds)
    if info.status == 429:
        metrics.rate_limited.labels(_error_code(bytes(info.error_body))).inc()


def _info(request: Request) -> RequestInfo | None:
    info = request.scope.get(_SCOPE_KEY)
    return info if isinstance(info, RequestInfo) else None


def _metrics(request: Request) -> Metrics | None:
    return getattr(request.app.state, "metrics", None)


def _tracer(request: Request) -> trace.Tracer:
    return getattr(request.app.state, "tracer", None) or tracer_of(None)


def annotate(request: Request, *, model: object = None, prompt: str | None = None) -> None:
    """Tell the middleware the request's model (a metrics label) and its latest user text
    (logged only when ``log_prompts`` is set)."""
    info = _info(request)
    if info is None:
        return
    if isinstance(model, str):
        info.model = model
    if prompt is not None:
        info.prompt = prompt


async def observe_guide(request: Request, pending: Awaitable[Guidance], *,
                        injected: bool = True) -> Guidance:
    """Await the guide step inside its span; record its latency, the gate's decision and (for
    chat requests) the guidelines injected."""
    with _tracer(request).start_as_current_span("guide_align.guide") as span:
        started = time.perf_counter()
        guidance = await pending
        seconds = time.perf_counter() - started
        if span.is_recording():
            span.set_attribute("guide_align.guidelines", [h.id for h in guidance.hits])
            span.set_attribute("guide_align.categories",
                               list(dict.fromkeys(h.category for h in guidance.hits)))
            span.set_attribute("guide_align.gate", guidance.gate)
            if guidance.risk is not None:
                span.set_attribute("guide_align.risk", guidance.risk.score)
    metrics = _metrics(request)
    if metrics is not None:
        metrics.guide_seconds.observe(seconds)
        metrics.gate.labels(guidance.gate).inc()
        if injected:
            for hit in guidance.hits:
                metrics.injected.labels(hit.category, hit.kind).inc()
    return guidance


def _upstream_span(request: Request, body: dict[str, Any]) -> Span:
    model = body.get("model") if isinstance(body.get("model"), str) else ""
    span = _tracer(request).start_span(f"chat {model}".strip(), kind=SpanKind.CLIENT)
    request_attributes(span, body)
    return span


async def traced_chat(request: Request, body: dict[str, Any],
                      pending: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Await a non-streaming upstream call inside its GenAI span."""
    span = _upstream_span(request, body)
    with trace.use_span(span, end_on_exit=True, record_exception=True,
                        set_status_on_exception=True):
        answer = await pending
        response_attributes(span, answer)
    return answer


async def traced_open(request: Request, body: dict[str, Any], pending: Awaitable[Any]) -> Any:
    """Await the opening of an upstream stream inside its GenAI span, which stays open until
    the stream ends (``observed_stream``) or the request does."""
    span = _upstream_span(request, body)
    try:
        with trace.use_span(span, end_on_exit=False, record_exception=True,
                            set_status_on_exception=True):
            resp = await pending
    except BaseException:
        span.end()
        raise
    info = _info(request)
    if info is not None:
        info.upstream_span = span
    else:
        span.end()
    return resp


def _end_upstream_span(info: RequestInfo) -> None:
    if info.upstream_span is not None:
        info.upstream_span.end()
        info.upstream_span = None


async def observed_stream(request: Request, stream: AsyncIterator[bytes],
                          report: Report | None = None) -> AsyncIterator[bytes]:
    """Relay ``stream``; at its end, close the upstream span with the usage seen and count
    backtracking's retractions."""
    info = _info(request)
    span = info.upstream_span if info is not None else None
    try:
        async for event in stream:
            if span is not None and span.is_recording() and (b'"usage"' in event
                                                             or b'"finish_reason"' in event):
                _stream_attributes(span, event)
            yield event
    finally:
        if report is not None:
            record_backtrack(request, report)
        if info is not None:
            _end_upstream_span(info)


def _stream_attributes(span: Span, event: bytes) -> None:
    for data in sse_events(event):
        response_attributes(span, data)


def record_backtrack(request: Request, report: Report) -> None:
    """Count the retractions of one answer: the critic's and the upstream's own markers."""
    metrics = _metrics(request)
    if metrics is None:
        return
    if report.retractions:
        metrics.retractions.labels(report.mode, "critic").inc(report.retractions)
    if report.markers:
        metrics.retractions.labels(report.mode, "marker").inc(report.markers)


@router.get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    """Prometheus exposition; behind the admin key when ``metrics_require_admin`` is set."""
    if request.app.state.settings.metrics_require_admin:
        require_admin(request)
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)


def worker_app() -> FastAPI:
    """The app factory of each uvicorn worker (``serve --workers N``): logging as configured,
    then the gateway."""
    from app.logging_setup import configure_logging
    from app.main import create_app, get_settings

    settings = get_settings()
    configure_logging(settings)
    return create_app(settings)
