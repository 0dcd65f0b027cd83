"""A misbehaving OpenAI-compatible upstream for fault tests, scripted by the request's ``model``.

Models: "slow" (answers after ``FaultLog.delay`` seconds, JSON or stream, and records when the
gateway hangs up on it), "huge" (a JSON body of ``FaultLog.huge_bytes`` bytes, or an endless
fast stream), "trickle" (a JSON body or stream that never ends, a little every 0.1 s),
"cut-json" (announces a body, sends half, closes), "echo-401" (a 401 repeating the request's
URL and headers in its body and in an ``x-ratelimit-echo`` header), anything else: a short
answer.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send


@dataclass
class FaultLog:
    """What the faulty upstream saw; events are set from the server's thread."""

    delay: float = 30.0
    huge_bytes: int = 20 * 1024 * 1024
    started: threading.Event = field(default_factory=threading.Event)
    hung_up: threading.Event = field(default_factory=threading.Event)  # the gateway went away
    finished: threading.Event = field(default_factory=threading.Event)  # answered in full
    bytes_sent: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)


def _chunk(text: str) -> bytes:
    data = {"id": "chatcmpl-faulty", "object": "chat.completion.chunk", "created": 0,
            "model": "faulty", "choices": [{"index": 0, "delta": {"content": text},
                                            "finish_reason": None}]}
    return f"data: {json.dumps(data)}\n\n".encode()


def _answer(text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-faulty", "object": "chat.completion", "created": 0,
            "model": "faulty", "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": text}}]}


class _Body:
    """A raw ASGI response whose body comes from an async generator, sent as it is produced;
    records a hang-up and, for ``cut``, stops after half of the announced length."""

    def __init__(self, log: FaultLog, parts: Any, *, length: int | None = None):
        self.log, self.parts, self.length = log, parts, length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json")]
        if self.length is not None:
            headers.append((b"content-length", str(self.length).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def hang_up() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.log.hung_up.set()

        watcher = asyncio.ensure_future(hang_up())
        try:
            async for part in self.parts:
                if watcher.done():  # uvicorn drops what is sent to a closed connection
                    return
                await send({"type": "http.response.body", "body": part, "more_body": True})
                self.log.bytes_sent += len(part)
        finally:
            if not watcher.done():
                watcher.cancel()
        if self.length is None:
            await send({"type": "http.response.body", "body": b""})
            self.log.finished.set()
        # with a length, returning early leaves the body short: uvicorn closes the connection


def make_faulty_upstream(log: FaultLog) -> Starlette:
    """Build the faulty upstream app."""

    async def chat(request: Request) -> Response:
        body = await request.json()
        log.requests.append({"url": str(request.url), "headers": dict(request.headers),
                             "body": body})
        log.started.set()
        model, stream = body.get("model"), bool(body.get("stream"))
        if model == "echo-401":
            seen = {"url": str(request.url), "headers": dict(request.headers)}
            return JSONResponse(
                {"error": {"message": f"not allowed: {json.dumps(seen)}", "type": "auth",
                           "param": None, "code": None}}, status_code=401,
                headers={"x-ratelimit-echo": request.headers.get("authorization", "")})
        if model == "slow" and not stream:
            return await _slow_json(request)
        if model == "slow":
            return StreamingResponse(_events(log, every=log.delay, count=2),
                                     media_type="text/event-stream")
        if model == "huge" and not stream:
            return _Body(log, _filler(log.huge_bytes))  # type: ignore[return-value]
        if model == "huge":
            return StreamingResponse(_events(log, every=0.0, count=None),
                                     media_type="text/event-stream")
        if model == "trickle" and not stream:
            return _Body(log, _trickle())  # type: ignore[return-value]
        if model == "trickle":
            return StreamingResponse(_events(log, every=0.1, count=None),
                                     media_type="text/event-stream")
        if model == "cut-json":
            whole = json.dumps(_answer("this answer is cut short")).encode()
            return _Body(log, _parts(whole[: len(whole) // 2]),  # type: ignore[return-value]
                         length=len(whole))
        return JSONResponse(_answer("fine"))

    async def _slow_json(request: Request) -> Response:
        async def hang_up() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        watcher = asyncio.ensure_future(hang_up())
        try:
            await asyncio.wait_for(asyncio.shield(watcher), timeout=log.delay)
        except TimeoutError:
            watcher.cancel()
            log.finished.set()
            return JSONResponse(_answer("slow but done"))
        log.hung_up.set()
        return Response(status_code=499)

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "faulty", "object": "model"}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/models", models, methods=["GET"])])


async def _events(log: FaultLog, *, every: float, count: int | None) -> Any:
    n = 0
    try:
        while count is None or n < count:
            part = _chunk(f"tok{n} " + "x" * 200)
            log.bytes_sent += len(part)
            yield part
            n += 1
            await asyncio.sleep(every)
        yield b"data: [DONE]\n\n"
        log.finished.set()
    except asyncio.CancelledError:
        log.hung_up.set()
        raise


async def _filler(size: int) -> Any:
    """A valid JSON object of about ``size`` bytes, in 64 KiB parts."""
    yield b'{"id": "chatcmpl-faulty", "padding": "'
    step = 64 * 1024
    for _ in range(size // step):
        yield b"x" * step
        await asyncio.sleep(0)
    yield b'", "choices": []}'


async def _trickle() -> Any:
    yield b'{"id": "chatcmpl-faulty", "padding": "'
    while True:
        yield b"x"
        await asyncio.sleep(0.1)


async def _parts(data: bytes) -> Any:
    yield data

