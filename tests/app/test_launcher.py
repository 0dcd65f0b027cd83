"""The launcher's warm-up request, against the local fake upstream."""

from __future__ import annotations

import pytest

from app.launcher import LaunchError, warm_up
from tests.fakes.server import free_port


def test_warm_up_sends_one_token_request(live_upstream, upstream_log):  # type: ignore[no-untyped-def]
    seconds = warm_up(f"{live_upstream.url}/v1", model="ok", timeout=10)
    assert seconds >= 0
    assert len(upstream_log.bodies) == 1
    body = upstream_log.bodies[0]
    assert body["max_tokens"] == 1
    assert body["messages"][0]["role"] == "user"


def test_warm_up_reports_upstream_error(live_upstream):  # type: ignore[no-untyped-def]
    with pytest.raises(LaunchError, match="status 500"):
        warm_up(f"{live_upstream.url}/v1", model="error-500", timeout=10)


def test_warm_up_reports_unreachable_server():
    with pytest.raises(LaunchError, match="warm-up request failed"):
        warm_up(f"http://127.0.0.1:{free_port()}/v1", timeout=5)
