"""Who may call and how much: authentication, requests and tokens per minute (in-process or on
Redis, so replicas share them) and a per-caller concurrency cap, as one ASGI middleware on
``/v1/*``."""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import bearer_token
from app.config import Settings
from app.errors import GatewayError, RateLimited, Unauthorized, error_response
from app.keys import CALLER, Caller, KeyStore, check_exposure, keys_configured
from app.upstream import sse_events

log = logging.getLogger("guide_align")

TOKENS = "guide_align_tokens"  # the request.state entry for an answer's tokens


def storage_for(redis_url: str | None) -> Storage:
    """Counters in this process, or on Redis (``redis://`` or ``rediss://``) for replicas."""
    if not redis_url:
        return MemoryStorage()
    url = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
    return RedisStorage(url, implementation="redispy")


@dataclass(frozen=True)
class Quota:
    """One caller's limits (0 = unlimited for rpm / tpm)."""

    rpm: int
    tpm: int
    max_concurrency: int

    @classmethod
    def of(cls, caller: Caller, settings: Settings) -> Quota:
        p = caller.policy
        return cls(rpm=settings.rpm if p.rpm is None else p.rpm,
                   tpm=settings.tpm if p.tpm is None else p.tpm,
                   max_concurrency=(settings.max_concurrency if p.max_concurrency is None
                                    else p.max_concurrency))


def _reset(seconds: float) -> str:
    """A reset time the way OpenAI writes it: "1s", "6m0s"."""
    whole = max(1, math.ceil(seconds))
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


class RateLimits:
    """Requests and tokens per minute per caller, counted in fixed one-minute windows."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.limiter = FixedWindowRateLimiter(storage)

    async def _stats(self, item: RateLimitItemPerMinute, who: str) -> tuple[int, float]:
        stats = await self.limiter.get_window_stats(item, who)
        return stats.remaining, max(0.0, stats.reset_time - time.time())

    async def admit(self, who: str, quota: Quota) -> dict[str, str]:
        """Count one request; the ``x-ratelimit-*`` headers, or RateLimited when the caller is
        over its requests per minute or already over its tokens per minute."""
        headers: dict[str, str] = {}
        refused: tuple[str, float] | None = None
        if quota.tpm:
            item = RateLimitItemPerMinute(quota.tpm, namespace="tpm")
            remaining, reset = await self._stats(item, who)
            headers |= {"x-ratelimit-limit-tokens": str(quota.tpm),
                        "x-ratelimit-remaining-tokens": str(remaining),
                        "x-ratelimit-reset-tokens": _reset(reset)}
            if remaining <= 0:
                refused = (f"tokens per minute limit reached ({quota.tpm})", reset)
        if quota.rpm:
            item = RateLimitItemPerMinute(quota.rpm, namespace="rpm")
            allowed = refused is None and await self.limiter.hit(item, who)
            remaining, reset = await self._stats(item, who)
            headers |= {"x-ratelimit-limit-requests": str(quota.rpm),
                        "x-ratelimit-remaining-requests": str(remaining),
                        "x-ratelimit-reset-requests": _reset(reset)}
            if not allowed and refused is None:
                refused = (f"requests per minute limit reached ({quota.rpm})", reset)
        if refused is not None:
            message, wait = refused
            raise RateLimited(message, headers={**headers,
                                                "retry-after": str(max(1, math.ceil(wait)))})
        return headers

    async def charge(self, who: str, quota: Quota, tokens: int) -> None:
        """Count an answer's tokens against the caller's tokens per minute."""
        if quota.tpm and tokens > 0:
            await self.limiter.hit(RateLimitItemPerMinute(quota.tpm, namespace="tpm"), who,
                                   cost=tokens)


class _Gate:
    def __init__(self, limit: int):
        self.limit = limit
        self.semaphore = asyncio.Semaphore(limit)
        self.users = 0  # holders and waiters


class ConcurrencyCap:
    """At most ``limit`` requests of one caller at a time, in this process; the rest wait up
    to ``timeout`` seconds for a slot, then get a 429."""

    def __init__(self) -> None:
        self._gates: dict[str, _Gate] = {}

    @asynccontextmanager
    async def slot(self, who: str, limit: int, timeout: float) -> AsyncIterator[None]:
        gate = self._gates.get(who)
        if gate is None or gate.limit != limit:  # a changed limit starts a new gate
            gate = self._gates[who] = _Gate(limit)
        gate.users += 1
        try:
            try:
                await asyncio.wait_for(gate.semaphore.acquire(), timeout)
            except TimeoutError:
                raise RateLimited(
                    f"too many concurrent requests (at most {limit}); waited {timeout:g}s",
                    headers={"retry-after": "1"}, code="concurrency_limit_exceeded") from None
            try:
                yield
            finally:
                gate.semaphore.release()
        finally:
            gate.users -= 1
            if gate.users == 0 and self._gates.get(who) is gate:
                del self._gates[who]


async def authenticate(scope: Scope, settings: Settings, store: KeyStore) -> Caller:
    """The caller of a request: open (by address) when no key is configured; otherwise its
    bearer token must be the master key or an active gateway key (401 if not)."""
    if not await anyio.to_thread.run_sync(keys_configured, settings, store):
        client = scope.get("client")
        return Caller(f"addr:{client[0] if client else 'unknown'}")
    token = _token(scope)
    if token is None:
        raise Unauthorized("a gateway key is required: send `Authorization: Bearer <key>`")
    master = settings.master_key
    if master is not None and _same(token, master.get_secret_value()):
        return Caller("master")
    record = await anyio.to_thread.run_sync(store.lookup, token)
    if record is None:
        raise Unauthorized("invalid or revoked gateway key")
    return Caller(f"key:{record.id}", record)


def _same(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode(), b.encode())


def _token(scope: Scope) -> str | None:
    return bearer_token(HTTPConnection(scope))  # type: ignore[arg-type]


class GatewayGuard:
    """ASGI middleware on ``/v1/*``: authenticate, apply rate limits and the concurrency cap,
    add ``x-ratelimit-*`` headers, and charge the answer's tokens when it is done."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        settings: Settings = state.settings
        try:
            caller = await authenticate(scope, settings, state.keys)
            quota = Quota.of(caller, settings)
            headers = await state.rate_limits.admit(caller.identity, quota)
        except GatewayError as exc:
            await error_response(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})[CALLER] = caller
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and raw:
                names = {k for k, _ in raw}  # ours replace the upstream's relayed ones
                message["headers"] = [(k, v) for k, v in message.get("headers", [])
                                      if k.lower() not in names] + raw
            await send(message)

        try:
            async with state.concurrency.slot(caller.identity, quota.max_concurrency,
                                              settings.queue_timeout):
                try:
                    await self.app(scope, receive, send_with_headers)
                finally:
                    await state.rate_limits.charge(caller.identity, quota,
                                                   int(scope["state"].get(TOKENS) or 0))
        except RateLimited as exc:
            await error_response(exc)(scope, receive, send_with_headers)


def estimate_tokens(chars: int) -> int:
    """Tokens of ``chars`` characters of text, estimated (about four characters a token)."""
    return max(1, math.ceil(chars / 4)) if chars > 0 else 0


def prompt_chars(messages: Any) -> int:
    """Characters of text in a conversation (string contents and text parts)."""
    total = 0
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p.get("text") or "") for p in content
                         if isinstance(p, dict) and isinstance(p.get("text"), str))
    return total


def answer_tokens(answer: dict[str, Any], prompt: int) -> int:
    """An answer's tokens: the upstream's ``usage.total_tokens``, else an estimate."""
    usage = answer.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("total_tokens"), int):
        return int(usage["total_tokens"])
    text = sum(len(c.get("message", {}).get("content") or "") for c in answer.get("choices", [])
               if isinstance(c, dict) and isinstance(c.get("message"), dict))
    return estimate_tokens(prompt + text)


async def metered(stream: AsyncIterator[bytes], state: Any, prompt: int) -> AsyncIterator[bytes]:
    """Relay ``stream`` and record its tokens on ``state`` when it ends: the usage chunk's total
    if the upstream sends one, else an estimate from the prompt and the streamed text."""
    chars, usage = 0, None
    try:
        async for event in stream:
            for data in sse_events(event):
                if isinstance(data.get("usage"), dict):
                    usage = data["usage"].get("total_tokens", usage)
                for choice in data.get("choices") or ():
                    delta = choice.get("delta") if isinstance(choice, dict) else None
                    if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                        chars += len(delta["content"])
            yield event
    finally:
        setattr(state, TOKENS, usage if isinstance(usage, int) else
                estimate_tokens(prompt + chars))


def open_limits(app: Any, settings: Settings) -> None:
    """Put the key store, rate limits and concurrency cap on ``app.state``, after the start-up
    exposure rule (raises ExposureError for an open non-loopback host)."""
    store = KeyStore.from_settings(settings)
    line = check_exposure(settings, store)
    if keys_configured(settings, store):
        log.info(line)
    else:
        log.warning(line)
    app.state.keys = store
    app.state.rate_limits = RateLimits(storage_for(settings.redis_url))
    app.state.concurrency = ConcurrencyCap()


def close_limits(app: Any) -> None:
    store = getattr(app.state, "keys", None)
    if store is not None:
        store.close()


def charge_answer(state: Any, answer: dict[str, Any], messages: Any) -> None:
    """Record a JSON answer's tokens on ``state`` for the caller's tokens per minute."""
    setattr(state, TOKENS, answer_tokens(answer, prompt_chars(messages)))
