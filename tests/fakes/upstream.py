"""A real local OpenAI-compatible upstream for tests, scripted by the request's ``model`` name.

Models: "ok" (default), "slow-stream" (one chunk every 0.3 s for ``n`` chunks), "error-500",
"error-400", "not-json", "bad-sse", "drop-mid-stream", "hang" (sleeps longer than any timeout),
"echo-auth-400" (a 400 whose message repeats the Authorization header it received), "auth-401"
(a 401), "rate-limited" (a 429 with retry-after and rate-limit headers).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

# Sent with every answer: a client's rate-limit view, plus a header that must not be relayed.
RATE_HEADERS = {"x-ratelimit-remaining-requests": "41", "x-upstream-internal": "secret-route"}


@dataclass
class UpstreamLog:
    """What the fake upstream saw and did."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    chunks_sent: int = 0
    stream_finished: bool = False
    stream_cancelled: bool = False
    first_chunk_at: float | None = None
    last_chunk_at: float | None = None


def _completion(text: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def _chunk(text: str, model: str, n: int) -> bytes:
    data = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
            "model": model, "choices": [{"index": 0, "delta": {"content": text},
                                         "finish_reason": None}]}
    return f"data: {json.dumps(data)}\n\n".encode()


def make_upstream(log: UpstreamLog | None = None, *, chunk_delay: float = 0.3) -> Starlette:
    """Build the fake upstream app; ``log`` records requests and stream progress."""
    log = log or UpstreamLog()

    async def chat(request: Request) -> Response:
        body = await request.json()
        log.bodies.append(body)
        log.headers.append(dict(request.headers))
        model = body.get("model") or "ok"
        if model == "error-500":
            return PlainTextResponse("boom", status_code=500)
        if model == "error-400":
            return JSONResponse({"error": {"message": "bad temperature", "type":
                                           "invalid_request_error", "param": "temperature",
                                           "code": None}}, status_code=400)
        if model == "echo-auth-400":
            auth = request.headers.get("authorization", "")
            return JSONResponse({"error": {"message": f"key rejected: {auth}", "type": "auth",
                                           "param": None, "code": None}}, status_code=400)
        if model == "auth-401":
            return JSONResponse({"error": {"message": "invalid api key", "type": "auth",
                                           "param": None, "code": None}}, status_code=401)
        if model == "rate-limited":
            return JSONResponse({"error": {"message": "slow down", "type": "rate_limit",
                                           "param": None, "code": None}}, status_code=429,
                                headers={"retry-after": "7", "x-ratelimit-remaining-requests": "0",
                                         "x-internal-trace": "do-not-relay"})
        if model == "not-json":
            return PlainTextResponse("<html>proxy error</html>", status_code=200)
        if model == "hang":
            await asyncio.sleep(30)
        if not body.get("stream"):
            system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
            return JSONResponse(_completion(f"ok ({len(str(system))} chars of system)", model),
                                headers=RATE_HEADERS)
        n = int(body.get("n_chunks", 5))

        async def events():  # type: ignore[no-untyped-def]
            try:
                for i in range(n):
                    if model == "bad-sse" and i == 1:
                        yield b"data: {not json\n\n"
                        continue
                    if model == "drop-mid-stream" and i == 2:
                        raise RuntimeError("upstream died")
                    yield _chunk(f"tok{i} ", model, i)
                    log.chunks_sent += 1
                    now = time.monotonic()
                    log.first_chunk_at = log.first_chunk_at or now
                    log.last_chunk_at = now
                    if model == "slow-stream":
                        await asyncio.sleep(chunk_delay)
                yield b"data: [DONE]\n\n"
                log.stream_finished = True
            except asyncio.CancelledError:
                log.stream_cancelled = True
                raise

        return StreamingResponse(events(), media_type="text/event-stream", headers=RATE_HEADERS)

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake-model", "object": "model",
                                                         "owned_by": "tests"}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/models", models, methods=["GET"])])
