"""The upstream LLM client: pooled httpx, honest error mapping, SSE relaying."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from app.config import Settings
from app.errors import (
    GatewayError,
    UpstreamClientError,
    UpstreamError,
    UpstreamTimeout,
    error_body,
)

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def build_client(settings: Settings, transport: httpx.AsyncBaseTransport | None = None)\
        -> httpx.AsyncClient:
    """One pooled client for the process, with explicit timeouts."""
    headers = {}
    if settings.upstream_api_key is not None:
        headers["authorization"] = f"Bearer {settings.upstream_api_key.get_secret_value()}"
    return httpx.AsyncClient(
        base_url=settings.upstream_base_url,
        headers=headers,
        timeout=httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.write_timeout,
            pool=settings.pool_timeout,
        ),
        limits=httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
        ),
        transport=transport,
    )


class Upstream:
    """Calls to the upstream OpenAI-compatible server."""

    def __init__(self, client: httpx.AsyncClient, settings: Settings):
        self.client = client
        self._secret = (
            settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        )

    def _scrub(self, text: str) -> str:
        # Never echo the upstream key back, even if the upstream does.
        if self._secret:
            text = text.replace(self._secret, "***")
        return text

    def _headers(self, auth: str | None) -> dict[str, str]:
        # The client's own credentials go upstream only when the gateway has none configured.
        if auth and self._secret is None:
            return {"authorization": auth}
        return {}

    def _map_transport_error(self, exc: httpx.HTTPError) -> GatewayError:
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(f"upstream timed out ({type(exc).__name__})")
        return UpstreamError(f"upstream unreachable ({type(exc).__name__})")

    async def _check_status(self, resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        raw = await resp.aread()
        if resp.status_code >= 500:
            raise UpstreamError(f"upstream answered {resp.status_code}")
        if resp.status_code in (401, 403) and self._secret is not None:
            # The gateway's configured key was refused: not the client's fault.
            raise UpstreamError(f"upstream refused the gateway's API key ({resp.status_code})")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not (isinstance(body, dict) and isinstance(body.get("error"), dict)):
            text = raw.decode("utf-8", "replace")[:500]
            body = error_body(
                f"upstream rejected the request: {text}", "invalid_request_error",
                code=str(resp.status_code),
            )
        scrubbed = orjson.loads(self._scrub(orjson.dumps(body).decode()))
        raise UpstreamClientError(resp.status_code, scrubbed, headers=relayed_headers(resp))

    async def get_json(self, path: str, *, auth: str | None = None,
                       timeout: float | None = None) -> Any:
        """GET a JSON document (used for /models and readiness)."""
        try:
            resp = await self.client.get(
                path, headers=self._headers(auth),
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise self._map_transport_error(exc) from None
        await self._check_status(resp)
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise UpstreamError("upstream sent a body that is not valid JSON") from None

    async def chat(self, body: dict[str, Any], *, auth: str | None = None,
                   headers_out: dict[str, str] | None = None) -> dict[str, Any]:
        """A non-streaming chat completion; ``headers_out`` receives the relayed headers."""
        try:
            resp = await self.client.post(
                "/chat/completions", content=orjson.dumps(body),
                headers={"content-type": "application/json", **self._headers(auth)},
            )
        except httpx.HTTPError as exc:
            raise self._map_transport_error(exc) from None
        await self._check_status(resp)
        try:
            data = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise UpstreamError("upstream sent a body that is not valid JSON") from None
        if not isinstance(data, dict):
            raise UpstreamError("upstream sent JSON that is not an object")
        if headers_out is not None:
            headers_out.update(relayed_headers(resp))
        return data

    async def open_stream(self, body: dict[str, Any], *, auth: str | None = None)\
            -> httpx.Response:
        """Send a streaming request; returns the open response once its status is known good."""
        request = self.client.build_request(
            "POST", "/chat/completions", content=orjson.dumps(body),
            headers={"content-type": "application/json", "accept": "text/event-stream",
                     "accept-encoding": "identity", **self._headers(auth)},
        )
        try:
            resp = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._map_transport_error(exc) from None
        try:
            await self._check_status(resp)
        except BaseException:
            await resp.aclose()
            raise
        return resp


# One SSE event (a chunk of one choice) is a few hundred bytes; an upstream that sends more than
# this without an event separator is broken, and is not buffered without end.
MAX_EVENT_BYTES = 1 << 20


def relayed_headers(resp: httpx.Response) -> dict[str, str]:
    """The upstream headers a client acts on: rate limits and when to retry."""
    return {k: v for k, v in resp.headers.items()
            if k.lower() == "retry-after" or k.lower().startswith("x-ratelimit-")}


def sse_error(message: str, type_: str = "upstream_error", code: str = "stream_error") -> bytes:
    """An OpenAI-style error sent as an SSE data event."""
    return b"data: " + orjson.dumps(error_body(message, type_, code=code)) + b"\n\n"


def _valid_event(event: bytes) -> bool:
    """An SSE event is acceptable if each data payload is JSON or the [DONE] marker."""
    data = [ln[5:].strip() for ln in event.split(b"\n") if ln.startswith(b"data:")]
    if not data:
        # comments (": keep-alive") and bare fields are legal SSE
        return all(ln.startswith((b":", b"event:", b"id:", b"retry:")) or not ln
                   for ln in event.split(b"\n"))
    payload = b"\n".join(data)
    if payload == b"[DONE]":
        return True
    try:
        orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    return True


async def relay_sse(resp: httpx.Response) -> AsyncIterator[bytes]:
    """Yield each upstream SSE event as soon as it is complete; end with exactly one [DONE].

    Transport failures and invalid events become an SSE error event followed by [DONE].
    The upstream response is closed when the consumer stops (e.g. the client disconnected).
    """
    buf = b""
    done = False
    try:
        async for chunk in resp.aiter_bytes():  # decoded, should the upstream compress
            buf += chunk
            # CRLF -> LF over the whole buffer; a trailing CR waits for the next chunk, whose
            # LF may complete it.
            tail = b"\r" if buf.endswith(b"\r") else b""
            buf = buf[: len(buf) - len(tail)].replace(b"\r\n", b"\n") + tail
            if len(buf) > MAX_EVENT_BYTES and b"\n\n" not in buf:
                yield sse_error("upstream sent a stream event over "
                                f"{MAX_EVENT_BYTES // 1024} KiB")
                yield DONE
                return
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                if not event.strip():
                    continue
                if not _valid_event(event):
                    yield sse_error("upstream sent an invalid stream event")
                    yield DONE
                    return
                if event.strip() == b"data: [DONE]" or event.strip() == b"data:[DONE]":
                    done = True
                    yield DONE
                    return
                yield event + b"\n\n"
        if buf.strip():
            if _valid_event(buf.strip()) and buf.strip().endswith(b"[DONE]"):
                done = True
                yield DONE
            elif _valid_event(buf.strip()):
                yield buf.strip() + b"\n\n"
            else:
                yield sse_error("upstream sent an invalid stream event")
        if not done:
            yield DONE
    except httpx.TimeoutException:
        yield sse_error("upstream timed out mid-stream", code="upstream_timeout")
        yield DONE
    except httpx.HTTPError as exc:
        yield sse_error(f"upstream stream failed ({type(exc).__name__})")
        yield DONE
    except Exception as exc:  # never let a relay bug turn into a torn connection
        log.exception("stream relay failed")
        yield sse_error(f"stream relay failed ({type(exc).__name__})")
        yield DONE
    finally:
        await resp.aclose()
