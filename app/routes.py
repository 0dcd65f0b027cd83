"""HTTP routes: thin handlers over the gateway logic."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

import anyio.to_thread
import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from app.backtrack import BacktrackConfig, Source, guard_answer, guard_stream
from app.config import Settings
from app.critic import BatchingCritic
from app.errors import (
    BadRequest,
    GatewayError,
    NotReady,
    PayloadTooLarge,
    UnprocessableEntity,
    UpstreamClientError,
)
from app.gateway import guidance_headers
from app.protocol import (
    ChatCompletionRequest,
    JudgementRequest,
    ModerationRequest,
    SearchRequest,
)
from app.upstream import Upstream, relay_sse, relayed_headers
from guide.backtrack import Marker, strengthened_block
from guide.batching import BatchingGuide
from guide.judging import assess_batch, judge_batch
from guide.options import Applied, GuideOptions, apply_options
from guide.step import Guidance, latest_user_text
from guideline_lib.taxonomy import openai_scores

router = APIRouter()
M = TypeVar("M", bound=BaseModel)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json",
                    headers=headers)


async def _read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, refusing bodies over ``limit`` bytes before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


def _parse(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise UnprocessableEntity(f"{loc}: {err['msg']}", param=loc) from None


def _state(request: Request) -> tuple[Settings, Upstream, BatchingGuide]:
    st = request.app.state
    if getattr(st, "guide", None) is None:
        raise NotReady("the retriever is not loaded")
    return st.settings, st.upstream, st.guide


def _applied(request: Request, options: GuideOptions | None) -> Applied:
    """The deployment policy, tightened by a request's options."""
    return apply_options(request.app.state.policy, options,
                         allow_loosen=request.app.state.settings.allow_loosen)


async def _guide(request: Request, messages: list[dict[str, Any]],
                 options: GuideOptions | None) -> Guidance:
    """The guide step for one request: the deployment policy, tightened by its options."""
    return await _state(request)[2].guide(messages, _applied(request, options))


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    """OpenAI chat completions with retrieved guidelines injected, answers under backtracking."""
    settings, upstream, guider = _state(request)
    data = await _read_json(request, settings.max_body_bytes)
    if isinstance(data, dict) and isinstance(data.get("messages"), list) and not data["messages"]:
        raise BadRequest("messages must contain at least one message", param="messages")
    parsed = _parse(ChatCompletionRequest, data)
    applied = _applied(request, parsed.guide_align)
    guidance = await guider.guide(data["messages"], applied)
    body = {k: v for k, v in data.items() if k != "guide_align"}
    body["messages"] = guidance.messages
    if "stream" in body:
        body["stream"] = bool(parsed.stream)  # null (or a lax "true") as the upstream expects
    auth = request.headers.get("authorization")
    headers = guidance_headers(guidance)
    state, config = _backtrack(request, applied, body)
    headers["x-guide-align-backtrack"] = state
    critic: BatchingCritic | None = request.app.state.critic

    async def strengthen(categories: Sequence[str]) -> str:
        return await anyio.to_thread.run_sync(lambda: strengthened_block(
            data["messages"], categories, guider.retriever, window=settings.window))

    if not parsed.stream:
        relayed: dict[str, str] = {}
        answer = await upstream.chat(body, auth=auth, headers_out=relayed)
        field = guidance.body_field()
        if config is not None and critic is not None:
            report = await guard_answer(
                answer, conversation=data["messages"], guided=guidance.messages,
                judge=critic.judge, strengthen=strengthen, config=config,
                regenerate=lambda msgs: upstream.chat({**body, "messages": msgs}, auth=auth))
            headers["x-guide-align-backtrack"] = report.header()
            field["backtrack"] = report.as_dict()
        answer["guide_align"] = field
        return _json(answer, headers={**relayed, **headers})
    resp = await upstream.open_stream(body, auth=auth)
    try:
        stream = relay_sse(resp)
        if config is not None and critic is not None:

            async def reopen(messages: list[dict[str, Any]]) -> Source:
                more = await upstream.open_stream({**body, "messages": messages}, auth=auth)
                return Source(relay_sse(more), more.aclose)

            stream = guard_stream(Source(stream, resp.aclose), conversation=data["messages"],
                                  guided=guidance.messages, judge=critic.judge, reopen=reopen,
                                  strengthen=strengthen, config=config)
        # relay_sse closes the upstream response when it ends; the background task closes it
        # too if the body is never iterated (closing twice is harmless).
        return StreamingResponse(
            stream, media_type="text/event-stream",
            headers={**relayed_headers(resp), **headers, "cache-control": "no-cache",
                     "x-accel-buffering": "no"},
            background=BackgroundTask(resp.aclose),
        )
    except BaseException:
        await resp.aclose()  # otherwise the pooled connection is never given back
        raise


def _backtrack(request: Request, applied: Applied, body: dict[str, Any]
               ) -> tuple[str, BacktrackConfig | None]:
    """This request's backtracking: the state for ``x-guide-align-backtrack`` (off, monitor,
    enforce, or unavailable without a judge, unsupported for several choices) and its config."""
    policy = applied.policy
    if policy.backtrack == "off":
        return "off", None
    if request.app.state.critic is None:
        return "unavailable", None
    if body.get("n") not in (None, 1):
        return "unsupported", None
    s: Settings = request.app.state.settings
    return policy.backtrack, BacktrackConfig(
        mode=policy.backtrack, window=policy.backtrack_window, every=s.backtrack_every,
        threshold=s.backtrack_threshold, max_retractions=policy.backtrack_max_retractions,
        continuation=s.backtrack_continuation,
        marker=Marker(s.backtrack_marker) if s.backtrack_marker else None,
        log_retracted=s.backtrack_log_retracted)


@router.post("/v1/guidelines/search")
async def search_guidelines(request: Request) -> Response:
    """The guidelines a chat request with these messages would get, with scores; no LLM call."""
    settings, _, _ = _state(request)
    parsed = _parse(SearchRequest, await _read_json(request, settings.max_body_bytes))
    messages = ([{"role": "user", "content": parsed.input}] if isinstance(parsed.input, str)
                else [m.model_dump() for m in parsed.input])
    if not latest_user_text(messages):
        raise BadRequest("input has no user text to search for", param="input")
    guidance = await _guide(request, messages, parsed.options())
    body: dict[str, Any] = {"object": "list", "data": [h.as_dict() for h in guidance.hits],
                            "views": list(guidance.views)}
    body |= {k: v for k, v in guidance.body_field().items() if k in ("risk", "ignored")}
    return _json(body, headers=guidance_headers(guidance))


def _judge(request: Request) -> Any:
    guider = _state(request)[2]
    if guider.judge is None:
        raise NotReady("no judge is loaded (the risk gate is off); run `guide-align prepare`")
    return guider


@router.post("/v1/moderations")
async def moderations(request: Request) -> Response:
    """OpenAI-compatible moderation by the prompt-risk judge: taxonomy ids as categories, plus
    OpenAI's own category names where a taxonomy category maps onto them."""
    settings = request.app.state.settings
    guider = _judge(request)
    parsed = _parse(ModerationRequest, await _read_json(request, settings.max_body_bytes))
    texts = _moderation_texts(parsed.input)
    configured = request.app.state.policy.risk_threshold
    threshold = configured if configured is not None else guider.judge.threshold
    risks = await anyio.to_thread.run_sync(
        lambda: assess_batch([[{"role": "user", "content": t}] for t in texts],
                             guider.retriever, guider.judge, window=settings.window))
    results = []
    for risk in risks:
        flagged = risk.score >= threshold
        scores = {c: round(v, 4) for c, v in risk.categories.items()}
        scores |= {n: round(v, 4) for n, v in openai_scores(risk.categories).items()}
        results.append({
            "flagged": flagged,
            "categories": {n: flagged and v >= 0.5 for n, v in scores.items()},
            "category_scores": scores,
            "category_applied_input_types": {n: ["text"] for n in scores},
            "risk": round(risk.score, 4),
        })
    return _json({"id": f"modr-{uuid.uuid4().hex[:24]}", "model": parsed.model or
                  "guide-align-judge", "results": results})


def _moderation_texts(value: str | list[str] | list[dict[str, Any]]) -> list[str]:
    if isinstance(value, str):
        items: list[Any] = [value]
    else:
        items = list(value)
    if not items:
        raise BadRequest("input must not be empty", param="input")
    texts = []
    for n, item in enumerate(items):
        if isinstance(item, dict):
            if item.get("type") != "text" or not isinstance(item.get("text"), str):
                raise BadRequest(f"input[{n}]: only text parts can be moderated", param="input")
            item = item["text"]
        texts.append(item)
    return texts


@router.post("/v1/judgements")
async def judgements(request: Request) -> Response:
    """The response judge on a conversation ending with the assistant answer to judge."""
    settings = request.app.state.settings
    guider = _judge(request)
    parsed = _parse(JudgementRequest, await _read_json(request, settings.max_body_bytes))
    messages = [m.model_dump() for m in parsed.messages]
    last = messages[-1]
    if last.get("role") != "assistant" or not isinstance(last.get("content"), str | list):
        raise UnprocessableEntity("the last message must be the assistant answer to judge",
                                  param="messages")
    if not latest_user_text(messages[:-1]):
        raise UnprocessableEntity("messages need a user turn before the answer",
                                  param="messages")
    answer = last["content"] if isinstance(last["content"], str) else " ".join(
        p.get("text", "") for p in last["content"] if isinstance(p, dict))
    verdict = (await anyio.to_thread.run_sync(
        lambda: judge_batch([messages[:-1]], [answer], guider.retriever, guider.judge)))[0]
    return _json({"object": "judgement", "label": verdict.label,
                  "scores": {k: round(v, 4) for k, v in verdict.scores.items()},
                  "categories": {k: round(v, 4) for k, v in sorted(
                      verdict.categories.items(), key=lambda kv: -kv[1])[:5]}})


@router.get("/v1/models")
async def models(request: Request) -> Response:
    """The upstream's model list."""
    upstream: Upstream = request.app.state.upstream
    return _json(await upstream.get_json("/models", auth=request.headers.get("authorization")))


@router.get("/healthz")
async def healthz() -> Response:
    """The process is up."""
    return _json({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """Ready when the index is loaded and the upstream answers."""
    st = request.app.state
    checks: dict[str, Any] = {"index": getattr(st, "guide", None) is not None}
    try:
        await st.upstream.get_json("/models", timeout=st.settings.ready_timeout)
        checks["upstream"] = True
    except UpstreamClientError as exc:
        # Probed without credentials: a 401/403 (or any 4xx) is a live server that wants the
        # client's key. With a configured key, get_json already turned a refusal into a 502.
        checks["upstream"] = True
        checks["upstream_status"] = exc.status
    except GatewayError as exc:
        checks["upstream"] = False
        checks["upstream_error"] = exc.message
    ok = checks["index"] and checks["upstream"]
    if ok:
        checks["guidelines"] = st.guide.retriever.size
    return _json({"status": "ready" if ok else "not_ready", "checks": checks},
                 status=200 if ok else 503)
