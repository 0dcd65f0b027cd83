"""A scripted OpenAI-compatible chat server for builder tests: replies queued or routed per test.

Use it with :class:`tests.fakes.server.ServerThread`::

    llm = ScriptedLLM()
    llm.push("Risky: no\\nCategory: quality_coding")       # next reply, whatever is asked
    llm.on("phishing", "Risky: yes\\nCategory: fraud_deception")  # when the last user turn says so
    with ServerThread(llm.app()) as server:
        base_url = server.url + "/v1"

Resolution order per request: the queue (FIFO), then the first matching rule, then ``default``,
else a 500 "unscripted request". A reply can be a string (the answer text), a :class:`Reply`
(status, headers, raw body, delay) or a callable of the request body returning either.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a completion with ``text``, or an error status / raw body."""

    text: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    delay: float = 0.0
    finish_reason: str = "stop"


Script = str | Reply | Callable[[dict[str, Any]], str | Reply]


def last_user(body: dict[str, Any]) -> str:
    """Content of the last user message of a chat request body."""
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user":
            return str(m.get("content") or "")
    return ""


def system_text(body: dict[str, Any]) -> str:
    """Content of the first system message, or ''."""
    for m in body.get("messages") or []:
        if m.get("role") == "system":
            return str(m.get("content") or "")
    return ""


class ScriptedLLM:
    """The scripted server's state: queued replies, routing rules and every request seen."""

    def __init__(self, default: Script | None = None):
        self.default = default
        self.queue: deque[Script] = deque()
        self.rules: list[tuple[Callable[[dict[str, Any]], bool], Script]] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.held = 0
        self._gate: threading.Event | None = None
        self._gate_after: int | None = None
        self._lock = threading.Lock()

    def push(self, *replies: Script) -> ScriptedLLM:
        """Queue replies for the next requests, in order."""
        self.queue.extend(replies)
        return self

    def on(self, match: str | Callable[[dict[str, Any]], bool], reply: Script) -> ScriptedLLM:
        """Answer ``reply`` when ``match`` is in the last user turn (or the predicate is true)."""
        predicate = match if callable(match) else (lambda body, s=match: s in last_user(body))
        self.rules.append((predicate, reply))
        return self

    def hold_after(self, n: int) -> threading.Event:
        """Requests after the first ``n`` wait until the returned event is set."""
        self._gate, self._gate_after = threading.Event(), n
        return self._gate

    def _resolve(self, body: dict[str, Any]) -> Reply:
        script: Script | None = None
        with self._lock:
            if self.queue:
                script = self.queue.popleft()
        if script is None:
            script = next((r for pred, r in self.rules if pred(body)), self.default)
        if script is None:
            return Reply(status=500, body="unscripted request")
        if callable(script):
            script = script(body)
        return Reply(text=script) if isinstance(script, str) else script

    def app(self) -> Starlette:
        """The Starlette app: POST /v1/chat/completions and GET /v1/models."""

        async def chat(request: Request) -> Response:
            body = await request.json()
            with self._lock:
                self.requests.append(body)
                self.headers.append(dict(request.headers))
                number = len(self.requests)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                gate = self._gate
                if gate is not None and self._gate_after is not None and \
                        number > self._gate_after:
                    with self._lock:
                        self.held += 1
                    while not gate.is_set():
                        await asyncio.sleep(0.01)
                    with self._lock:
                        self.held -= 1
                reply = self._resolve(body)
                if reply.delay:
                    await asyncio.sleep(reply.delay)
            finally:
                with self._lock:
                    self.in_flight -= 1
            if reply.body is not None:
                return Response(reply.body, status_code=reply.status, headers=reply.headers,
                                media_type="text/plain")
            if reply.status != 200:
                return JSONResponse({"error": {"message": f"scripted {reply.status}",
                                               "type": "scripted", "param": None, "code": None}},
                                    status_code=reply.status, headers=reply.headers)
            return JSONResponse({
                "id": "chatcmpl-scripted", "object": "chat.completion",
                "created": int(time.time()), "model": body.get("model") or "scripted",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                             "finish_reason": reply.finish_reason}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }, headers=reply.headers)

        async def models(request: Request) -> Response:
            return JSONResponse({"object": "list", "data": [{"id": "scripted", "object": "model",
                                                             "owned_by": "tests"}]})

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                                 Route("/v1/models", models, methods=["GET"])])
