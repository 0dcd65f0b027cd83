"""A fast OpenAI-compatible upstream stub for benchmarks: a raw ASGI app with fixed answers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

COMPLETION = json.dumps({
    "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": "stub",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the stub."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
}).encode()
CHUNK = (b'data: {"id":"chatcmpl-stub","object":"chat.completion.chunk","created":0,'
         b'"model":"stub","choices":[{"index":0,"delta":{"content":"tok "},'
         b'"finish_reason":null}]}\n\n')
MODELS = b'{"object":"list","data":[{"id":"stub","object":"model","owned_by":"bench"}]}'
N_CHUNKS = 8


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer chat completions (JSON or SSE) and /v1/models; read the whole request body."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    if scope["path"].endswith("/models"):
        await _send(send, 200, b"application/json", MODELS)
        return
    stream = b'"stream":true' in body.replace(b" ", b"")
    if not stream:
        await _send(send, 200, b"application/json", COMPLETION)
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    for _ in range(N_CHUNKS):
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await asyncio.sleep(0.002)
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


async def _send(send: Any, status: int, ctype: bytes, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
