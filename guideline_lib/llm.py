"""An async client for any OpenAI-compatible chat endpoint: retries, bounded concurrency, cache."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson


def public_url(url: str) -> str:
    """The endpoint without credentials or query, for manifests."""
    parts = urlsplit(url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class LLMError(Exception):
    """A chat call failed for good: retries exhausted or a non-retryable 4xx."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class LLMUnreachable(LLMError):
    """Nothing listens at the endpoint: every attempt failed to connect."""


@dataclass(frozen=True)
class LLMConfig:
    """Where the LLM is and how to call it."""

    base_url: str = "http://127.0.0.1:8081/v1"
    model: str = "smollm2-135m-instruct"
    api_key: str | None = field(default=None, repr=False)
    temperature: float = 0.0
    max_tokens: int = 512
    timeout: float = 120.0
    max_retries: int = 4
    backoff: float = 1.0
    concurrency: int = 4
    max_backoff: float = 60.0


@dataclass(frozen=True)
class Completion:
    """One chat answer."""

    text: str
    finish_reason: str | None
    model: str
    latency_s: float
    cached: bool
    usage: dict[str, Any]
    # what a Guide-Align gateway reports in the body (guidelines used, ignored options)
    guide_align: dict[str, Any] | None = None


@dataclass
class ClientStats:
    """What a client did: requests sent, cache hits, retries, final failures."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0


def cache_key(body: dict[str, Any]) -> str:
    """Hash of model, messages and sampling parameters (the whole request body)."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


class ResponseCache:
    """A sqlite file of chat answers keyed by request hash; safe across kill -9."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value BLOB NOT NULL, "
            "created REAL NOT NULL)"
        )

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored answer for ``key``, or None."""
        with self._lock:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            value = orjson.loads(row[0])
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store (or replace) the answer for ``key``."""
        blob = orjson.dumps(value)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, value, created) VALUES (?, ?, ?)",
                (key, blob, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Seconds a 429/503 answer asks to wait (Retry-After as seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError, IndexError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


def _parse_answer(payload: Any) -> dict[str, Any]:
    """The cacheable part of a chat completion body; raises ValueError when it has none."""
    if not isinstance(payload, dict):
        raise ValueError("body is not a JSON object")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("body has no choices")
    message = choices[0].get("message") or {}
    text = message.get("content") if isinstance(message, dict) else None
    if text is None:
        text = choices[0].get("text")
    if not isinstance(text, str):
        text = ""
    usage = payload.get("usage")
    answer = {
        "text": text,
        "finish_reason": choices[0].get("finish_reason"),
        "model": str(payload.get("model") or ""),
        "usage": usage if isinstance(usage, dict) else {},
    }
    if isinstance(payload.get("guide_align"), dict):
        answer["guide_align"] = payload["guide_align"]
    return answer


class LLMClient:
    """Async chat client: bounded concurrency, retries with backoff, optional response cache."""

    def __init__(
        self,
        config: LLMConfig,
        *,
        cache: ResponseCache | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.config = config
        self.cache = cache
        self.stats = ClientStats()
        headers = {"content-type": "application/json"}
        if config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        self._http = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(config.timeout, connect=min(10.0, config.timeout)),
            transport=transport,
            limits=httpx.Limits(max_connections=max(1, config.concurrency) * 2),
        )
        self._slots = asyncio.Semaphore(max(1, config.concurrency))

    def request_body(self, messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        """The JSON body sent for ``messages``; ``params`` override the configured sampling."""
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        body.update({k: v for k, v in params.items() if v is not None})
        body["stream"] = False
        return body

    async def chat(self, messages: list[dict[str, Any]], **params: Any) -> Completion:
        """One chat completion; served from the cache when the same request was answered."""
        body = self.request_body(messages, **params)
        key = cache_key(body)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.cache_hits += 1
                return Completion(text=str(hit.get("text", "")),
                                  finish_reason=hit.get("finish_reason"),
                                  model=str(hit.get("model", "")), latency_s=0.0, cached=True,
                                  usage=dict(hit.get("usage") or {}),
                                  guide_align=hit.get("guide_align"))
        async with self._slots:
            started = time.monotonic()
            answer = await self._post_with_retries(body)
            latency = time.monotonic() - started
        if self.cache is not None:
            self.cache.put(key, answer)
        return Completion(text=answer["text"], finish_reason=answer["finish_reason"],
                          model=answer["model"], latency_s=latency, cached=False,
                          usage=answer["usage"], guide_align=answer.get("guide_align"))

    def backoff_delay(self, attempt: int, hint: float | None = None) -> float:
        """Seconds before retry ``attempt`` + 1: exponential with jitter, at least ``hint``."""
        base = self.config.backoff * (2**attempt)
        delay = base * (0.5 + random.random() / 2)  # jitter keeps parallel workers apart
        if hint is not None:
            delay = max(delay, hint)
        return min(delay, self.config.max_backoff)

    async def _post_with_retries(self, body: dict[str, Any]) -> dict[str, Any]:
        last = "no attempt"
        # Whether the latest attempt found no server at all. An upstream that dies while
        # answering fails the first attempt with a read error and the next ones with refused
        # connections: that is an unreachable server (stop the run, record nothing), not a
        # failed input.
        refused = False
        for attempt in range(self.config.max_retries + 1):
            hint: float | None = None
            try:
                self.stats.requests += 1
                response = await self._http.post("/chat/completions", json=body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}".rstrip(": ")
                refused = isinstance(exc, httpx.ConnectError)
            else:
                refused = False
                status = response.status_code
                if status == 200:
                    try:
                        return _parse_answer(response.json())
                    except ValueError as exc:
                        last = f"unusable response body ({exc})"
                elif status == 429 or status >= 500:
                    hint = retry_after_seconds(response)
                    last = f"HTTP {status}: {response.text[:200]}"
                else:
                    self.stats.failures += 1
                    raise LLMError(f"HTTP {status}: {response.text[:300]}", status=status)
            if attempt < self.config.max_retries:
                self.stats.retries += 1
                await asyncio.sleep(self.backoff_delay(attempt, hint))
        self.stats.failures += 1
        message = f"gave up after {self.config.max_retries + 1} attempts: {last}"
        if refused:
            raise LLMUnreachable(f"{self.config.base_url} unreachable; {message}", retryable=True)
        raise LLMError(message, retryable=True)

    async def ping(self) -> None:
        """Check that something answers at the endpoint (any HTTP status); raise LLMUnreachable."""
        try:
            await self._http.get("/models", timeout=min(10.0, self.config.timeout))
        except httpx.HTTPError as exc:
            raise LLMUnreachable(f"{self.config.base_url} unreachable ({type(exc).__name__}); "
                                 "start the server (e.g. `guide-align up`) or pass --base-url"
                                 ) from exc

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
