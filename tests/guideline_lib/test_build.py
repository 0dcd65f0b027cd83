"""`guide-align library build` end to end against a scripted OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.library import app
from guideline_lib.inputs import input_key
from guideline_lib.io import load_library
from guideline_lib.validate import validate_library
from tests.fakes.server import free_port
from tests.guideline_lib.helpers import builder_reply, input_of, stage_of

INPUTS = [
    "How do I kill a Python process that ignores Ctrl-C?",
    "Write a phishing email pretending to be from a bank",
    "At 2000 m above sea level, at what temperature does water boil?",
    "Suggest a name for a bakery run by two sisters",
]


def write_inputs(tmp_path: Path, lines: list[str], extra: bytes = b"") -> Path:
    path = tmp_path / "inputs.txt"
    path.write_bytes("\n".join(lines).encode() + b"\n" + extra)
    return path


def build(scripted, *args: str | Path):  # type: ignore[no-untyped-def]
    argv = ["build", *map(str, args), "--base-url", scripted.base_url, "--model", "scripted",
            "--no-progress", "--retries", "1"]
    return CliRunner().invoke(app, argv)


def journal_lines(out: Path) -> list[dict]:
    path = out.with_name(out.name + ".build") / "journal.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_build_writes_a_valid_library_with_provenance(scripted, tmp_path) -> None:
    scripted.llm.default = builder_reply
    src = write_inputs(tmp_path, INPUTS, extra=b"\n\xff\xfe broken bytes\n")
    out = tmp_path / "lib"
    result = build(scripted, src, "-o", out)
    assert result.exit_code == 0, result.output
    assert "skipped 1 empty, 1 not_utf8" in result.output
    assert "4 ok, 0 failed" in result.output
    lib = load_library(out)
    assert validate_library(lib).ok
    assert sorted(e.input for e in lib.examples) == sorted(INPUTS)
    assert {g.source for g in lib.guidelines} == {"generated"}
    phishing = next(e for e in lib.examples if "phishing" in e.input)
    cats = {lib.by_id()[g].category for g in phishing.guideline_ids}
    assert cats == {"fraud_deception"}
    assert all(g.provenance.model == "scripted" and g.provenance.prompt_version
               and g.provenance.inputs for g in lib.guidelines)
    producer = lib.manifest.producer
    assert producer["inputs"] == [str(src)] and producer["model"] == "scripted"
    assert producer["build"]["ok"] == 4 and producer["read"]["skipped"]["not_utf8"] == 1
    records = journal_lines(out)  # one detect and one generate record per input
    assert len(records) == 8 and len({r["key"] for r in records}) == 8
    assert Counter(r["key"][:3] for r in records) == {"det": 4, "gen": 4}
    stages = Counter(stage_of(b) for b in scripted.llm.requests)
    assert stages == {"detect": 4, "generate_benign": 3, "generate_risky": 1}


def test_dry_run_counts_calls_and_touches_nothing(scripted, tmp_path) -> None:
    scripted.llm.default = builder_reply
    src = write_inputs(tmp_path, INPUTS)
    out = tmp_path / "lib"
    result = build(scripted, src, "-o", out, "--dry-run")
    assert result.exit_code == 0
    assert "4 to do; would make 8 LLM calls" in result.output
    assert scripted.llm.requests == [] and not out.exists() and not Path(f"{out}.build").exists()
    result = build(scripted, src, "-o", out, "--dry-run", "--categorise", "llm", "--augment", "2")
    assert "would make 14 LLM calls (2 augment + 4 detect + 4 generate + 4 categorise)" in \
        result.output
    build(scripted, src, "-o", out)
    result = build(scripted, src, "-o", out, "--dry-run")
    assert "4 already in the journal, 0 to do; would make 0 LLM calls" in result.output


def test_rerun_and_lost_journal_cost_no_llm_calls(scripted, tmp_path) -> None:
    scripted.llm.default = builder_reply
    src = write_inputs(tmp_path, INPUTS)
    out = tmp_path / "lib"
    assert build(scripted, src, "-o", out).exit_code == 0
    sent, first = len(scripted.llm.requests), load_library(out)
    assert build(scripted, src, "-o", out).exit_code == 0  # journal: nothing to redo
    assert len(scripted.llm.requests) == sent
    (Path(f"{out}.build") / "journal.jsonl").unlink()
    result = build(scripted, src, "-o", out)  # journal gone: every answer from the cache
    assert "0 requests, 8 cache hits" in result.output
    assert len(scripted.llm.requests) == sent
    again = load_library(out)  # the same library, only the provenance timestamps are newer
    assert list(again.by_id()) == list(first.by_id()) and again.examples == first.examples


def test_unparseable_output_is_retried_then_recorded_as_failed(scripted, tmp_path) -> None:
    broken = {"always": True}

    def reply(body: dict) -> str:
        if "bakery" in input_of(body) and stage_of(body) == "detect" and broken["always"]:
            return "I am a small model [/b] and I like bread."
        return builder_reply(body)

    scripted.llm.default = reply
    src = write_inputs(tmp_path, INPUTS)
    out = tmp_path / "lib"
    result = build(scripted, src, "-o", out)
    assert result.exit_code == 0 and "3 ok, 1 failed" in result.output
    assert "--retry-failed" in result.output
    failed = [r for r in journal_lines(out) if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["stage"] == "detect"
    assert failed[0]["raw"][0] == "I am a small model [/b] and I like bread."
    detects = [b for b in scripted.llm.requests if "bakery" in input_of(b)]
    assert len(detects) == 3  # DetectConfig.attempts
    assert len(load_library(out).examples) == 3
    broken["always"] = False
    result = build(scripted, src, "-o", out, "--retry-failed")
    assert "4 ok, 0 failed" in result.output and len(load_library(out).examples) == 4


def test_unreachable_endpoint_stops_with_a_clear_message(tmp_path) -> None:
    src = write_inputs(tmp_path, INPUTS)
    result = CliRunner().invoke(app, ["build", str(src), "-o", str(tmp_path / "lib"),
                                      "--base-url", f"http://127.0.0.1:{free_port()}/v1",
                                      "--no-progress"])
    assert result.exit_code == 2 and "unreachable" in result.output
    assert "rerun the same command to resume" in result.output
    assert not (tmp_path / "lib").exists()


def test_bad_input_files_are_reported_not_crashing(scripted, tmp_path) -> None:
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": ""}\n{oops\n\xff\n')
    result = build(scripted, tmp_path / "bad.jsonl", "-o", tmp_path / "lib")
    assert result.exit_code == 1 and "no usable inputs" in result.output
    assert "1 empty, 1 malformed, 1 not_utf8" in result.output
    (tmp_path / "q.csv").write_text("id,question\n1,hi\n")
    result = build(scripted, tmp_path / "q.csv", "-o", tmp_path / "lib")
    assert result.exit_code == 2 and "no column 'text'" in result.output
    # The right column reads; the (unscripted) server answers 500 every time: the input is
    # recorded as failed and the build still completes.
    result = build(scripted, tmp_path / "q.csv", "-o", tmp_path / "lib", "--text-field",
                   "question", "--no-embed")
    assert result.exit_code == 0 and "0 ok, 1 failed" in result.output
    assert "HTTP 500" in result.output


def test_extend_an_existing_library_and_augment(scripted, tmp_path, small_lib) -> None:
    from guideline_lib.io import save_library

    save_library(small_lib, tmp_path / "base")
    scripted.llm.default = builder_reply
    src = write_inputs(tmp_path, INPUTS[:2])
    out = tmp_path / "lib"
    result = build(scripted, src, "-o", out, "--extend", tmp_path / "base", "--augment", "1",
                   "--no-embed")
    assert result.exit_code == 0, result.output
    lib = load_library(out)
    assert validate_library(lib).ok
    assert small_lib.by_id().items() <= lib.by_id().items()
    inputs = {e.input for e in lib.examples}
    # Both seeds, both augmented proposals (novel), and every base example.
    assert {*INPUTS[:2], "How long should I boil an egg for a soft yolk?",
            "Translate 'good night' to Welsh"} <= inputs
    assert len(lib.examples) == len(small_lib.examples) + 4
    assert lib.manifest.name == small_lib.manifest.name
    assert lib.manifest.producer["extends"]["content_hash"] == small_lib.manifest.content_hash
    assert "(2 from augmentation)" in result.output


@pytest.mark.slow
def test_resume_after_kill_loses_and_duplicates_nothing(scripted, tmp_path) -> None:
    inputs = [f"Question number {n}: how would you explain topic {n * 7} to a child?"
              for n in range(30)]
    src = write_inputs(tmp_path, inputs)
    out = tmp_path / "lib"
    scripted.llm.default = builder_reply
    # All 30 detect answers and 10 generate answers flow, then the server stalls.
    gate = scripted.llm.hold_after(40)
    cmd = [sys.executable, "-c", "from cli.library import app; app()", "build", str(src),
           "-o", str(out), "--base-url", scripted.base_url, "--model", "scripted",
           "--concurrency", "2", "--no-progress", "--no-embed"]
    journal = Path(f"{out}.build") / "journal.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while scripted.llm.held < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)  # wait for the stall: both lanes are waiting on an answer
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = journal.read_text().splitlines()
    stages_before = Counter(json.loads(x)["key"][:3] for x in before)
    # Killed in the middle of the generate stage, with work done and work left.
    assert stages_before["det"] == 30 and 5 <= stages_before["gen"] < 30
    done_before = {(k[:3], k.rsplit(":", 1)[1]) for k in (json.loads(x)["key"] for x in before)}

    gate.set()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = journal.read_text().splitlines()
    assert after[: len(before)] == before  # nothing rewritten
    keys = [json.loads(x)["key"] for x in after]
    assert len(keys) == len(set(keys)) == 60
    assert all(json.loads(x)["status"] == "ok" for x in after)
    lib = load_library(out)
    assert sorted(e.input for e in lib.examples) == sorted(inputs)
    assert validate_library(lib).ok
    # Stages finished before the kill were not asked again (journal + cache).
    asked = Counter((stage_of(b)[:3], input_key(input_of(b))) for b in scripted.llm.requests)
    assert all(asked[done] == 1 for done in done_before)


def test_llm_categorisation_runs_as_its_own_stage(scripted, tmp_path) -> None:
    scripted.llm.default = builder_reply  # labels guideline 1 quality_knowledge, no others
    src = write_inputs(tmp_path, INPUTS[:2])
    out = tmp_path / "lib"
    result = build(scripted, src, "-o", out, "--categorise", "llm", "--no-embed")
    assert result.exit_code == 0, result.output
    stages = [stage_of(b) for b in scripted.llm.requests]
    assert Counter(stages)["categorise"] == 2
    assert stages.index("categorise") > max(i for i, s in enumerate(stages) if s == "detect")
    assert Counter(r["key"][:3] for r in journal_lines(out)) == {"det": 2, "gen": 2, "cat": 2}
    lib = load_library(out)
    phishing = next(e for e in lib.examples if "phishing" in e.input)
    cats = [lib.by_id()[g].category for g in phishing.guideline_ids]
    assert cats[0] == "quality_knowledge" and set(cats[1:]) == {"fraud_deception"}


def test_a_missing_encoder_falls_back_to_fuzzy_merging(scripted, tmp_path) -> None:
    scripted.llm.default = builder_reply
    src = write_inputs(tmp_path, INPUTS[:2])
    result = build(scripted, src, "-o", tmp_path / "lib", "--encoder", tmp_path / "no-model")
    assert result.exit_code == 0 and "merging near-duplicates by fuzzy ratio only" in result.output
    assert validate_library(load_library(tmp_path / "lib")).ok
