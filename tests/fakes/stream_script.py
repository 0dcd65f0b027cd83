"""A scripted streaming upstream for backtracking tests: each request gets the next queued
reply, streamed piece by piece, and the server records what it was asked and what became of
each stream (finished, cancelled by the gateway).

    up = StreamScript()
    up.push(Reply(["Hello ", "world."], delay=0.05))
    with ServerThread(up.app()) as server: ...
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass(frozen=True)
class Reply:
    """One scripted answer: text pieces sent ``delay`` seconds apart, or a failure."""

    pieces: list[str] = field(default_factory=list)
    delay: float = 0.0
    status: int = 200  # not 200: the request fails with this status before streaming
    die_after: int | None = None  # the connection drops after this many pieces
    first_delay: float = 0.0  # before the response starts (headers included)
    pause_at: int | None = None  # before this piece the stream pauses ``pause`` seconds
    pause: float = 0.0

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def chunk(content: str | None, *, role: bool = False, finish: str | None = None) -> bytes:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    data = {"id": "chatcmpl-script", "object": "chat.completion.chunk", "created": 1,
            "model": "script", "choices": [{"index": 0, "delta": delta,
                                            "finish_reason": finish}]}
    return f"data: {json.dumps(data)}\n\n".encode()


class StreamScript:
    """The scripted server's state."""

    def __init__(self, default: Reply | None = None):
        self.queue: deque[Reply] = deque()
        self.default = default
        self.requests: list[dict[str, Any]] = []
        self.finished: list[int] = []  # request numbers whose stream ran to [DONE]
        self.cancelled: list[int] = []  # request numbers whose stream the client closed
        self.sent: dict[int, str] = {}  # text streamed so far, per request number
        self._lock = threading.Lock()

    def push(self, *replies: Reply) -> StreamScript:
        self.queue.extend(replies)
        return self

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            body = await request.json()
            with self._lock:
                self.requests.append(body)
                number = len(self.requests) - 1
                reply = self.queue.popleft() if self.queue else self.default
            if reply is None:
                return PlainTextResponse("unscripted request", status_code=500)
            if reply.first_delay:
                await asyncio.sleep(reply.first_delay)
            if reply.status != 200:
                return JSONResponse({"error": {"message": f"scripted {reply.status}",
                                               "type": "scripted", "param": None,
                                               "code": None}}, status_code=reply.status)
            if not body.get("stream"):
                return JSONResponse({
                    "id": "chatcmpl-script", "object": "chat.completion", "created": 1,
                    "model": "script", "choices": [{"index": 0, "finish_reason": "stop",
                                                    "message": {"role": "assistant",
                                                                "content": reply.text}}]})

            async def events():  # type: ignore[no-untyped-def]
                self.sent[number] = ""
                try:
                    yield chunk(None, role=True)
                    for n, piece in enumerate(reply.pieces):
                        if reply.die_after is not None and n == reply.die_after:
                            raise RuntimeError("scripted drop")
                        if reply.delay:
                            await asyncio.sleep(reply.delay)
                        if n == reply.pause_at:
                            await asyncio.sleep(reply.pause)
                        yield chunk(piece)
                        self.sent[number] += piece
                    yield chunk(None, finish="stop")
                    yield b"data: [DONE]\n\n"
                    self.finished.append(number)
                except asyncio.CancelledError:
                    self.cancelled.append(number)
                    raise

            return StreamingResponse(events(), media_type="text/event-stream")

        async def models(request: Request) -> Response:
            return JSONResponse({"object": "list", "data": [{"id": "script"}]})

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                                 Route("/v1/models", models, methods=["GET"])])


def words(text: str) -> list[str]:
    """``text`` as stream pieces of one word each (with the space after it)."""
    out = [w + " " for w in text.split(" ") if w]
    if out and not text.endswith(" "):
        out[-1] = out[-1][:-1]
    return out
