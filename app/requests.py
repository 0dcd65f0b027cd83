"""Reading request bodies: content type, size, nesting depth, then the request model.

Every check answers a 4xx in the OpenAI error shape before the body reaches the guide step or the
upstream. The routes read the raw body (a proxy forwards what the client sent), so the models are
also declared in the OpenAPI schema by ``json_body``.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from app.config import Settings
from app.errors import (
    BadRequest,
    PayloadTooLarge,
    UnprocessableEntity,
    UnsupportedMediaType,
)
from app.protocol import ChatMessage

M = TypeVar("M", bound=BaseModel)

# +1 for an opening bracket, -1 for a closing one, 0 for any other byte
_STEP = np.zeros(256, dtype=np.int32)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
# pydantic's names for the member of a union in an error's location ("str", "list[str]", ...)
_UNION_TAG = re.compile(r"(str|int|float|bool|none|dict|list|[a-z-]+\[.*\]|[A-Z]\w*)")


def check_content_type(request: Request) -> None:
    """415 unless the body is declared JSON: a browser can post ``text/plain`` or a form to
    another origin without asking first, but not ``application/json``."""
    declared = request.headers.get("content-type", "")
    media = declared.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/")
                                            and media.endswith("+json")):
        shown = f"'{media}'" if media else "no content type"
        raise UnsupportedMediaType(f"request body must be application/json; got {shown}")


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text ``raw`` (0 for a scalar), brackets
    inside strings not counted; vectorised, a few milliseconds for a megabyte."""
    # drop escaped backslashes, then escaped quotes: every quote left opens or closes a string
    data = np.frombuffer(raw.replace(b"\\\\", b"").replace(b'\\"', b""), dtype=np.uint8)
    outside = np.cumsum(data == ord('"')) % 2 == 0
    steps = _STEP[data[outside]]
    return int(max(np.cumsum(steps).max(initial=0), 0))


async def read_json(request: Request, settings: Settings) -> Any:
    """The request body as JSON: declared JSON, at most ``max_body_bytes`` (refused before
    reading it all) and nested at most ``max_json_depth`` levels."""
    check_content_type(request)
    limit = settings.max_body_bytes
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
    depth = settings.max_json_depth
    # counting brackets is cheap, and fewer than the limit cannot nest beyond it
    if raw.count(b"[") + raw.count(b"{") > depth and json_depth(raw) > depth:
        raise BadRequest(f"request body nests deeper than {settings.max_json_depth} levels")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


def parse(model: type[M], data: Any) -> M:
    """``data`` validated as ``model``; the first error is a 422 naming its field."""
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # the deepest error: for a union (text or a list of messages) it names the member that
        # failed inside the branch the client meant, not the first branch tried
        err = max(exc.errors(), key=lambda e: len(e["loc"]))
        loc = ".".join(str(p) for p in err["loc"] if not _UNION_TAG.fullmatch(str(p)))
        raise UnprocessableEntity(f"{loc}: {err['msg']}", param=loc) from None


def check_messages(messages: list[ChatMessage] | list[str], settings: Settings, *,
                   param: str = "messages") -> None:
    """The caps on a conversation (or a list of texts): how many, and how many characters."""
    if len(messages) > settings.max_messages:
        raise UnprocessableEntity(f"{param} has {len(messages)} items; the limit is "
                                  f"{settings.max_messages}", param=param,
                                  code="too_many_messages")
    chars = sum(len(m) if isinstance(m, str) else m.text_length() for m in messages)
    if chars > settings.max_input_chars:
        raise PayloadTooLarge(f"{param} hold {chars} characters of text; the limit is "
                              f"{settings.max_input_chars}", param=param)


def check_generation(data: dict[str, Any], settings: Settings) -> None:
    """The caps on what a chat request asks the upstream to generate: ``n`` and max tokens."""
    n = data.get("n")
    if isinstance(n, int) and n > settings.max_n:
        raise UnprocessableEntity(f"n is {n}; the limit is {settings.max_n}", param="n",
                                  code="limit_exceeded")
    for name in ("max_tokens", "max_completion_tokens"):
        value = data.get(name)
        if isinstance(value, int) and value > settings.max_output_tokens:
            raise UnprocessableEntity(f"{name} is {value}; the limit is "
                                      f"{settings.max_output_tokens}", param=name,
                                      code="limit_exceeded")


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the JSON request body (its definitions inlined,
    so each operation stands alone); the route still reads the raw body."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**inline(defs[ref.removeprefix("#/$defs/")]), **inline(rest)}
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": inline(schema)}}}}
