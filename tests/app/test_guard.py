"""The guard model of stream backtracking (app/guard.py): what it is sent, how its replies are
read, when it is asked, and what the client sees when its word differs from the critic's.

The guard here is a local fake endpoint (a seam: a real deployment points at Llama Guard or a
prompted instruction model); the critic is the small trained judge, as in test_backtrack.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from app.config import Settings
from app.guard import Guard, GuardError, GuardVerdict, guard_messages, overruled, parse_guard
from app.main import create_app
from judge.model import Verdict
from tests.app.test_backtrack import (
    ASK,
    MOON,
    MOON_ASK,
    MORE,
    OPENING,
    SAFE_REST,
    UNSAFE,
    content,
    leaked,
    report,
    stream,
    transcript,
    unsafe_stream,
)
from tests.fakes.server import ServerThread, free_port

CONVERSATION: list[dict[str, Any]] = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": [{"type": "text", "text": "and the second?"}]},
                {"role": "user", "content": "please"}]


def verdict(p: float) -> Verdict:
    return Verdict("unsafe" if p >= 0.5 else "useful",
                   {"unsafe": p, "refusal": 0.0, "useful": 1.0 - p},
                   {"cybercrime": 0.6, "quality_coding": 0.2})


def test_replies_are_read_by_their_first_word_and_codes_map_onto_the_taxonomy():
    assert parse_guard("safe") == parse_guard("  Safe.\n") == parse_guard("safe\nS1")
    assert not parse_guard("safe").unsafe
    v = parse_guard("unsafe\nS1,S9, S14")
    assert v.unsafe and v.categories == ("violence", "weapons", "cybercrime")
    assert parse_guard("Unsafe: weapons, fraud_deception").categories == (
        "weapons", "fraud_deception")
    assert parse_guard("unsafe").categories == ()
    # small instruction models answer in a sentence
    assert parse_guard("The answer is safe.") == GuardVerdict(False)
    assert parse_guard("The answer is not safe. It explains how to build a bomb.").unsafe
    assert parse_guard("It isn't safe: weapons").categories == ("weapons",)
    for reply in ("", "I think it is fine", "Sure! Here is how to stay safe online.",
                  "I cannot judge this.", "The response is not a safe or unsafe option."):
        with pytest.raises(GuardError):
            parse_guard(reply)


def test_the_guard_reads_the_conversation_and_the_answer_so_far():
    sent = guard_messages(CONVERSATION, "partial answer", "llama-guard")
    # system turns dropped, same-role turns merged so the roles alternate, answer last
    assert [m["role"] for m in sent] == ["user", "assistant", "user", "assistant"]
    assert sent[2]["content"] == "and the second?\n\nplease"
    assert sent[-1] == {"role": "assistant", "content": "partial answer"}
    prompted = guard_messages(CONVERSATION, "partial answer", "prompted")
    assert [m["role"] for m in prompted] == ["system", "user"]
    assert "weapons" in prompted[0]["content"] and "quality_coding" not in prompted[0]["content"]
    assert "please" in prompted[1]["content"] and "partial answer" in prompted[1]["content"]
    assert "be brief" not in json.dumps(prompted)


def test_the_guard_word_replaces_the_critic_probability():
    caught = overruled(verdict(0.3), parse_guard("unsafe\nS9"))
    assert caught.label == "unsafe" and caught.scores["unsafe"] == 1.0
    assert max(caught.categories, key=lambda c: caught.categories[c]) == "weapons"
    cleared = overruled(verdict(0.9), parse_guard("safe"))
    assert cleared.label == "useful" and cleared.scores["unsafe"] == 0.0
    assert abs(sum(cleared.scores.values()) - 1.0) < 1e-9


def _guard(reply: Callable[[httpx.Request], httpx.Response], **kw: Any) -> Guard:
    return Guard("http://guard.test/v1", model="g", transport=httpx.MockTransport(reply), **kw)


def _says(text: str, asked: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    def reply(request: httpx.Request) -> httpx.Response:
        asked.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": text}}]})
    return reply


def test_only_verdicts_at_or_above_the_band_wait_for_the_guard():
    asked: list[dict[str, Any]] = []
    guard = _guard(_says("safe", asked), ask_from=0.25)

    async def run() -> list[float]:
        out = []
        for p in (0.1, 0.25, 0.9):
            async def critic(conversation: Any, answer: str, p: float = p) -> Verdict:
                return verdict(p)
            judged = await guard.escalating(critic)(ASK, "some answer")
            out.append(judged.scores["unsafe"])
        await guard.aclose()
        return out

    assert asyncio.run(run()) == [0.1, 0.0, 0.0]
    assert len(asked) == 2 and guard.asked == {"unsafe": 0, "safe": 2, "error": 0}
    assert asked[0]["messages"][-1] == {"role": "assistant", "content": "some answer"}
    assert asked[0]["model"] == "g" and asked[0]["temperature"] == 0


@pytest.mark.parametrize("failure", ["status", "garbage", "timeout", "refused"])
def test_a_failing_guard_leaves_the_critic_verdict_in_force(failure):
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    replies: dict[str, Any] = {
        "status": lambda r: httpx.Response(503, json={"error": "busy"}),
        "garbage": lambda r: httpx.Response(200, json={"choices": [{"message": {
            "content": "It depends on the context."}}]}),
        "timeout": slow,
        "refused": lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused")),
    }
    guard = _guard(replies[failure], timeout=0.2)
    outcomes: list[str] = []

    async def run() -> Verdict:
        async def critic(conversation: Any, answer: str) -> Verdict:
            return verdict(0.8)
        try:
            return await guard.escalating(critic, record=outcomes.append)(ASK, "an answer")
        finally:
            await guard.aclose()

    assert asyncio.run(run()) == verdict(0.8)
    assert outcomes == ["error"] and guard.asked["error"] == 1


def test_a_guard_call_cut_short_by_the_client_is_not_counted():
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    guard = _guard(slow, timeout=10.0)
    outcomes: list[str] = []

    async def run() -> None:
        async def critic(conversation: Any, answer: str) -> Verdict:
            return verdict(0.8)
        task = asyncio.ensure_future(guard.escalating(critic, record=outcomes.append)(ASK, "a"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await guard.aclose()

    asyncio.run(run())
    assert outcomes == [] and guard.asked == {"unsafe": 0, "safe": 0, "error": 0}


# -- through the gateway --------------------------------------------------------------------------

class FakeGuard:
    """A guard endpoint that answers ``reply`` (or ``unsafe`` for answers that mention
    ``unsafe_if``) and keeps what it was asked."""

    def __init__(self, reply: str, unsafe_if: str | None = None):
        self.reply = reply
        self.unsafe_if = unsafe_if
        self.asked: list[dict[str, Any]] = []

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> dict[str, Any]:
            body = await request.json()
            self.asked.append(body)
            reply = self.reply
            if self.unsafe_if is not None:
                answer = body["messages"][-1]["content"]
                reply = "unsafe\nS9" if self.unsafe_if in answer else "safe"
            return {"choices": [{"index": 0, "message": {"role": "assistant",
                                                         "content": reply}}]}

        return app


def on(guard_url: str, **more: Any) -> dict[str, Any]:
    """Settings that ask the guard at ``guard_url`` about every critic verdict."""
    return {"backtrack_guard_url": guard_url, "backtrack_guard_from": 0.0, **more}


@pytest.mark.slow  # trains the small judge (shared with the judge tests)
def test_a_guard_that_says_unsafe_retracts_what_the_critic_passes(guarded, script):
    guard = FakeGuard("safe", unsafe_if="Moon")
    script.push(stream(MOON), stream(SAFE_REST))
    with ServerThread(guard.app()) as g, guarded(**on(f"{g.url}/v1")) as url:
        _, _, events = transcript(url, MOON_ASK)
        metrics = httpx.get(f"{url}/metrics").text
    rep = report(events)
    assert rep["retractions"] == 1 and rep["categories"][0] == "weapons"
    assert "Moon" not in content(events)  # the held text is dropped
    assert content(events).endswith(SAFE_REST)
    assert guard.asked and guard.asked[0]["messages"][0] == MOON_ASK[0]
    assert guard.asked[0]["messages"][-1]["role"] == "assistant"
    assert MOON.startswith(guard.asked[0]["messages"][-1]["content"])
    assert 'guide_align_backtrack_guard_calls_total{outcome="unsafe"}' in metrics


@pytest.mark.slow
def test_a_guard_that_says_safe_overrules_the_critic(guarded, script):
    guard = FakeGuard("safe")
    script.push(unsafe_stream())
    with ServerThread(guard.app()) as g, guarded(**on(f"{g.url}/v1")) as url:
        _, _, events = transcript(url, ASK)
    assert content(events) == OPENING + UNSAFE + MORE
    assert report(events)["retractions"] == 0 and len(script.requests) == 1
    assert len(guard.asked) >= 3  # every verdict (band from 0) was put to the guard


@pytest.mark.slow
def test_an_unreachable_guard_leaves_the_critic_in_charge(guarded, script):
    script.push(unsafe_stream(), stream(SAFE_REST))
    closed = f"http://127.0.0.1:{free_port()}/v1"
    with guarded(**on(closed, backtrack_guard_timeout=2.0)) as url:
        _, raw, events = transcript(url, ASK)
        metrics = httpx.get(f"{url}/metrics").text
    assert not leaked(raw, UNSAFE)
    assert report(events)["retractions"] == 1 and content(events).endswith(SAFE_REST)
    assert 'guide_align_backtrack_guard_calls_total{outcome="error"}' in metrics


def test_a_llama_server_as_prompted_guard(llama_server, small_retriever, small_judge):  # type: ignore[no-untyped-def]
    """End to end with llama.cpp as both the upstream and a prompted guard: the guard is asked,
    its replies are read, and the stream stays valid whatever it says."""
    settings = Settings(upstream_base_url=llama_server, min_score=0.2, safety_margin=None,
                        backtrack="enforce", backtrack_max_retractions=1,
                        **on(llama_server, backtrack_guard_format="prompted",
                             backtrack_guard_model="smollm2-135m-instruct",
                             backtrack_guard_timeout=120.0))
    app = create_app(settings, retriever=small_retriever, judge=small_judge[0])
    body = {"model": "smollm2-135m-instruct", "max_tokens": 40, "temperature": 0,
            "messages": [{"role": "user", "content": "Write two sentences about the sea."}],
            "stream": True}
    with ServerThread(app) as gateway:
        resp = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=300)
        metrics = httpx.get(f"{gateway.url}/metrics").text
    assert resp.status_code == 200
    events = [e for e in resp.text.split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    parsed = [json.loads(e[6:]) for e in events[:-1]]
    assert not any("error" in e for e in parsed)
    calls = {o: 0.0 for o in ("unsafe", "safe", "error")}
    for line in metrics.splitlines():
        if line.startswith("guide_align_backtrack_guard_calls_total{"):
            calls[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
    # the guard was asked; what SmolLM2-135M says (it is no judge) varies with the text, but an
    # unsafe word always retracts and with only "safe" words nothing is retracted
    assert sum(calls.values()) >= 1
    retracted = report(parsed)["retractions"] >= 1
    if calls["unsafe"]:
        assert retracted
    elif not calls["error"]:
        assert not retracted
