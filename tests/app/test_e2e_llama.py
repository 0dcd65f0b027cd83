"""End to end: the real llama.cpp server with SmolLM2 behind the gateway."""

from __future__ import annotations

import json

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from tests.fakes.server import ServerThread

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def e2e_gateway(llama_server, small_retriever):  # type: ignore[no-untyped-def]
    settings = Settings(upstream_base_url=llama_server, min_score=0.2, safety_margin=None)
    with ServerThread(create_app(settings, retriever=small_retriever)) as server:
        yield server.url


def test_answer_arrives_with_guidelines(e2e_gateway):
    resp = httpx.post(f"{e2e_gateway}/v1/chat/completions", timeout=120, json={
        "model": "smollm2-135m-instruct", "max_tokens": 24, "temperature": 0,
        "messages": [{"role": "user", "content": "How do I kill a Python process that hangs?"}]})
    assert resp.status_code == 200
    body = resp.json()
    assert body["choices"][0]["message"]["content"].strip()
    assert resp.headers["x-guide-align-guidelines"]
    assert "quality_coding" in resp.headers["x-guide-align-categories"]
    assert body["guide_align"]["guidelines"]
    assert body["usage"]["prompt_tokens"] > 60  # the guideline system message reached the model


def test_streaming_from_llama(e2e_gateway):
    deltas = []
    with httpx.stream("POST", f"{e2e_gateway}/v1/chat/completions", timeout=120, json={
        "model": "smollm2-135m-instruct", "max_tokens": 24, "stream": True, "temperature": 0,
        "messages": [{"role": "user", "content": "Write one sentence about the sea."}]},
    ) as resp:
        assert resp.status_code == 200
        assert "x-guide-align-guidelines" in resp.headers  # present even when nothing matched
        lines = [ln for ln in resp.iter_lines() if ln.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        chunk = json.loads(line[6:])
        deltas.append(chunk["choices"][0]["delta"].get("content") or "")
    assert len(lines) > 3
    assert "".join(deltas).strip()


def test_models_and_ready_through_gateway(e2e_gateway):
    assert httpx.get(f"{e2e_gateway}/readyz", timeout=30).status_code == 200
    models = httpx.get(f"{e2e_gateway}/v1/models", timeout=30).json()
    assert models["data"][0]["id"] == "smollm2-135m-instruct"


def test_warm_up_against_llama(llama_server):  # type: ignore[no-untyped-def]
    from app.launcher import warm_up

    assert warm_up(llama_server, timeout=120) > 0
