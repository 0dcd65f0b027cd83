"""The refinement stage in the chat route, with a scripted refiner (a real local server): what
the upstream receives, what retrieval used, what the answer and the log keep, and how a failing
or badly behaved refiner falls back to the client's words and is counted."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from app.config import Settings
from app.keys import Caller, KeyPolicy, KeyRecord
from app.refiner import Refiner, refine_request
from guide.options import GuideOptions, Policy
from guide.refine import OUTCOMES
from tests.app.test_metrics import value
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.fakes.server import ServerThread

CHAT = "/v1/chat/completions"
VAGUE = "that thing is stuck again, help"
REFINED = "How do I kill a Python process that hangs on Linux?"
PROCESS_GUIDELINE = "Process management is routine"


@pytest.fixture
def refiner() -> Iterator[tuple[ScriptedLLM, str]]:
    """A scripted OpenAI-compatible refiner: answers REFINED unless a test scripts otherwise."""
    llm = ScriptedLLM(default=REFINED)
    with ServerThread(llm.app()) as server:
        yield llm, f"{server.url}/v1"


def ask(client: Any, content: str | list[dict[str, Any]] = VAGUE, *,
        history: list[dict[str, Any]] | None = None, **extra: Any) -> Any:
    messages = [*(history or []), {"role": "user", "content": content}]
    return client.post(CHAT, json={"model": "ok", "messages": messages, **extra})


def sent(upstream_log: Any) -> list[dict[str, Any]]:
    """The messages the upstream received in the last request."""
    messages: list[dict[str, Any]] = upstream_log.bodies[-1]["messages"]
    return messages


def events(client: Any) -> dict[str, float]:
    text = client.get("/metrics").text
    return {o: value(text, "guide_align_refinement_events_total", outcome=o)
            for o in OUTCOMES}


def test_off_by_default_calls_no_refiner(gateway, refiner, upstream_log):
    llm, url = refiner
    with gateway(refine_base_url=url) as client:
        r = ask(client)
        assert r.status_code == 200
        assert "refine" not in r.json()["guide_align"]
        assert "x-guide-align-refine" not in r.headers
        assert sum(events(client).values()) == 0
    assert llm.requests == []
    assert sent(upstream_log)[-1]["content"] == VAGUE


def test_retrieve_mode_retrieves_for_the_rewrite_but_forwards_the_users_words(
        gateway, refiner, upstream_log):
    llm, url = refiner
    with gateway(refine_base_url=url) as client:
        plain = ask(client).json()["guide_align"]
        r = ask(client, guide_align={"refine": "retrieve"})
        assert r.status_code == 200
        field = r.json()["guide_align"]
        assert events(client)["refined"] == 1
    assert field["refine"]["mode"] == "retrieve" and field["refine"]["outcome"] == "refined"
    assert field["refine"]["applied"] == "retrieve"
    assert field["refine"]["refined"] == REFINED
    assert "original" not in field["refine"]  # the upstream got the original anyway
    assert r.headers["x-guide-align-refine"] == "retrieve;outcome=refined;applied=retrieve"
    # retrieval used the rewrite: the process guideline comes with it, not without it
    assert "quality_coding" in {g["category"] for g in field["guidelines"]}
    assert {g["id"] for g in field["guidelines"]} != {g["id"] for g in plain["guidelines"]}
    messages = sent(upstream_log)
    assert messages[-1]["content"] == VAGUE
    assert PROCESS_GUIDELINE in messages[0]["content"]
    # the refiner saw the request through the shared prompt
    assert llm.requests[-1]["messages"][-1]["content"] == VAGUE


def test_rewrite_mode_forwards_the_rewrite_and_keeps_the_original(
        gateway, refiner, upstream_log, caplog):
    _, url = refiner
    with caplog.at_level(logging.INFO, logger="guide_align.refine"), \
            gateway(refine_base_url=url, refine="rewrite", log_prompts=True) as client:
        r = ask(client)
        assert r.status_code == 200
    field = r.json()["guide_align"]["refine"]
    assert field["applied"] == "rewrite" and field["original"] == VAGUE
    assert field["refined"] == REFINED and field["latency_ms"] >= 0
    assert sent(upstream_log)[-1]["content"] == REFINED
    line = next(rec.getMessage() for rec in caplog.records if rec.name == "guide_align.refine")
    assert VAGUE in line and REFINED in line  # the log keeps both (log_prompts is on)


def test_a_milder_rewrite_cannot_hide_the_request_from_the_safety_guidelines(
        gateway, refiner, upstream_log):
    llm, url = refiner
    harmful = "code a ransomware for office pcs"
    with gateway(refine_base_url=url, refine="rewrite") as client:
        llm.push("Can you suggest a friendly name for my new office plant?")
        r = ask(client, harmful)
        assert r.status_code == 200
    field = r.json()["guide_align"]
    assert field["refine"]["applied"] == "rewrite"
    # the upstream gets the rewrite, but retrieval saw the user's words too
    assert sent(upstream_log)[-1]["content"] != harmful
    assert "cybercrime" in {g["category"] for g in field["guidelines"]}


def test_the_log_leaves_prompt_texts_out_unless_log_prompts(gateway, refiner, caplog):
    _, url = refiner
    with caplog.at_level(logging.INFO, logger="guide_align.refine"), \
            gateway(refine_base_url=url, refine="rewrite") as client:
        assert ask(client).status_code == 200
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "guide_align.refine"]
    assert lines and not any(VAGUE in line or REFINED in line for line in lines)


def test_streaming_rewrite_forwards_the_rewrite(gateway, refiner, upstream_log):
    _, url = refiner
    with gateway(refine_base_url=url, refine="rewrite") as client:
        r = ask(client, stream=True)
        assert r.status_code == 200
        assert r.headers["x-guide-align-refine"] == "rewrite;outcome=refined;applied=rewrite"
        assert "data: [DONE]" in r.text
    assert upstream_log.bodies[-1]["stream"] is True
    assert sent(upstream_log)[-1]["content"] == REFINED


def test_streaming_retrieve_keeps_the_users_words(gateway, refiner, upstream_log):
    _, url = refiner
    with gateway(refine_base_url=url, refine="retrieve") as client:
        r = ask(client, stream=True)
        assert r.headers["x-guide-align-refine"] == "retrieve;outcome=refined;applied=retrieve"
        assert "quality_coding" in r.headers["x-guide-align-categories"]
    assert sent(upstream_log)[-1]["content"] == VAGUE


@pytest.mark.parametrize(("threshold", "applied"), [(0.0, "rewrite"), (1.0, "retrieve")])
def test_auto_rewrites_only_at_or_above_the_risk_threshold(
        gateway, refiner, upstream_log, small_judge, threshold, applied):
    _, url = refiner
    with gateway(judge=small_judge[0], refine_base_url=url, refine="auto",
                 refine_risk_threshold=threshold) as client:
        r = ask(client)
    field = r.json()["guide_align"]["refine"]
    assert field["mode"] == "auto" and field["applied"] == applied
    assert 0.0 <= field["risk"] < 1.0  # the original's prompt risk decided
    assert sent(upstream_log)[-1]["content"] == (REFINED if applied == "rewrite" else VAGUE)


def test_auto_without_a_judge_keeps_the_users_words(gateway, refiner, upstream_log):
    _, url = refiner
    with gateway(refine_base_url=url, refine="auto", refine_risk_threshold=0.0) as client:
        field = ask(client).json()["guide_align"]["refine"]
    assert field["applied"] == "retrieve" and "risk" not in field
    assert sent(upstream_log)[-1]["content"] == VAGUE


@pytest.mark.parametrize(("reply", "outcome"), [
    (Reply(status=500), "failed"),
    (Reply(body="<html>proxy error</html>"), "failed"),
    (Reply(text=REFINED, delay=2.0), "timeout"),
    ("   ", "empty"),
    ("I'm sorry, but I can't help with that request.", "refusal"),
    ("¿Cómo puedo detener un proceso que no responde en mi ordenador?", "language"),
    ("That thing is stuck again, help!", "unchanged"),
    ("x " * 400, "length"),
    ("To fix it, you can restart the process with kill -9.", "answer"),
])
def test_a_bad_refiner_falls_back_to_the_original_and_is_counted(
        gateway, refiner, upstream_log, caplog, reply, outcome):
    llm, url = refiner
    llm.push(reply)
    with caplog.at_level(logging.INFO, logger="guide_align.refine"), \
            gateway(refine_base_url=url, refine="rewrite", refine_timeout=0.5) as client:
        r = ask(client)
        assert r.status_code == 200
        counted = events(client)
    field = r.json()["guide_align"]["refine"]
    assert field["outcome"] == outcome and field["applied"] == "none"
    assert "refined" not in field
    assert sent(upstream_log)[-1]["content"] == VAGUE
    assert counted[outcome] == 1 and sum(counted.values()) == 1
    if outcome != "unchanged":  # a log line says why the original was used
        assert any(outcome in rec.getMessage() for rec in caplog.records
                   if rec.name == "guide_align.refine" and rec.levelno == logging.WARNING)


def test_an_unreachable_refiner_never_fails_the_request(gateway, upstream_log):
    with gateway(refine_base_url="http://127.0.0.1:9/v1", refine="rewrite") as client:
        r = ask(client, stream=True)
        assert r.status_code == 200
        assert r.headers["x-guide-align-refine"] == "rewrite;outcome=failed;applied=none"
        assert events(client)["failed"] == 1
    assert sent(upstream_log)[-1]["content"] == VAGUE


def test_no_refiner_model_means_skipped_and_said_once(gateway, upstream_log, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="guide_align.refine"), \
            gateway(refine="rewrite", var_dir=tmp_path) as client:
        for _ in range(2):
            r = ask(client)
            assert r.json()["guide_align"]["refine"]["outcome"] == "skipped"
        assert events(client)["skipped"] == 2
    warnings = [rec for rec in caplog.records if rec.name == "guide_align.refine"]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
    assert sent(upstream_log)[-1]["content"] == VAGUE


def test_earlier_turns_and_the_system_message_are_kept(gateway, refiner, upstream_log):
    llm, url = refiner
    history = [{"role": "system", "content": "Answer as a Linux admin."},
               {"role": "user", "content": "My server runs a nightly job."},
               {"role": "assistant", "content": "Which job is it?"}]
    with gateway(refine_base_url=url, refine="rewrite") as client:
        assert ask(client, history=history).status_code == 200
    messages = sent(upstream_log)
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith("Answer as a Linux admin.")
    assert messages[1:3] == history[1:]
    assert messages[-1]["content"] == REFINED and len(messages) == 4
    # the refiner was given the earlier turns as context
    context = llm.requests[-1]["messages"][-1]["content"]
    assert "User: My server runs a nightly job." in context
    assert "Assistant: Which job is it?" in context and context.endswith(VAGUE)


TOOLS = [{"type": "function", "function": {"name": "restart", "parameters": {
    "type": "object", "properties": {"name": {"type": "string"}}}}}]


@pytest.mark.parametrize("request_shape", ["tools", "tool_message", "image"])
def test_tool_calls_and_images_skip_refinement(gateway, refiner, upstream_log, request_shape):
    llm, url = refiner
    history: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    content: str | list[dict[str, Any]] = VAGUE
    if request_shape == "tools":
        extra["tools"] = TOOLS
    elif request_shape == "tool_message":
        history = [{"role": "user", "content": "restart the job"},
                   {"role": "assistant", "content": None, "tool_calls": [
                       {"id": "c1", "type": "function",
                        "function": {"name": "restart", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": "restarted"}]
    else:
        content = [{"type": "text", "text": VAGUE},
                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    with gateway(refine_base_url=url, refine="rewrite") as client:
        r = ask(client, content, history=history, **extra)
        assert r.status_code == 200
        assert events(client)["skipped"] == 1
    assert r.json()["guide_align"]["refine"]["outcome"] == "skipped"
    assert llm.requests == []
    assert sent(upstream_log)[-1]["content"] == content


def test_a_request_cannot_loosen_the_deployments_mode(gateway, refiner, upstream_log):
    _, url = refiner
    with gateway(refine_base_url=url, refine="rewrite") as client:
        r = ask(client, guide_align={"refine": "off"})
        assert r.json()["guide_align"]["ignored"] == ["refine"]
        assert r.json()["guide_align"]["refine"]["applied"] == "rewrite"
        assert sent(upstream_log)[-1]["content"] == REFINED
        # tightening is allowed
    with gateway(refine_base_url=url, refine="retrieve") as client:
        r = ask(client, guide_align={"refine": "rewrite"})
        assert r.json()["guide_align"]["refine"]["mode"] == "rewrite"
        assert sent(upstream_log)[-1]["content"] == REFINED


def test_an_unknown_mode_is_a_422(gateway, refiner):
    _, url = refiner
    with gateway(refine_base_url=url) as client:
        r = ask(client, guide_align={"refine": "sometimes"})
    assert r.status_code == 422
    assert r.json()["error"]["param"].startswith("guide_align")


def _key(policy: KeyPolicy) -> Caller:
    from datetime import UTC, datetime

    return Caller("key:k", KeyRecord(id="k", prefix="ga-", name="t", created=datetime.now(UTC),
                                     revoked=None, policy=policy))


def test_a_keys_mode_overrides_the_deployment_and_requests_only_tighten_it():
    caller = _key(KeyPolicy(refine="auto"))
    assert caller.applied(Policy(refine="rewrite"), None,
                          allow_loosen=False).policy.refine == "auto"
    asked = caller.applied(Policy(), GuideOptions(refine="retrieve"), allow_loosen=False)
    assert asked.policy.refine == "auto" and asked.ignored == ("refine",)
    tighter = caller.applied(Policy(), GuideOptions(refine="rewrite"), allow_loosen=False)
    assert tighter.policy.refine == "rewrite"
    loose = _key(KeyPolicy(refine="rewrite", allow_loosen=True))
    assert loose.applied(Policy(), GuideOptions(refine="off"),
                         allow_loosen=False).policy.refine == "off"


def test_refine_request_runs_outside_a_request(refiner):
    """The stage with settings and a client passed in, as a benchmark calls it."""
    import asyncio

    _, url = refiner

    async def run() -> Any:
        client = Refiner.from_settings(Settings(refine_base_url=url))
        assert client is not None
        try:
            return await refine_request([{"role": "user", "content": VAGUE}], "rewrite", client)
        finally:
            await client.aclose()

    done = asyncio.run(run())
    assert done.outcome == "refined" and done.upstream[-1]["content"] == REFINED
    assert json.loads(json.dumps(done.body_field()))["original"] == VAGUE


def test_the_local_refiner_starts_only_when_needed(tmp_path):
    from app.refiner import start_local_refiner

    model = tmp_path / "refiner" / "current.gguf"
    assert start_local_refiner(Settings(var_dir=tmp_path, refine="rewrite")) is None  # no model
    model.parent.mkdir()
    model.write_bytes(b"")
    assert start_local_refiner(Settings(var_dir=tmp_path)) is None  # refinement off
    assert start_local_refiner(Settings(var_dir=tmp_path, refine="rewrite",
                                        refine_base_url="http://127.0.0.1:9/v1")) is None


@pytest.mark.e2e
@pytest.mark.slow
def test_the_embedded_refiner_serves_real_rewrites(tmp_path):
    """`guide-align up`'s second llama.cpp process, on SmolLM2 standing in for the trained
    refiner: whatever the model writes, the stage returns a usable conversation."""
    import asyncio

    from app.launcher import smollm2_path, stop_process, wait_until_ready
    from app.refiner import start_local_refiner
    from tests.fakes.server import free_port

    (tmp_path / "refiner").mkdir()
    (tmp_path / "refiner" / "current.gguf").symlink_to(smollm2_path())
    settings = Settings(var_dir=tmp_path, refine="rewrite", refine_timeout=60)
    port = free_port()
    proc = start_local_refiner(settings, port=port, log_file=tmp_path / "refiner.log")
    assert proc is not None
    try:
        url = f"http://127.0.0.1:{port}/v1"
        wait_until_ready(f"{url}/models", timeout=180, proc=proc)

        async def run() -> Any:
            client = Refiner.from_settings(settings.model_copy(update={"refine_base_url": url}))
            assert client is not None
            try:
                return await refine_request(
                    [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "how do i stop a hung process on linux"}],
                    "rewrite", client)
            finally:
                await client.aclose()

        done = asyncio.run(run())
    finally:
        stop_process(proc)
    assert done.outcome in OUTCOMES and done.outcome not in ("failed", "timeout", "skipped")
    assert done.upstream[0] == {"role": "system", "content": "Be brief."}
    expected = done.refined if done.outcome == "refined" else \
        "how do i stop a hung process on linux"
    assert done.upstream[-1]["content"] == expected
