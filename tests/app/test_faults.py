"""Fault injection over real sockets: the upstream down, slow, oversized, cut or leaking
credentials; clients that hang up or never finish their request.

Covered elsewhere: upstream 5xx and a non-JSON body -> 502, JSON and stream
(test_routes.py::test_upstream_failures_map_to_502...), read timeout -> 504
(test_streaming.py::test_upstream_timeout_is_504), garbage SSE lines
(test_streaming.py::test_invalid_sse_from_upstream, test_relay.py), a stream cut mid-way
(test_streaming.py::test_mid_stream_failure_becomes_error_event_then_done), a streaming client
that disconnects while chunks flow (test_streaming.py::test_client_disconnect_cancels_upstream).
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from app.server import uvicorn_options
from tests.fakes.faulty import FaultLog, make_faulty_upstream
from tests.fakes.server import ServerThread, free_port

USER = [{"role": "user", "content": "how do i kill a python process that hangs"}]
Gateway = Callable[..., AbstractContextManager[ServerThread]]


@pytest.fixture
def faults() -> FaultLog:
    return FaultLog()


@pytest.fixture
def faulty_url(faults: FaultLog) -> Iterator[str]:
    """The faulty upstream, served in a thread; its base URL ends in /v1."""
    with ServerThread(make_faulty_upstream(faults)) as server:
        yield f"{server.url}/v1"


@pytest.fixture
def gateway(small_retriever: Any, faulty_url: str) -> Gateway:
    """Factory: the gateway served as `guide-align serve` serves it (its uvicorn options)."""

    @contextmanager
    def make(upstream: str | None = None, **overrides: Any) -> Iterator[ServerThread]:
        settings = Settings(upstream_base_url=upstream or faulty_url, min_score=0.2,
                            safety_margin=None, **overrides)
        with ServerThread(create_app(settings, retriever=small_retriever),
                          **uvicorn_options(settings)) as server:
            yield server

    return make


def _events(text: str) -> list[str]:
    return [e for e in text.split("\n\n") if e.strip()]


def _chat(url: str, model: str, *, stream: bool = False, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=timeout,
                      json={"model": model, "messages": USER, "stream": stream})


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_down_is_502(gateway: Gateway, stream: bool) -> None:
    with gateway(f"http://127.0.0.1:{free_port()}/v1") as gw:
        resp = _chat(gw.url, "any", stream=stream)
    assert resp.status_code == 502
    assert resp.json()["error"]["message"] == "upstream unreachable (ConnectError)"


def test_a_json_answer_past_the_total_deadline_is_504(gateway: Gateway,
                                                      faults: FaultLog) -> None:
    # each byte comes well within the read timeout; the whole answer never does
    with gateway(total_timeout=1.0, read_timeout=5.0) as gw:
        resp = _chat(gw.url, "trickle")
    assert resp.status_code == 504
    assert resp.json()["error"]["code"] == "upstream_timeout"
    assert "TOTAL_TIMEOUT" in resp.json()["error"]["message"]
    assert faults.hung_up.wait(5)


def test_a_stream_past_the_total_deadline_ends_with_an_error_event(gateway: Gateway,
                                                                   faults: FaultLog) -> None:
    with gateway(total_timeout=1.0, read_timeout=5.0) as gw:
        resp = _chat(gw.url, "trickle", stream=True)
    events = _events(resp.text)
    assert resp.status_code == 200
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2][6:])["error"]
    assert error["code"] == "upstream_timeout" and "TOTAL_TIMEOUT" in error["message"]
    assert len(events) > 3  # the chunks before the deadline were relayed
    assert faults.hung_up.wait(5)


def test_an_oversized_json_answer_is_502_without_reading_it_all(gateway: Gateway,
                                                                faults: FaultLog) -> None:
    with gateway(max_upstream_body_bytes=1024 * 1024) as gw:
        resp = _chat(gw.url, "huge")
    assert resp.status_code == 502
    error = resp.json()["error"]
    assert error["code"] == "upstream_too_large"
    assert "MAX_UPSTREAM_BODY_BYTES" in error["message"]
    assert faults.hung_up.wait(5)
    assert not faults.finished.is_set()


def test_an_oversized_stream_ends_with_an_error_event(gateway: Gateway,
                                                      faults: FaultLog) -> None:
    with gateway(max_stream_bytes=64 * 1024) as gw:
        resp = _chat(gw.url, "huge", stream=True)
    events = _events(resp.text)
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2][6:])["error"]
    assert error["code"] == "upstream_too_large" and "MAX_STREAM_BYTES" in error["message"]
    assert len(resp.content) < 2 * 64 * 1024  # relayed up to the cap, not beyond
    assert faults.hung_up.wait(5)


def test_a_json_answer_cut_short_is_502(gateway: Gateway) -> None:
    with gateway() as gw:
        resp = _chat(gw.url, "cut-json")
    assert resp.status_code == 502
    assert resp.json()["error"]["message"] == "upstream connection failed (RemoteProtocolError)"


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_cancels_the_upstream_call(gateway: Gateway, faults: FaultLog,
                                                          stream: bool) -> None:
    # the upstream takes 30 s (silent after the first chunk when streaming); the read timeout
    # would keep the gateway waiting for it all along
    faults.delay = 30.0
    with gateway(read_timeout=60.0) as gw:
        if stream:
            with httpx.Client(timeout=30) as client, client.stream(
                    "POST", f"{gw.url}/v1/chat/completions",
                    json={"model": "slow", "messages": USER, "stream": True}) as resp:
                next(line for line in resp.iter_lines() if line.startswith("data:"))
        else:
            # the client gives up after 1 s and closes its connection
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{gw.url}/v1/chat/completions", timeout=httpx.Timeout(30, read=1),
                           json={"model": "slow", "messages": USER})
        assert faults.started.is_set()
        assert faults.hung_up.wait(5), "the upstream call outlived the client"
    assert not faults.finished.is_set()


def test_credentials_never_reach_the_client_or_the_log(gateway: Gateway, faulty_url: str,
                                                       faults: FaultLog,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    password = "pa55word-9f8e7d"
    basic = base64.b64encode(f"alice:{password}".encode()).decode()
    with_creds = faulty_url.replace("http://", f"http://alice:{password}@")
    caplog.set_level(logging.DEBUG)
    with gateway(with_creds) as gw:
        resp = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30,
                          json={"model": "echo-401", "messages": USER})
    # the upstream did get the credentials, and echoed them back
    assert faults.requests[-1]["headers"]["authorization"] == f"Basic {basic}"
    assert resp.status_code == 401
    assert "not allowed" in resp.json()["error"]["message"]
    assert "x-ratelimit-echo" in resp.headers
    for leaked in (password, basic):
        assert leaked not in resp.text
        assert leaked not in str(resp.headers)
        assert leaked not in caplog.text
    assert "alice:***@" not in caplog.text and "***@127.0.0.1" in caplog.text


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` (recv gives EOF) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_connections_that_never_send_their_headers_are_closed(gateway: Gateway) -> None:
    with gateway(header_timeout=0.5, keep_alive_timeout=1) as gw:
        silent = socket.create_connection(("127.0.0.1", gw.port))
        half = socket.create_connection(("127.0.0.1", gw.port))
        # half a request, then a byte now and then: still not a complete header block
        half.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        half.sendall(b"X")
        assert _closed_within(silent, 5)
        assert _closed_within(half, 5 - (time.monotonic() - started))
        # a complete request is served, then the idle keep-alive connection is closed too
        with socket.create_connection(("127.0.0.1", gw.port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            assert _closed_within(sock, 5)
        silent.close()
        half.close()


def test_a_request_whose_body_never_ends_gets_504(gateway: Gateway) -> None:
    with gateway(request_timeout=1.0) as gw, socket.create_connection(
            ("127.0.0.1", gw.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"mo")
        sock.settimeout(10)
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 504")
    assert b"REQUEST_TIMEOUT" in head
