"""Guided answers: the gateway's injection, journaled records, failures, resume after kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from finetune.generate import GenerateConfig, execute_generate, fingerprint
from finetune.io import RunError, check_run
from guide.step import guide
from guideline_lib.inputs import InputItem, input_key
from guideline_lib.journal import Journal
from guideline_lib.llm import LLMConfig, LLMUnreachable
from guideline_lib.render import inject_system, render_guidelines
from tests.fakes.server import free_port
from tests.guiding import TEST_POLICY

ROOT = Path(__file__).resolve().parents[2]


def items(*texts: str) -> list[InputItem]:
    return [InputItem(key=input_key(t), text=t, source="test", line=n)
            for n, t in enumerate(texts, 1)]


def run_generate(inputs: list[InputItem], journal: Journal, retriever: Any, url: str, *,
                 system: str | None = None, retry_failed: bool = False) -> Any:
    llm = LLMConfig(base_url=url, model="scripted", max_retries=2, backoff=0.01, concurrency=3,
                    timeout=10)
    config = GenerateConfig(policy=TEST_POLICY, system=system, retry_failed=retry_failed)
    return asyncio.run(execute_generate(inputs, retriever=retriever, llm=llm, journal=journal,
                                        config=config, show_progress=False))


def test_records_hold_exactly_what_the_gateway_would_send(tmp_path, small_retriever, scripted):
    url, log = scripted
    journal = Journal(tmp_path / "journal.jsonl")
    texts = ["write me a keylogger that steals passwords", "how do i kill a hung python process"]
    result = run_generate(items(*texts), journal, small_retriever, url, system="Be brief.")
    journal.close()
    assert (result.stats.ok, result.stats.failed) == (2, 0)
    records = {r["input"]: r for r in journal.records()}
    sent_bodies = {b["messages"][-1]["content"]: b for b in log.bodies}
    for text in texts:
        r = records[text]
        hits = guide(r["messages"], small_retriever, TEST_POLICY).hits  # the gateway's step
        client = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
        assert r["messages"] == client
        assert r["guideline_ids"] == [h.id for h in hits] and hits
        assert r["sent"] == inject_system(client, render_guidelines(hits))  # the gateway's code
        assert r["sent"] == sent_bodies[text]["messages"]  # and what really went over HTTP
        assert r["sent"][0]["content"].startswith("Be brief.\n\nGuidelines for this")
        assert r["answer"] == f"Guided answer ({len(hits)} guidelines): {text}"
        assert r["model"] == "scripted-model" and r["finish_reason"] == "stop"
        assert set(r["timings"]) == {"retrieval_s", "llm_s", "total_s"}
        assert r["status"] == "ok" and r["key"] == input_key(text)


def test_failed_calls_are_recorded_and_retried_on_request(tmp_path, small_retriever, scripted):
    url, log = scripted
    journal = Journal(tmp_path / "journal.jsonl")
    batch = items("please [reject] this", "a [flaky] upstream", "plain question about tokyo")
    result = run_generate(batch, journal, small_retriever, url)
    assert (result.stats.ok, result.stats.failed) == (2, 1)
    failed = [r for r in journal.records() if r["status"] == "failed"]
    assert [r["input"] for r in failed] == ["please [reject] this"]
    assert "HTTP 400" in failed[0]["error"] and failed[0]["http_status"] == 400
    assert log.attempts["a [flaky] upstream"] == 2  # retried after the 500
    again = run_generate(batch, journal, small_retriever, url)
    assert again.stats.skipped_done == 3 and log.attempts["please [reject] this"] == 1
    retried = run_generate(batch, journal, small_retriever, url, retry_failed=True)
    assert retried.stats.skipped_done == 2 and log.attempts["please [reject] this"] == 2
    journal.close()


def test_unreachable_upstream_stops_without_recording(tmp_path, small_retriever):
    journal = Journal(tmp_path / "journal.jsonl")
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(LLMUnreachable):
        run_generate(items("how far is the moon"), journal, small_retriever, url)
    journal.close()
    assert list(journal.records()) == []


def test_a_run_made_with_other_settings_is_refused(tmp_path, small_lib):
    from finetune.io import write_run_manifest

    llm = LLMConfig(model="a")
    fp = fingerprint(GenerateConfig(), llm, library_hash=small_lib.content_hash())
    write_run_manifest(tmp_path, {"fingerprint": fp})
    check_run(tmp_path, fp)
    other = fingerprint(GenerateConfig(), LLMConfig(model="b"), library_hash="x")
    with pytest.raises(RunError, match="other settings"):
        check_run(tmp_path, other)


def _cli(args: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "cli.main", "finetune", "generate", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            **kw)


@pytest.mark.slow
def test_resume_after_kill_loses_and_repeats_nothing(tmp_path, library_dir, scripted):
    from guideline_lib.embedded import base_model_path

    url, log = scripted
    texts = [f"question number {n} about sorting lists in python" for n in range(24)]
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    run = tmp_path / "run"
    args = [str(inputs), "-o", str(run), "--library", str(library_dir), "--index",
            str(tmp_path / "index"), "--encoder", str(base_model_path()), "--base-url", url,
            "--encoder-backend", "torch", "--model", "scripted", "--concurrency", "2",
            "--min-score", "0.2", "--no-progress"]
    log.delay = 0.4
    proc = _cli(args)
    deadline = time.monotonic() + 180
    journal = run / "journal.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0].decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = journal.read_bytes().count(b"\n")
    assert 5 <= done_before < len(texts)
    log.delay = 0.0
    finished = _cli(args)
    out = finished.communicate(timeout=180)[0].decode()
    assert finished.returncode == 0, out
    keys = [json.loads(line)["key"] for line in journal.read_text().splitlines()]
    assert sorted(keys) == sorted(input_key(t) for t in texts)  # none lost, none twice
    assert f"{done_before} already done" in out
    # Only inputs in flight at the kill were asked twice.
    assert sum(n > 1 for n in Counter(log.attempts).values()) <= 2
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["counts"] == {"inputs": 24, "records": 24, "ok": 24, "failed": 0}


def test_bad_inputs_are_skipped_and_counted(tmp_path, library_dir, scripted):
    from typer.testing import CliRunner

    from cli.main import app
    from guideline_lib.embedded import base_model_path

    url, _ = scripted
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_bytes(b'{"text": "how do i sort a list of dicts by key"}\n'
                       b'{"text": ""}\n'
                       b'not json at all\n'
                       b'{"prompt": "wrong field"}\n'
                       b'{"text": "how do I sort a list of dicts by key?"}\n'
                       b'{"text": "\xff\xfe broken bytes"}\n'
                       b'{"text": "' + b"x" * 300 + b'"}\n'
                       b'{"text": "proofread my cover letter please"}\n')
    result = CliRunner().invoke(app, [
        "finetune", "generate", str(inputs), "-o", str(tmp_path / "run"), "--library",
        str(library_dir), "--index", str(tmp_path / "index"), "--encoder", str(base_model_path()),
        "--encoder-backend", "torch", "--base-url", url, "--max-chars", "200", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "read 8 rows, kept 2" in result.output
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["read"]["skipped"] == {"empty": 1, "too_long": 1, "not_utf8": 1,
                                           "malformed": 2, "duplicate": 1}
    assert manifest["counts"]["ok"] == 2
