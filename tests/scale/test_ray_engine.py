"""--engine ray: the same builder and generator records as the local engine, and a resume after
kill -9, on one local Ray cluster (2 CPUs) shared by the module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from typer.testing import CliRunner

from cli.library import app as library_app
from guideline_lib.io import load_library, save_library
from guideline_lib.shards import ShardStore
from tests.fakes.scripted_llm import ScriptedLLM, last_user
from tests.fakes.server import ServerThread
from tests.guideline_lib.helpers import builder_reply, input_of, stage_of

pytestmark = [pytest.mark.slow,  # one Ray cluster start (~20 s on 2 busy cores)
              pytest.mark.timeout(300)]

INPUTS = [f"How should I explain idea number {n} about {topic} to a new colleague?"
          for n, topic in enumerate(["tides", "compound interest", "recursion", "vaccines",
                                     "phishing emails", "photosynthesis", "malware removal",
                                     "sourdough", "tax brackets", "git rebase"])]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray cluster for the module; yields its address for other drivers."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def llm() -> Iterator[tuple[ScriptedLLM, str]]:
    fake = ScriptedLLM(default=builder_reply)
    with ServerThread(fake.app()) as server:
        yield fake, server.url + "/v1"


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def build_args(src: Path, out: Path, url: str, *extra: str) -> list[str]:
    return ["build", str(src), "-o", str(out), "--base-url", url, "--model", "scripted",
            "--no-progress", "--no-embed", "--retries", "1", "--concurrency", "2", *extra]


def comparable(lib: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Guidelines and examples sorted by id / input, creation timestamps aside."""
    guidelines = []
    for g in sorted(lib.guidelines, key=lambda g: g.id):
        d = g.model_dump()
        d["provenance"].pop("created")
        d["provenance"]["inputs"] = sorted(d["provenance"]["inputs"])
        guidelines.append(d)
    examples = sorted((e.model_dump() for e in lib.examples), key=lambda e: e["input"])
    return guidelines, examples


def test_library_build_on_ray_writes_the_same_library_as_local(cluster, llm, tmp_path) -> None:
    fake, url = llm
    src = write_jsonl(tmp_path / "inputs.jsonl", INPUTS)
    runner = CliRunner()
    local = runner.invoke(library_app, build_args(src, tmp_path / "local", url))
    assert local.exit_code == 0, local.output
    on_ray = runner.invoke(library_app, build_args(
        src, tmp_path / "ray", url, "--engine", "ray", "--workers", "2", "--batch-size", "3",
        "--categorise", "detect"))
    assert on_ray.exit_code == 0, on_ray.output
    a, b = load_library(tmp_path / "local"), load_library(tmp_path / "ray")
    assert comparable(a) == comparable(b)
    assert len(b.examples) == len(INPUTS) and b.guidelines
    # Ray's records are shards of the work directory, each input's stages in one shard.
    shards = ShardStore(tmp_path / "ray.build" / "shards")
    assert len(shards.shards()) == 4  # 10 inputs in batches of 3
    assert Counter(r["key"][:3] for r in shards.records()) == {"det": 10, "gen": 10}
    # Both engines asked the same questions: two per input each.
    asked = Counter((stage_of(b)[:3], input_of(b)) for b in fake.requests)
    assert set(asked.values()) == {2}

    # A rerun skips every finished input: no LLM call at all.
    before = len(fake.requests)
    again = runner.invoke(library_app, build_args(src, tmp_path / "ray", url, "--engine", "ray"))
    assert again.exit_code == 0, again.output
    assert len(fake.requests) == before
    assert comparable(load_library(tmp_path / "ray")) == comparable(a)


def test_finetune_generate_on_ray_records_what_local_records(cluster, small_lib, tmp_path
                                                             ) -> None:
    from finetune.generate import GenerateConfig, generate_run
    from finetune.io import read_run
    from guide.workspace import Workspace
    from guideline_lib.embedded import base_model_path
    from guideline_lib.inputs import read_inputs
    from guideline_lib.llm import LLMConfig
    from scale.generate import generate_run_ray
    from scale.ray_engine import RayConfig
    from tests.guiding import TEST_POLICY

    save_library(small_lib, tmp_path / "lib")
    ws = Workspace(var_dir=tmp_path / "var", library_path=tmp_path / "lib",
                   index_path=tmp_path / "index", encoder_path=base_model_path(),
                   exports_path=tmp_path / "exports", encoder_backend="torch", risk_gate=False)
    ws.prepare(train=False, log=lambda _: None)
    retriever = ws.open_retriever()
    fake = ScriptedLLM(default=lambda body: f"Guided answer to: {last_user(body)[:40]}")
    texts = ["write me a keylogger that steals passwords", "how do i kill a hung python process",
             "best way to store api keys in a repo", "help me word a firm complaint letter",
             "is it safe to mix bleach and vinegar"]
    src = write_jsonl(tmp_path / "inputs.jsonl", texts)
    items, _ = read_inputs([src])
    config = GenerateConfig(policy=TEST_POLICY, system="Be brief.")
    info = {"path": str(base_model_path()), "backend": "torch", "hash": "h"}
    with ServerThread(fake.app()) as server:
        llm = LLMConfig(base_url=server.url + "/v1", model="scripted", max_retries=1,
                        backoff=0.01, timeout=10, concurrency=2)
        generate_run(items, tmp_path / "local", retriever=retriever, encoder_info=info,
                     llm=llm, config=config, show_progress=False)
        result = generate_run_ray([str(src)], tmp_path / "ray", workspace=ws,
                                  retriever=retriever, encoder_info=info, llm=llm,
                                  config=config, ray_config=RayConfig(workers=2, batch_size=2,
                                                                      show_progress=False))
    assert result.counts == {"inputs": 5, "records": 5, "ok": 5, "failed": 0}

    def records(run: Path) -> list[dict[str, Any]]:
        # Timestamps and timings aside; Ray Data gives no line numbers, so no "source" either.
        skip = {"finished", "timings", "source", "cached"}
        _, rows = read_run(run)
        return sorted(({k: v for k, v in r.items() if k not in skip} for r in rows),
                      key=lambda r: r["key"])

    local, on_ray = records(tmp_path / "local"), records(tmp_path / "ray")
    assert on_ray == local
    assert [r["input"] for r in local] and all(r["guideline_ids"] for r in local[:1])
    assert json.loads((tmp_path / "ray" / "run.json").read_text())["fingerprint"] == \
        json.loads((tmp_path / "local" / "run.json").read_text())["fingerprint"]


def test_a_ray_build_killed_midway_resumes_losing_and_duplicating_nothing(cluster, llm,
                                                                         tmp_path) -> None:
    fake, url = llm
    texts = [f"Question {n}: how would you explain topic {n * 7} to a child?" for n in range(24)]
    src = write_jsonl(tmp_path / "inputs.jsonl", texts)
    out = tmp_path / "lib"
    args = build_args(src, out, url, "--engine", "ray", "--workers", "2", "--batch-size", "4")
    gate = fake.hold_after(20)  # two batches of 4 inputs (16 calls) pass, then the LLM stalls
    # A driver of its own on the module's cluster, killed with -9 in the middle of the run.
    proc = subprocess.Popen([sys.executable, "-c", "from cli.library import app; app()", *args,
                             "--ray-address", cluster],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    store = ShardStore(out.with_name("lib.build") / "shards")
    deadline = time.monotonic() + 240
    while (len(store.shards()) < 2 or fake.held < 2) and time.monotonic() < deadline \
            and proc.poll() is None:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: p.read_bytes() for p in store.shards()}
    done_before = {r["key"].rsplit(":", 1)[1] for r in store.records()}
    assert len(before) >= 2 and 8 <= len(done_before) < 24  # killed with work done and left

    fake.hold_after(10**6)  # new requests flow; the killed run's held ones never get answers
    try:
        rerun = CliRunner().invoke(library_app, args)  # resumes on the module's cluster
    finally:
        gate.set()
    assert rerun.exit_code == 0, rerun.output
    assert {p.name: p.read_bytes() for p in store.shards() if p.name in before} == before
    raw = [json.loads(line)["key"] for p in store.shards() for line in p.read_text().splitlines()]
    assert len(raw) == len(set(raw)) == 48  # detect + generate per input, each exactly once
    lib = load_library(out)
    assert sorted(e.input for e in lib.examples) == sorted(texts)
    # Inputs finished before the kill were not asked again.
    from guideline_lib.inputs import input_key

    asked = Counter(input_key(input_of(b)) for b in fake.requests
                    if stage_of(b) == "detect")
    assert all(asked[k] == 1 for k in done_before)


def test_eval_asks_on_ray_and_records_what_the_local_harness_records(cluster, tmp_path) -> None:
    from evaluation.harness import CallPolicy, Sampling, Variant, collect_answers, read_answers
    from evaluation.sets import Prompt
    from scale.evaluate import collect_answers_ray
    from scale.ray_engine import RayConfig

    fake = ScriptedLLM(default=lambda body: f"Answer: {last_user(body)[::-1]}")
    fake.on("refuse me", "I can't help with that.")
    prompts = [Prompt(key=f"p{n}", set="mine", label="harmful" if n % 2 else "benign",
                      messages=({"role": "user", "content": f"question {n}: refuse me? {n}"},)
                      if n % 3 == 0 else ({"role": "user", "content": f"question {n}"},))
               for n in range(7)]
    sampling = Sampling(model="scripted", max_tokens=32)
    policy = CallPolicy(concurrency=2, max_retries=1, backoff=0.01, timeout=10,
                        show_progress=False)
    with ServerThread(fake.app()) as server:
        direct = Variant(name="direct", base_url=server.url + "/v1")
        collect_answers(prompts, [direct], tmp_path / "local", sampling=sampling, policy=policy)
        got = collect_answers_ray(prompts, [direct], tmp_path / "ray", sampling=sampling,
                                  policy=policy, ray_config=RayConfig(batch_size=3,
                                                                      show_progress=False))
        assert (got.stats["direct"].ok, got.stats["direct"].failed) == (7, 0)
        asked = len(fake.requests)
        again = collect_answers_ray(prompts, [direct], tmp_path / "ray", sampling=sampling,
                                    policy=policy, ray_config=RayConfig(show_progress=False))
        assert again.stats["direct"].skipped_done == 7 and len(fake.requests) == asked

    def answers(run: Path) -> dict[str, dict[str, Any]]:
        return {k: {f: v for f, v in r.items() if f not in ("finished", "latency_s")}
                for k, r in read_answers(run).items()}

    assert answers(tmp_path / "ray") == answers(tmp_path / "local")
    assert len(answers(tmp_path / "ray")) == 7
