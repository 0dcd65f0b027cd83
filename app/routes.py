"""HTTP routes: thin handlers over the gateway logic."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

import anyio.to_thread
import orjson
from fastapi import APIRouter, Request
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from app.backtrack import BacktrackConfig, Judge, Report, Source, guard_answer, guard_stream
from app.config import Settings
from app.critic import BatchingCritic
from app.errors import (
    BadRequest,
    GatewayError,
    NotReady,
    UnprocessableEntity,
    UpstreamClientError,
)
from app.gateway import guidance_headers
from app.guard import Guard
from app.keys import caller_of
from app.limits import charge_answer, metered, prompt_chars
from app.observability import (
    annotate,
    observe_guide,
    observed_stream,
    record_backtrack,
    traced_chat,
    traced_open,
)
from app.protocol import (
    ChatCompletionRequest,
    JudgementRequest,
    ModerationPart,
    ModerationRequest,
    SearchRequest,
)
from app.refiner import Refinement, refine_request
from app.refiner import record as record_refinement
from app.reload import current
from app.requests import check_generation, check_messages, json_body, parse, read_json
from app.training import artifacts_mode
from app.upstream import Upstream, relayed_headers, until_disconnected
from guide.backtrack import Marker, strengthened_block
from guide.batching import BatchingGuide
from guide.judging import assess_batch, judge_batch
from guide.options import Applied, GuideOptions
from guide.step import Guidance, latest_user_text
from guideline_lib.taxonomy import openai_scores

router = APIRouter()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json",
                    headers=headers)


def _state(request: Request) -> tuple[Settings, Upstream, BatchingGuide]:
    gen = current(request)  # the generation this request pinned (app/reload.py)
    return gen.settings, request.app.state.upstream, gen.guide


def _applied(request: Request, options: GuideOptions | None) -> Applied:
    """The deployment policy, tightened by a request's options."""
    gen = current(request)  # the caller's key policy overrides the deployment's (app/keys.py)
    return caller_of(request.state).applied(gen.policy, options,
                                            allow_loosen=gen.settings.allow_loosen)


async def _guide(request: Request, messages: list[dict[str, Any]],
                 options: GuideOptions | None) -> Guidance:
    """The guide step for one request: the deployment policy, tightened by its options."""
    return await observe_guide(request, _state(request)[2].guide(
        messages, _applied(request, options)), injected=False)


@router.post("/v1/chat/completions", openapi_extra=json_body(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    """OpenAI chat completions with retrieved guidelines injected, answers under backtracking."""
    settings, upstream, guider = _state(request)
    data = await read_json(request, settings)
    if isinstance(data, dict) and isinstance(data.get("messages"), list) and not data["messages"]:
        raise BadRequest("messages must contain at least one message", param="messages")
    parsed = parse(ChatCompletionRequest, data)
    check_messages(parsed.messages, settings)
    check_generation(data, settings)
    caller_of(request.state).check_model(parsed.model)
    applied = _applied(request, parsed.guide_align)
    annotate(request, model=parsed.model, prompt=latest_user_text(data["messages"]))
    refinement = await _refine(request, data, applied)  # docs/refinement.md
    guidance = await observe_guide(request, guider.guide(
        refinement.upstream, applied, query=refinement.retrieval))
    body = {k: v for k, v in data.items() if k != "guide_align"}
    body["messages"] = guidance.messages
    if "stream" in body:
        body["stream"] = bool(parsed.stream)  # null (or a lax "true") as the upstream expects
    auth = caller_of(request.state).upstream_auth(settings, request.headers)
    headers = guidance_headers(guidance)
    if refinement.mode != "off":
        headers["x-guide-align-refine"] = refinement.header()
    state, config = _backtrack(request, applied, body)
    headers["x-guide-align-backtrack"] = state
    critic: BatchingCritic | None = current(request).critic
    judge = _critic_judge(request, critic)

    async def strengthen(categories: Sequence[str]) -> str:
        return await anyio.to_thread.run_sync(lambda: strengthened_block(
            data["messages"], categories, guider.retriever, window=settings.window))

    if not parsed.stream:
        relayed: dict[str, str] = {}
        # a client that goes away cancels the upstream call (until_disconnected)
        answer = await until_disconnected(
            request.receive, traced_chat(request, body,
                                         upstream.chat(body, auth=auth, headers_out=relayed)))
        charge_answer(request.state, answer, guidance.messages)
        field = guidance.body_field()
        if refinement.mode != "off":
            field["refine"] = refinement.body_field()
        if config is not None and judge is not None:
            report = await until_disconnected(request.receive, guard_answer(
                answer, conversation=data["messages"], guided=guidance.messages,
                judge=judge, strengthen=strengthen, config=config,
                regenerate=lambda msgs: upstream.chat({**body, "messages": msgs}, auth=auth)))
            record_backtrack(request, report)
            headers["x-guide-align-backtrack"] = report.header()
            field["backtrack"] = report.as_dict()
        answer["guide_align"] = field
        return _json(answer, headers={**relayed, **headers})
    deadline = upstream.deadline()  # TOTAL_TIMEOUT covers the whole stream, retries included
    resp = await traced_open(request, body,
                             upstream.open_stream(body, auth=auth, deadline=deadline))
    try:
        stream = upstream.relay(resp, deadline=deadline)
        guarded: Report | None = None
        if config is not None and judge is not None:

            async def reopen(messages: list[dict[str, Any]]) -> Source:
                more = await upstream.open_stream({**body, "messages": messages}, auth=auth,
                                                  deadline=deadline)
                return Source(upstream.relay(more, deadline=deadline), more.aclose)

            guarded = Report(config.mode)
            stream = guard_stream(Source(stream, resp.aclose), conversation=data["messages"],
                                  guided=guidance.messages, judge=judge, reopen=reopen,
                                  strengthen=strengthen, config=config, report=guarded)
        # relay_sse closes the upstream response when it ends; the background task closes it
        # too if the body is never iterated (closing twice is harmless).
        stream = metered(stream, request.state, prompt_chars(guidance.messages))
        stream = observed_stream(request, stream, guarded)  # span and retractions at its end
        return StreamingResponse(
            stream, media_type="text/event-stream",
            headers={**relayed_headers(resp), **headers, "cache-control": "no-cache",
                     "x-accel-buffering": "no"},
            background=BackgroundTask(resp.aclose),
        )
    except BaseException:
        await resp.aclose()  # otherwise the pooled connection is never given back
        raise


async def _refine(request: Request, data: dict[str, Any], applied: Applied) -> Refinement:
    """The refinement stage for a chat request, counted in the metrics."""
    settings, _, guider = _state(request)

    async def risk(conversation: Sequence[dict[str, Any]]) -> float | None:
        judge = guider.judge
        if judge is None:  # auto without a judge: as retrieve
            return None
        return (await anyio.to_thread.run_sync(lambda: assess_batch(
            [conversation], guider.retriever, judge, window=settings.window)))[0].score

    refinement = await refine_request(
        data["messages"], applied.policy.refine, getattr(request.app.state, "refiner", None),
        body=data, risk=risk, risk_threshold=settings.refine_risk_threshold,
        log_texts=settings.log_prompts)
    record_refinement(getattr(request.app.state, "metrics", None), refinement)
    return refinement


def _critic_judge(request: Request, critic: BatchingCritic | None) -> Judge | None:
    """The critic's judge, with the guard model's word on unsure verdicts when one is set."""
    if critic is None:
        return None
    guard: Guard | None = getattr(request.app.state, "guard", None)
    if guard is None:
        return critic.judge
    metrics = getattr(request.app.state, "metrics", None)
    return guard.escalating(critic.judge, record=None if metrics is None else
                            lambda outcome: metrics.guard.labels(outcome).inc())


def _backtrack(request: Request, applied: Applied, body: dict[str, Any]
               ) -> tuple[str, BacktrackConfig | None]:
    """This request's backtracking: the state for ``x-guide-align-backtrack`` (off, monitor,
    enforce, or unavailable without a judge, unsupported for several choices) and its config."""
    policy = applied.policy
    if policy.backtrack == "off":
        return "off", None
    if current(request).critic is None:
        return "unavailable", None
    if body.get("n") not in (None, 1):
        return "unsupported", None
    s: Settings = current(request).settings
    return policy.backtrack, BacktrackConfig(
        mode=policy.backtrack, window=policy.backtrack_window, every=s.backtrack_every,
        threshold=s.backtrack_threshold, max_retractions=policy.backtrack_max_retractions,
        continuation=s.backtrack_continuation,
        marker=Marker(s.backtrack_marker) if s.backtrack_marker else None,
        log_retracted=s.backtrack_log_retracted)


@router.post("/v1/guidelines/search", openapi_extra=json_body(SearchRequest))
async def search_guidelines(request: Request) -> Response:
    """The guidelines a chat request with these messages would get, with scores; no LLM call."""
    settings, _, _ = _state(request)
    data = await read_json(request, settings)
    parsed = parse(SearchRequest, data)
    if isinstance(parsed.input, str):
        messages = [{"role": "user", "content": parsed.input}]
    else:
        check_messages(parsed.input, settings, param="input")
        messages = data["input"]  # as a chat request would pass them to the guide step
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


@router.post("/v1/moderations", openapi_extra=json_body(ModerationRequest))
async def moderations(request: Request) -> Response:
    """OpenAI-compatible moderation by the prompt-risk judge: taxonomy ids as categories, plus
    OpenAI's own category names where a taxonomy category maps onto them."""
    gen = current(request)
    settings = gen.settings
    parsed = parse(ModerationRequest, await read_json(request, settings))
    texts = _moderation_texts(parsed.input)
    check_messages(texts, settings, param="input")
    guider = _judge(request)
    # without a gate the judge's own threshold is the policy a request may tighten
    base = gen.policy if gen.policy.risk_threshold is not None else dataclasses.replace(
        gen.policy, risk_threshold=guider.judge.threshold)
    applied = caller_of(request.state).applied(base, parsed.guide_align,
                                               allow_loosen=settings.allow_loosen)
    threshold = applied.policy.risk_threshold
    if threshold is None:  # a key policy may switch the gate off
        threshold = guider.judge.threshold
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
    field: dict[str, Any] = {"risk_threshold": round(threshold, 4)}
    headers = {}
    if applied.ignored:
        field["ignored"] = list(applied.ignored)
        headers["x-guide-align-ignored"] = ",".join(applied.ignored)
    return _json({"id": f"modr-{uuid.uuid4().hex[:24]}", "model": parsed.model or
                  "guide-align-judge", "results": results, "guide_align": field},
                 headers=headers)


def _moderation_texts(value: str | list[str] | list[ModerationPart]) -> list[str]:
    if isinstance(value, str):
        items: list[Any] = [value]
    else:
        items = list(value)
    if not items:
        raise BadRequest("input must not be empty", param="input")
    texts = []
    for n, item in enumerate(items):
        if isinstance(item, ModerationPart):
            if item.type != "text" or item.text is None:
                raise BadRequest(f"input[{n}]: only text parts can be moderated", param="input")
            item = item.text
        texts.append(item)
    return texts


@router.post("/v1/judgements", openapi_extra=json_body(JudgementRequest))
async def judgements(request: Request) -> Response:
    """The response judge on a conversation ending with the assistant answer to judge."""
    settings = current(request).settings
    data = await read_json(request, settings)
    parsed = parse(JudgementRequest, data)
    check_messages(parsed.messages, settings)
    if "guide_align" in data:  # nothing here depends on the guidance policy
        raise UnprocessableEntity("judgements take no guide_align options", param="guide_align")
    guider = _judge(request)
    messages: list[dict[str, Any]] = data["messages"]
    last = messages[-1]
    if last.get("role") != "assistant" or not isinstance(last.get("content"), str | list):
        raise UnprocessableEntity("the last message must be the assistant answer to judge",
                                  param="messages")
    if not latest_user_text(messages[:-1]):
        raise UnprocessableEntity("messages need a user turn before the answer",
                                  param="messages")
    content = parsed.messages[-1].content  # validated: a string or typed parts
    answer = content if isinstance(content, str) else " ".join(
        p.text for p in content or () if p.type == "text" and p.text)
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
    caller = caller_of(request.state)
    listed = await upstream.get_json(
        "/models", auth=caller.upstream_auth(request.app.state.settings, request.headers))
    if caller.policy.models and isinstance(listed, dict) and isinstance(listed.get("data"), list):
        listed["data"] = [m for m in listed["data"]  # only the models this key may use
                          if isinstance(m, dict) and caller.policy.allows(m.get("id"))]
    return _json(listed)


@router.get("/healthz")
async def healthz() -> Response:
    """The process is up."""
    return _json({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """Ready when the index is loaded and the upstream answers."""
    st = request.app.state
    gen = getattr(st, "generation", None)
    checks: dict[str, Any] = {"index": gen is not None}
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
    if ok and gen is not None:
        checks["guidelines"] = gen.retriever.size
    checks["artifacts"] = artifacts_mode(request.app, st.settings)  # quick start or trained
    return _json({"status": "ready" if ok else "not_ready", "checks": checks},
                 status=200 if ok else 503)
