"""The SSE relay and header edge cases that real upstreams and libraries produce."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator

import httpx
from starlette.testclient import TestClient

from app.config import Settings
from app.gateway import guidance_headers, header_token
from app.main import create_app
from app.upstream import relay_sse
from guide.step import Guidance
from retriever.types import Hit

CHUNK = b'data: {"choices": [{"delta": {"content": "hi"}}]}'


def relay(parts: list[bytes], headers: dict[str, str] | None = None) -> list[bytes]:
    """What relay_sse yields for an upstream body sent in ``parts``."""

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    async def go() -> list[bytes]:
        transport = httpx.MockTransport(
            lambda request: httpx.Response(200, headers=headers or {}, content=body()))
        async with httpx.AsyncClient(transport=transport) as client:
            resp = await client.send(client.build_request("POST", "http://u.test/"), stream=True)
            return [event async for event in relay_sse(resp)]

    return asyncio.run(go())


def data_lines(events: list[bytes]) -> list[str]:
    return [ln for e in events for ln in e.decode().splitlines() if ln.startswith("data:")]


def test_crlf_split_across_reads_keeps_events_apart():
    events = relay([CHUNK + b"\r\n\r", b"\n" + CHUNK + b"\r\n\r\n", b"data: [DONE]\r\n\r\n"])
    lines = data_lines(events)
    assert len(lines) == 3 and lines[-1] == "data: [DONE]"
    assert all(json.loads(ln[5:])["choices"] for ln in lines[:2])


def test_done_without_a_trailing_blank_line_is_relayed():
    lines = data_lines(relay([CHUNK + b"\n\n", b"data: [DONE]\n"]))
    assert lines == [CHUNK.decode(), "data: [DONE]"]


def test_a_compressed_stream_is_decoded():
    body = gzip.compress(CHUNK + b"\n\n" + b"data: [DONE]\n\n")
    lines = data_lines(relay([body[:10], body[10:]], headers={"content-encoding": "gzip"}))
    assert lines == [CHUNK.decode(), "data: [DONE]"]


def test_header_values_stay_latin1_for_any_category_name():
    hits = [Hit(id="g_1", text="t", category="安全", kind="safety", score=0.9),
            Hit(id="g_2", text="t", category="quality_coding", kind="quality", score=0.8)]
    headers = guidance_headers(Guidance(hits=hits, messages=[]))
    for value in headers.values():
        value.encode("latin-1")
    assert headers["x-guide-align-categories"].endswith(",quality_coding")
    assert header_token("quality_coding") == "quality_coding"


def test_readyz_counts_an_upstream_that_wants_the_clients_key_as_reachable(small_retriever):
    transport = httpx.MockTransport(lambda request: httpx.Response(
        401, json={"error": {"message": "missing key", "type": "auth"}}))
    settings = Settings(upstream_base_url="http://upstream.test/v1")
    app = create_app(settings, retriever=small_retriever, transport=transport)
    with TestClient(app) as client:
        resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.json()["checks"]["upstream_status"] == 401


def test_readyz_is_not_ready_when_the_gateways_own_key_is_refused(small_retriever):
    transport = httpx.MockTransport(lambda request: httpx.Response(
        401, json={"error": {"message": "bad key", "type": "auth"}}))
    settings = Settings(upstream_base_url="http://upstream.test/v1", upstream_api_key="sk-x")
    app = create_app(settings, retriever=small_retriever, transport=transport)
    with TestClient(app) as client:
        resp = client.get("/readyz")
    assert resp.status_code == 503


def test_an_endless_event_is_cut_off_with_an_error():
    from app.upstream import MAX_EVENT_BYTES

    blob = b"data: " + b"x" * 65536
    events = relay([blob] * (MAX_EVENT_BYTES // 65536 + 2) + [b"\n\n"])
    lines = data_lines(events)
    assert "over" in json.loads(lines[0][5:])["error"]["message"]
    assert lines[-1] == "data: [DONE]" and len(lines) == 2
