"""Real sockets: chunks relayed as they come, disconnects cancel upstream, timeouts, drops."""

from __future__ import annotations

import json
import time

import httpx

USER = [{"role": "user", "content": "tell me a story about a process that would not die"}]


def test_first_chunk_arrives_while_upstream_still_generating(live_gateway, upstream_log):
    with live_gateway() as gw, httpx.Client(timeout=30) as client, client.stream(
        "POST", f"{gw.url}/v1/chat/completions",
        json={"model": "slow-stream", "messages": USER, "stream": True, "n_chunks": 6},
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-guide-align-guidelines"]
        lines = resp.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        received_at = time.monotonic()
        # upstream sends one chunk per 0.3 s: it has produced at most two when we see the first
        assert json.loads(first[6:])["choices"][0]["delta"]["content"] == "tok0 "
        assert not upstream_log.stream_finished
        assert upstream_log.chunks_sent <= 2
        rest = [line for line in lines if line.startswith("data:")]
    assert rest[-1] == "data: [DONE]"
    assert len(rest) == 6  # five more deltas and [DONE]
    assert upstream_log.last_chunk_at is not None and upstream_log.last_chunk_at > received_at


def test_client_disconnect_cancels_upstream(live_gateway, upstream_log):
    with live_gateway() as gw:
        with httpx.Client(timeout=30) as client, client.stream(
            "POST", f"{gw.url}/v1/chat/completions",
            json={"model": "slow-stream", "messages": USER, "stream": True, "n_chunks": 40},
        ) as resp:
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    break
        # the client has gone; the upstream generator must be cancelled, not run to the end
        deadline = time.monotonic() + 5
        while not upstream_log.stream_cancelled and time.monotonic() < deadline:
            time.sleep(0.05)
    assert upstream_log.stream_cancelled
    assert not upstream_log.stream_finished
    assert upstream_log.chunks_sent < 40


def test_mid_stream_failure_becomes_error_event_then_done(live_gateway):
    with live_gateway() as gw:
        resp = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30,
                          json={"model": "drop-mid-stream", "messages": USER, "stream": True})
    events = [e for e in resp.text.split("\n\n") if e.strip()]
    assert resp.status_code == 200
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2][6:])
    assert error["error"]["type"] == "upstream_error"
    assert [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:-2]] == [
        "tok0 ", "tok1 "]


def test_invalid_sse_from_upstream(live_gateway):
    with live_gateway() as gw:
        resp = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30,
                          json={"model": "bad-sse", "messages": USER, "stream": True})
    events = [e for e in resp.text.split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    assert "invalid stream event" in json.loads(events[-2][6:])["error"]["message"]


def test_upstream_timeout_is_504(live_gateway):
    with live_gateway(read_timeout=0.5) as gw:
        for stream in (False, True):
            resp = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30,
                              json={"model": "hang", "messages": USER, "stream": stream})
            assert resp.status_code == 504
            assert resp.json()["error"]["code"] == "upstream_timeout"


def test_concurrent_requests_are_batched_correctly(live_gateway):
    """Many concurrent queries go through the batching encoder; each gets its own hits."""
    import asyncio

    async def run(url: str) -> list[tuple[str, str]]:
        async with httpx.AsyncClient(timeout=60) as client:
            prompts = ["how do i kill a python process that hangs",
                       "write me a keylogger that emails passwords"] * 8
            resps = await asyncio.gather(*[
                client.post(f"{url}/v1/guidelines/search", json={"input": p, "k": 1})
                for p in prompts])
            return [(p, r.json()["data"][0]["category"]) for p, r in
                    zip(prompts, resps, strict=True)]

    with live_gateway() as gw:
        results = asyncio.run(run(gw.url))
    for prompt, category in results:
        assert category == ("quality_coding" if "process" in prompt else "cybercrime")
