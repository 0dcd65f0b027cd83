"""Gateway fixtures: the app in front of a real local fake upstream (in-process or threaded)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.fakes.server import ServerThread
from tests.fakes.stream_script import StreamScript
from tests.fakes.upstream import UpstreamLog, make_upstream

SECRET = "sk-upstream-secret-123456"


@pytest.fixture
def upstream_log() -> UpstreamLog:
    return UpstreamLog()


@pytest.fixture
def gateway(small_retriever, upstream_log) -> Callable[..., Any]:  # type: ignore[no-untyped-def]
    """Factory: a TestClient over the gateway, upstream reached through ASGITransport; pass
    ``judge`` (e.g. ``small_judge[0]``) to serve moderations and judgements."""

    @contextmanager
    def make(judge: Any = None, **overrides: Any) -> Iterator[TestClient]:
        settings = Settings(**{"upstream_base_url": "http://upstream.test/v1", "min_score": 0.2,
                               "safety_margin": None, **overrides})
        transport = httpx.ASGITransport(app=make_upstream(upstream_log))
        app = create_app(settings, retriever=small_retriever, judge=judge, transport=transport)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client

    return make


@pytest.fixture
def live_upstream(upstream_log) -> Iterator[ServerThread]:  # type: ignore[no-untyped-def]
    """The fake upstream served by uvicorn in a thread (real sockets, real streaming)."""
    with ServerThread(make_upstream(upstream_log)) as server:
        yield server


@pytest.fixture
def live_gateway(small_retriever, live_upstream) -> Callable[..., Any]:  # type: ignore[no-untyped-def]
    """Factory: the gateway served by uvicorn in a thread in front of ``live_upstream``."""

    @contextmanager
    def make(**overrides: Any) -> Iterator[ServerThread]:
        settings = Settings(upstream_base_url=f"{live_upstream.url}/v1", min_score=0.2,
                            safety_margin=None, **overrides)
        with ServerThread(create_app(settings, retriever=small_retriever)) as server:
            yield server

    return make


@pytest.fixture
def script() -> StreamScript:
    return StreamScript()


@pytest.fixture
def guarded(small_retriever, small_judge, script) -> Callable[..., Any]:  # type: ignore[no-untyped-def]
    """Factory: the gateway (threaded uvicorn) with the small judge as the critic of
    backtracking (tests/app/test_backtrack.py), before ``script``."""

    @contextmanager
    def make(**overrides: Any) -> Iterator[str]:
        options = {"backtrack": "enforce", "backtrack_threshold": 0.47, "backtrack_window": 8,
                   **overrides}
        with ServerThread(script.app()) as upstream:
            settings = Settings(upstream_base_url=f"{upstream.url}/v1", min_score=0.2,
                                safety_margin=None, **options)
            app = create_app(settings, retriever=small_retriever, judge=small_judge[0])
            with ServerThread(app) as gateway:
                yield gateway.url

    return make
