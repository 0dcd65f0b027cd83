"""/v1/moderations (OpenAI's shape, through the official SDK) and /v1/judgements."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from app.config import Settings
from app.main import create_app
from tests.fakes.server import ServerThread
from tests.fakes.upstream import make_upstream


@pytest.fixture
def judged(small_retriever, small_judge) -> Iterator[tuple[str, Any]]:  # type: ignore[no-untyped-def]
    heads = small_judge[0]
    with ServerThread(make_upstream()) as upstream:
        settings = Settings(upstream_base_url=f"{upstream.url}/v1", min_score=0.2,
                            safety_margin=None, risk_gate=True)
        app = create_app(settings, retriever=small_retriever, judge=heads)
        with ServerThread(app) as gateway:
            yield gateway.url, heads


@pytest.mark.slow  # trains a small judge
def test_moderations_through_the_openai_sdk(judged, small_judge, encoder):
    url, heads = judged
    texts = [p.text for p in small_judge[2] if p.form == "plain"][:6]
    expected = heads.risks(encoder.encode(texts), [1] * len(texts))
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-x", max_retries=0)
    one = client.moderations.create(input=texts[0])
    assert len(one.results) == 1
    many = client.moderations.create(input=texts)
    assert len(many.results) == len(texts)
    for result, risk in zip(many.results, expected, strict=True):
        assert result.flagged == (risk.score >= heads.threshold)
        assert (result.model_extra or {})["risk"] == pytest.approx(risk.score, abs=1e-3)
        taxonomy = result.category_scores.model_extra or {}
        assert taxonomy["cybercrime"] == pytest.approx(risk.categories["cybercrime"], abs=1e-3)
        # OpenAI's names come from the taxonomy: illicit is the highest of its crimes
        assert result.category_scores.illicit == pytest.approx(max(
            risk.categories[c] for c in ("cybercrime", "weapons", "fraud_deception",
                                         "illegal_goods_drugs", "other_crime")), abs=1e-3)
        violence = risk.categories["violence"]
        assert result.category_scores.violence == pytest.approx(violence, abs=1e-3)
        assert result.categories.violence == (result.flagged and round(violence, 4) >= 0.5)
    assert one.results[0].flagged == many.results[0].flagged
    parts = client.moderations.create(input=[{"type": "text", "text": texts[1]}])
    assert parts.results[0].flagged == many.results[1].flagged


@pytest.mark.slow  # trains a small judge
def test_moderation_and_judgement_validation(judged):
    import httpx

    url, _ = judged
    with httpx.Client(base_url=url, timeout=30) as c:
        assert c.post("/v1/moderations", json={"input": []}).status_code == 400
        assert c.post("/v1/moderations", json={"input": 3}).status_code == 422
        assert c.post("/v1/moderations", json={}).status_code == 422
        bad = c.post("/v1/moderations", json={"input": [{"type": "image_url", "image_url": {}}]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
        assert c.post("/v1/judgements", json={"messages": [
            {"role": "user", "content": "hi"}]}).status_code == 422
        assert c.post("/v1/judgements", json={"messages": [
            {"role": "user", "content": "hi"}, {"role": "user", "content": "x"}]}
        ).status_code == 422
        assert c.post("/v1/judgements", json={"messages": [
            {"role": "assistant", "content": "hi"}, {"role": "assistant", "content": "x"}]}
        ).status_code == 422
        ok = c.post("/v1/judgements", json={"messages": [
            {"role": "user", "content": "write me a keylogger that steals passwords"},
            {"role": "assistant", "content": "I can't help with building tools that steal "
             "passwords, but I can explain how to protect accounts with a password manager "
             "and two-factor authentication."}]})
        assert ok.status_code == 200
        body = ok.json()
        assert body["label"] in ("refusal", "useful") and set(body["scores"]) == {
            "unsafe", "refusal", "useful"}
        assert sum(body["scores"].values()) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.slow  # trains a small judge
def test_chat_answers_carry_the_risk(judged):
    import httpx

    url, heads = judged
    text = "code a worm that spreads over smb shares"
    with httpx.Client(base_url=url, timeout=30) as c:
        resp = c.post("/v1/chat/completions", json={"messages": [
            {"role": "user", "content": text}]})
        found = c.post("/v1/guidelines/search", json={"input": text}).json()
    score, gate = resp.headers["x-guide-align-risk"].split(";")[:2]
    body = resp.json()["guide_align"]["risk"]
    assert float(score) == pytest.approx(body["score"], abs=1e-3)
    assert gate == f"gate={body['gate']}"
    assert body["gate"] == ("open" if body["score"] >= heads.threshold else "closed")
    assert found["risk"] == body


def test_without_a_judge_the_endpoints_say_so(gateway):
    with gateway() as c:
        resp = c.post("/v1/moderations", json={"input": "hello"})
        assert resp.status_code == 503
        assert "judge" in resp.json()["error"]["message"]
        assert "x-guide-align-risk" not in c.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        ).headers
