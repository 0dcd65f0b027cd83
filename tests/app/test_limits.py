"""Rate limits per caller: requests and tokens per minute (in-process and on a real Redis
server shared by two gateways) and the concurrency cap with its queue timeout."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from app.keys import KeyPolicy, KeyStore
from app.limits import TOKENS, estimate_tokens, metered
from tests.fakes.server import free_port

USER = [{"role": "user", "content": "how do i kill a python process that hangs"}]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def keys_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'keys.sqlite'}"


def _chat(c: Any, token: str | None = None, **extra: Any) -> Any:
    return c.post("/v1/chat/completions", json={"messages": USER, **extra},
                  headers=bearer(token) if token else {})


def test_requests_per_minute_with_openai_headers(gateway):
    with gateway(rpm=2) as c:
        first, second, third = (_chat(c) for _ in range(3))
    assert first.status_code == second.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    # ours replace the upstream's own (the fake upstream says 41)
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.status_code == 429
    err = third.json()["error"]
    assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"
    assert 1 <= int(third.headers["retry-after"]) <= 60
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.headers["x-ratelimit-reset-requests"].endswith("s")


def test_rpm_is_per_key_and_a_key_overrides_the_default(gateway, keys_db):
    store = KeyStore(keys_db, ttl=0)
    _, tight = store.create("tight", KeyPolicy(rpm=1))
    _, other = store.create("other")
    with gateway(keys_db=keys_db, rpm=5) as c:
        assert _chat(c, tight).status_code == 200
        assert _chat(c, tight).status_code == 429
        served = _chat(c, other)
        assert served.status_code == 200
        assert served.headers["x-ratelimit-limit-requests"] == "5"
        assert _chat(c, tight).headers["x-ratelimit-limit-requests"] == "1"


def test_tokens_per_minute_from_the_upstreams_usage(gateway, keys_db):
    store = KeyStore(keys_db, ttl=0)
    _, token = store.create("tpm", KeyPolicy(tpm=5))  # one fake answer uses 5 tokens
    with gateway(keys_db=keys_db) as c:
        first = _chat(c, token)
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-tokens"] == "5"
        assert first.headers["x-ratelimit-remaining-tokens"] == "5"
        refused = _chat(c, token)
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert "tokens per minute" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) >= 1


def test_streams_are_charged_an_estimate(gateway):
    with gateway(tpm=10_000) as c:
        streamed = _chat(c, stream=True)
        assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
        after = _chat(c)
    used = 10_000 - int(after.headers["x-ratelimit-remaining-tokens"])
    # the guided prompt (the user's words and the guidelines) plus "tok0 ".."tok4 "
    assert used >= estimate_tokens(len(USER[0]["content"]) + 25)


async def _events(*events: bytes) -> AsyncIterator[bytes]:
    for event in events:
        yield event


def test_metered_stream_prefers_the_usage_chunk():
    class State:
        pass

    chunk = b'data: {"choices": [{"index": 0, "delta": {"content": "abcdefgh"}}]}\n\n'
    usage = b'data: {"choices": [], "usage": {"total_tokens": 42}}\n\n'
    done = b"data: [DONE]\n\n"

    async def drain(*events: bytes) -> tuple[list[bytes], int]:
        state = State()
        out = [e async for e in metered(_events(*events), state, prompt=8)]
        return out, getattr(state, TOKENS)

    out, tokens = asyncio.run(drain(chunk, usage, done))
    assert out == [chunk, usage, done] and tokens == 42
    assert asyncio.run(drain(chunk, done))[1] == estimate_tokens(16)


# --- concurrency -----------------------------------------------------------------------------


@pytest.fixture
def two_keys(keys_db: str) -> tuple[str, str]:
    store = KeyStore(keys_db, ttl=0)
    return store.create("busy")[1], store.create("calm")[1]


def _hold_stream(url: str, token: str | None, started: threading.Event,
                 finished: threading.Event, chunks: int) -> None:
    """One slow stream, read to the end; ``started`` is set at its first event."""
    body = {"model": "slow-stream", "messages": USER, "stream": True, "n_chunks": chunks}
    with httpx.Client(timeout=30) as client, client.stream(
            "POST", f"{url}/v1/chat/completions", json=body,
            headers=bearer(token) if token else {}) as resp:
        assert resp.status_code == 200
        for _ in resp.iter_lines():
            started.set()
    finished.set()


def _holding(url: str, token: str | None, chunks: int) -> tuple[threading.Thread,
                                                                threading.Event]:
    started, finished = threading.Event(), threading.Event()
    thread = threading.Thread(target=_hold_stream, args=(url, token, started, finished, chunks))
    thread.start()
    assert started.wait(20)
    return thread, finished


def test_a_second_caller_is_served_while_the_first_holds_its_maximum(live_gateway, keys_db,
                                                                     two_keys):
    busy, calm = two_keys
    with live_gateway(keys_db=keys_db, max_concurrency=1, queue_timeout=0.2) as server:
        holder, finished = _holding(server.url, busy, chunks=10)  # about 3 s
        try:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                waited = c.post("/v1/chat/completions", json={"messages": USER},
                                headers=bearer(busy))
                served = c.post("/v1/chat/completions", json={"messages": USER},
                                headers=bearer(calm))
                still_busy = not finished.is_set()
        finally:
            holder.join(30)
    assert still_busy
    assert waited.status_code == 429
    assert waited.json()["error"]["code"] == "concurrency_limit_exceeded"
    assert waited.headers["retry-after"] == "1"
    assert served.status_code == 200


def test_without_keys_the_cap_is_per_address_and_requests_queue(live_gateway):
    with live_gateway(max_concurrency=1, queue_timeout=20) as server:
        holder, finished = _holding(server.url, None, chunks=3)
        try:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                queued = c.post("/v1/chat/completions", json={"messages": USER})
                ended_first = finished.is_set()
        finally:
            holder.join(30)
    assert queued.status_code == 200
    assert ended_first  # it waited for the slot instead of running beside the stream


# --- Redis: one limit for every replica -----------------------------------------------------


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port, no persistence; killed at teardown."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.kill()
        proc.wait()


def test_two_gateways_share_one_rpm_limit_on_redis(gateway, keys_db, redis_url):
    _, token = KeyStore(keys_db, ttl=0).create("shared", KeyPolicy(rpm=3))
    with gateway(keys_db=keys_db, redis_url=redis_url) as a, \
            gateway(keys_db=keys_db, redis_url=redis_url) as b:
        codes = [_chat(c, token).status_code for c in (a, b, a, b, a)]
        remaining = _chat(b, token).headers["x-ratelimit-remaining-requests"]
    assert codes == [200, 200, 200, 429, 429]
    assert remaining == "0"
    assert redis.Redis.from_url(redis_url).keys("LIMITS*")  # the counters live on Redis


def test_in_process_limits_are_per_gateway(gateway, keys_db):
    # the contrast: without Redis each replica counts on its own
    _, token = KeyStore(keys_db, ttl=0).create("split", KeyPolicy(rpm=3))
    with gateway(keys_db=keys_db) as a, gateway(keys_db=keys_db) as b:
        codes = [_chat(c, token).status_code for c in (a, b, a, b, a)]
    assert codes == [200] * 5
