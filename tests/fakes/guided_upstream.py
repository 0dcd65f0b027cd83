"""A scripted OpenAI-compatible chat upstream for finetune tests, driven by markers in the input.

Markers in the last user turn: "[reject]" -> 400, "[down]" -> 500 every time, "[flaky]" -> 500
on the first attempt then an answer, "[trunc]" -> finish_reason "length", "[empty]" -> an empty
answer, "[refuse]" -> a refusal. Anything else gets "Guided answer (N guidelines): <input>",
where N counts the numbered guideline lines in the system message. The judge prompt (a system
message starting "You grade") gets REFUSAL when the graded reply starts with "I can't".
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

MODEL = "scripted-model"


@dataclass
class ScriptLog:
    """Every request body, and attempts per user input; ``delay`` slows each answer."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    delay: float = 0.0


def _answer(text: str, finish: str = "stop") -> dict[str, Any]:
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
            "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def make_guided_upstream(log: ScriptLog) -> Starlette:
    """Build the scripted upstream; ``log`` records what it saw."""

    async def chat(request: Request) -> Response:
        body = await request.json()
        log.bodies.append(body)
        messages = body["messages"]
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = [m["content"] for m in messages if m["role"] == "user"][-1]
        log.attempts[user] += 1
        if log.delay:
            await asyncio.sleep(log.delay)
        if system.startswith("You grade"):
            reply = user.split("Reply:\n", 1)[-1]
            return JSONResponse(_answer("REFUSAL" if reply.startswith("I can't")
                                        else "COMPLIANCE"))
        if "[reject]" in user:
            return JSONResponse({"error": {"message": "bad request", "type": "invalid"}},
                                status_code=400)
        if "[down]" in user or ("[flaky]" in user and log.attempts[user] == 1):
            return PlainTextResponse("upstream exploded", status_code=500)
        if "[trunc]" in user:
            return JSONResponse(_answer("A long answer that was cut", "length"))
        if "[empty]" in user:
            return JSONResponse(_answer(""))
        if "[refuse]" in user:
            return JSONResponse(_answer("I can't help with that."))
        n = len(re.findall(r"^\d+\. ", system, flags=re.MULTILINE))
        return JSONResponse(_answer(f"Guided answer ({n} guidelines): {user}"))

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/models", models, methods=["GET"])])
