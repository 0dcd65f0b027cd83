"""The answer's guidance details list the guideline texts when the client asks for them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.fakes.upstream import UpstreamLog, make_upstream

MESSAGES = [{"role": "user", "content": "how do i kill a python process that hangs"}]


def answer(small_retriever: Any, options: dict[str, Any] | None) -> httpx.Response:
    settings = Settings(upstream_base_url="http://upstream.test/v1", min_score=0.2,
                        safety_margin=None)
    app = create_app(settings, retriever=small_retriever,
                     transport=httpx.ASGITransport(app=make_upstream(UpstreamLog())))
    body: dict[str, Any] = {"model": "ok", "messages": MESSAGES}
    if options is not None:
        body["guide_align"] = options
    with TestClient(app, raise_server_exceptions=False) as client:
        return client.post("/v1/chat/completions", json=body)


def test_full_details_include_each_guideline_text(small_retriever):
    resp = answer(small_retriever, {"details": "full"})
    assert resp.status_code == 200
    listed = resp.json()["guide_align"]["guidelines"]
    texts = {g.id: g.text for g in small_retriever.library.guidelines}
    assert listed and all(g["text"] == texts[g["id"]] for g in listed)
    assert [g["id"] for g in listed] == resp.headers["x-guide-align-guidelines"].split(",")
    assert "details" not in resp.json()["guide_align"].get("ignored", [])


@pytest.mark.parametrize("options", [None, {"details": "ids"}])
def test_by_default_details_list_ids_only(small_retriever, options):
    listed = answer(small_retriever, options).json()["guide_align"]["guidelines"]
    assert listed and all("text" not in g for g in listed)


def test_an_unknown_details_value_is_a_422(small_retriever):
    resp = answer(small_retriever, {"details": "everything"})
    assert resp.status_code == 422
    assert "details" in resp.json()["error"]["message"]
