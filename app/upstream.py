"""The upstream LLM client: pooled httpx, honest error mapping, SSE relaying."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from typing import Any, TypeVar

import anyio
import httpx
import orjson

from app.config import Settings
from app.errors import (
    ClientClosedRequest,
    GatewayError,
    UpstreamClientError,
    UpstreamError,
    UpstreamTimeout,
    error_body,
)
from app.scrub import Scrubber, scrub_data, settings_secrets

log = logging.getLogger(__name__)
T = TypeVar("T")

DONE = b"data: [DONE]\n\n"
# An upstream error body is a short JSON object; more than this is not read.
MAX_ERROR_BYTES = 64 * 1024
# How long closing an upstream response may take once its caller has been cancelled.
CLOSE_GRACE = 5.0


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
            max_keepalive_connections=min(settings.max_keepalive_connections,
                                          settings.max_connections),
            keepalive_expiry=settings.keepalive_expiry,
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
        self.total_timeout = settings.total_timeout
        self.max_body_bytes = settings.max_upstream_body_bytes
        self.max_stream_bytes = settings.max_stream_bytes
        # Never echo a credential back (the upstream key, the base URL's, the client's own),
        # even if the upstream does.
        self._scrub = Scrubber(settings_secrets(settings))

    def deadline(self) -> float:
        """The monotonic time by which a call started now must have finished."""
        return time.monotonic() + self.total_timeout

    def _timed_out(self) -> UpstreamTimeout:
        return UpstreamTimeout(f"upstream did not finish within {self.total_timeout:g} s "
                               "(TOTAL_TIMEOUT)")

    def _headers(self, auth: str | None) -> dict[str, str]:
        # The client's own credentials go upstream only when the gateway has none configured.
        if auth and self._secret is None:
            return {"authorization": auth}
        return {}

    def _map_transport_error(self, exc: httpx.HTTPError) -> GatewayError:
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(f"upstream timed out ({type(exc).__name__})")
        if isinstance(exc, httpx.ConnectError):
            return UpstreamError(f"upstream unreachable ({type(exc).__name__})")
        return UpstreamError(f"upstream connection failed ({type(exc).__name__})")

    async def _check_status(self, resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        raw, _ = await read_capped(resp, MAX_ERROR_BYTES)
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
        scrubbed = scrub_data(body, self._scrub)  # string by string: the JSON stays valid
        headers = {k: self._scrub(v) for k, v in relayed_headers(resp).items()}
        raise UpstreamClientError(resp.status_code, scrubbed, headers=headers)

    async def _fetch(self, request: httpx.Request) -> tuple[httpx.Response, bytes]:
        """Send ``request`` and read its body within the total deadline and the size cap;
        the response is closed on return, and promptly when the caller is cancelled."""
        try:
            with anyio.fail_after(self.total_timeout):
                resp = await self.client.send(request, stream=True)
                try:
                    await self._check_status(resp)
                    raw, whole = await read_capped(resp, self.max_body_bytes)
                finally:
                    with anyio.move_on_after(CLOSE_GRACE, shield=True):
                        await resp.aclose()
        except TimeoutError:
            raise self._timed_out() from None
        except httpx.HTTPError as exc:
            raise self._map_transport_error(exc) from None
        if not whole:
            raise UpstreamError(f"upstream response is larger than {self.max_body_bytes} bytes "
                                "(MAX_UPSTREAM_BODY_BYTES)", code="upstream_too_large")
        return resp, raw

    async def get_json(self, path: str, *, auth: str | None = None,
                       timeout: float | None = None) -> Any:
        """GET a JSON document (used for /models and readiness)."""
        request = self.client.build_request(
            "GET", path, headers=self._headers(auth),
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        _, raw = await self._fetch(request)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError("upstream sent a body that is not valid JSON") from None

    async def chat(self, body: dict[str, Any], *, auth: str | None = None,
                   headers_out: dict[str, str] | None = None) -> dict[str, Any]:
        """A non-streaming chat completion; ``headers_out`` receives the relayed headers."""
        request = self.client.build_request(
            "POST", "/chat/completions", content=orjson.dumps(body),
            headers={"content-type": "application/json", **self._headers(auth)},
        )
        resp, raw = await self._fetch(request)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError("upstream sent a body that is not valid JSON") from None
        if not isinstance(data, dict):
            raise UpstreamError("upstream sent JSON that is not an object")
        if headers_out is not None:
            headers_out.update({k: self._scrub(v) for k, v in relayed_headers(resp).items()})
        return data

    async def open_stream(self, body: dict[str, Any], *, auth: str | None = None,
                          deadline: float | None = None) -> httpx.Response:
        """Send a streaming request; returns the open response once its status is known good.

        ``deadline`` (monotonic) bounds the wait for it; by default the total timeout from now.
        """
        request = self.client.build_request(
            "POST", "/chat/completions", content=orjson.dumps(body),
            headers={"content-type": "application/json", "accept": "text/event-stream",
                     "accept-encoding": "identity", **self._headers(auth)},
        )
        try:
            with anyio.fail_after(max(0.0, (deadline or self.deadline()) - time.monotonic())):
                resp = await self.client.send(request, stream=True)
        except TimeoutError:
            raise self._timed_out() from None
        except httpx.HTTPError as exc:
            raise self._map_transport_error(exc) from None
        try:
            await self._check_status(resp)
        except BaseException:
            with anyio.move_on_after(CLOSE_GRACE, shield=True):
                await resp.aclose()
            raise
        return resp

    def relay(self, resp: httpx.Response, *, deadline: float | None = None)\
            -> AsyncIterator[bytes]:
        """``relay_sse`` under this upstream's stream cap and total deadline (default: the
        total timeout from now)."""
        return relay_sse(resp, deadline=deadline or self.deadline(),
                         max_bytes=self.max_stream_bytes, total_timeout=self.total_timeout)


async def read_capped(resp: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the (decoded) body, and whether that was all of it."""
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit and "content-encoding" not in resp.headers:
        return b"", False
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > limit:
            return b"".join(chunks), False
        chunks.append(chunk)
    return b"".join(chunks), True


async def until_disconnected(receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
                             call: Awaitable[T]) -> T:
    """Await ``call``, cancelling it if the client disconnects first (ClientClosedRequest).

    ``receive`` is the request's ASGI receive; call this only once the body has been read.
    """
    result: list[T] = []
    failed: list[Exception] = []
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            result.append(await call)
        except Exception as exc:  # raised outside the task group, so it is not wrapped
            failed.append(exc)
        tg.cancel_scope.cancel()
    if failed:
        raise failed[0]
    if not result:
        raise ClientClosedRequest("the client closed the connection before the answer")
    return result[0]


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


def sse_events(data: bytes) -> Iterator[dict[str, Any]]:
    """The JSON objects in the ``data:`` lines of relayed SSE bytes ([DONE] and junk skipped)."""
    for line in data.split(b"\n"):
        if line.startswith(b"data:") and line[5:].strip() not in (b"", b"[DONE]"):
            try:
                event = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                yield event


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


async def _next_chunk(it: AsyncIterator[bytes], deadline: float | None,
                      read_timeout: float | None) -> bytes | None:
    """The next decoded body chunk (None at the end); TimeoutError once ``deadline`` passes."""
    remaining = None if deadline is None else deadline - time.monotonic()
    if remaining is None or (read_timeout is not None and remaining > read_timeout):
        # the read timeout fires first: no cancel scope needed (one costs ~0.1 ms a chunk)
        return await anext(it, None)
    # the scope covers one read only: it never spans a yield
    with anyio.fail_after(max(0.0, remaining)):
        return await anext(it, None)


async def relay_sse(resp: httpx.Response, *, deadline: float | None = None,
                    max_bytes: int | None = None, total_timeout: float | None = None)\
        -> AsyncIterator[bytes]:
    """Yield each upstream SSE event as soon as it is complete; end with exactly one [DONE].

    Transport failures, invalid events, a stream past ``max_bytes`` or past ``deadline``
    (monotonic) become an SSE error event followed by [DONE]. The upstream response is closed
    when the consumer stops (e.g. the client disconnected).
    """
    buf = b""
    done = False
    size = 0
    try:
        chunks = aiter(resp.aiter_bytes())  # decoded, should the upstream compress
        read_timeout = resp.request.extensions.get("timeout", {}).get("read")
        while (chunk := await _next_chunk(chunks, deadline, read_timeout)) is not None:
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                yield sse_error(f"upstream stream is longer than {max_bytes} bytes "
                                "(MAX_STREAM_BYTES)", code="upstream_too_large")
                yield DONE
                return
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
    except TimeoutError:
        limit = f" of {total_timeout:g} s" if total_timeout else ""
        yield sse_error(f"upstream stream exceeded the total deadline{limit} (TOTAL_TIMEOUT)",
                        code="upstream_timeout")
        yield DONE
    except httpx.HTTPError as exc:
        yield sse_error(f"upstream stream failed ({type(exc).__name__})")
        yield DONE
    except Exception as exc:  # never let a relay bug turn into a torn connection
        log.exception("stream relay failed")
        yield sse_error(f"stream relay failed ({type(exc).__name__})")
        yield DONE
    finally:
        # shielded: a cancelled consumer (the client went away) must still free the upstream
        with anyio.move_on_after(CLOSE_GRACE, shield=True):
            await resp.aclose()
