"""A run killed with SIGKILL in the middle resumes without losing or repeating an answer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from evaluation.harness import (
    ANSWERS,
    CallPolicy,
    Sampling,
    Variant,
    collect_answers,
    read_answers,
)
from evaluation.sets import load_file_set
from tests.evaluation.conftest import write_jsonl
from tests.fakes.scripted_llm import Reply, ScriptedLLM, last_user
from tests.fakes.server import ServerThread

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import sys
from pathlib import Path
from evaluation.harness import CallPolicy, Sampling, Variant, collect_answers
from evaluation.sets import load_file_set
prompts = list(load_file_set(Path(sys.argv[1])).prompts)
variants = [Variant("direct", sys.argv[2]), Variant("gateway", sys.argv[2], {"k": 9})]
collect_answers(prompts, variants, Path(sys.argv[3]), sampling=Sampling("m", max_tokens=8),
                policy=CallPolicy(concurrency=3, show_progress=False))
"""


def _journal_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().split("\n")[:-1] if x.strip()]


def test_kill_9_mid_run_loses_and_repeats_nothing(tmp_path):
    llm = ScriptedLLM(default=lambda body: Reply(text=f"answer to {last_user(body)}",
                                                 delay=0.05))
    path = write_jsonl(tmp_path / "many.jsonl",
                       [{"text": f"made-up question {i}"} for i in range(40)])
    run = tmp_path / "run"
    with ServerThread(llm.app()) as server:
        url = f"{server.url}/v1"
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), url, str(run)],
                                 cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 60
        while len(_journal_lines(run / ANSWERS)) < 25:  # into the first variant and beyond
            assert child.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        before = len(_journal_lines(run / ANSWERS))
        assert before < 80
        prompts = list(load_file_set(path).prompts)
        variants = [Variant("direct", url), Variant("gateway", url, {"k": 9})]
        collect_answers(prompts, variants, run, sampling=Sampling("m", max_tokens=8),
                        policy=CallPolicy(concurrency=3, show_progress=False))
    lines = _journal_lines(run / ANSWERS)
    counts = Counter(r["key"] for r in lines)
    assert len(counts) == 80 and set(counts.values()) == {1}  # nothing lost, nothing twice
    answers = read_answers(run)
    for p in prompts:
        for v in ("direct", "gateway"):
            assert answers[f"{v}:{p.set}:{p.key}"]["answer"] == f"answer to {p.text}"
    # only calls in flight at the kill were asked twice
    assert len(llm.requests) <= 80 + 3
    asked = Counter((last_user(b), "guide_align" in b) for b in llm.requests)
    assert sum(n - 1 for n in asked.values()) == len(llm.requests) - 80
