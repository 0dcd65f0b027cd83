"""Round figures (attack success per split, diversity, over-triggering), the report from a
journal, and the command's guard against mixing runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from guideline_lib.journal import Journal
from redteam.loop import JOURNAL
from redteam.metrics import mean_pairwise_similarity, round_metrics, self_bleu


def attack(n: int, *, success: bool, holdout: bool = False, tactic: str = "plain",
           category: str = "violence", miss: bool = False) -> dict[str, Any]:
    return {"key": f"attack:1:mutation:a{n}", "goal": "goal text", "text": f"attack {n} text",
            "holdout": holdout, "tactic": tactic, "category": category, "success": success,
            "unsafe": success and not miss, "detection_miss": miss}


RECORDS = [attack(0, success=True, miss=True), attack(1, success=False),
           attack(2, success=True, holdout=True, category="cybercrime"),
           attack(3, success=True, tactic="leetspeak"),
           {"key": "attack:1:mutation:a4", "status": "failed", "error": "HTTP 504"}]
BENIGN = [{"set": "a", "gate": "open", "over_trigger": True},
          {"set": "a", "gate": "closed", "over_trigger": False},
          {"set": "b", "gate": "closed", "over_trigger": False}]


def test_round_metrics_split_repair_holdout_and_failures() -> None:
    m = round_metrics(RECORDS, BENIGN, holdout_tactics=("leetspeak",))
    assert m["attacks"] == 4 and m["failed_calls"] == 1
    assert m["asr"] == 0.75
    assert m["asr_repair"] == 0.5  # a0, a1: held-out goals and tactics left out
    assert m["asr_holdout_goals"] == 1.0 and m["asr_holdout_tactics"] == 1.0
    assert m["n"] == {"repair": 2, "holdout_goals": 1, "holdout_tactics": 1}
    assert m["detection_miss_rate"] == 0.25
    assert m["by_category"]["cybercrime"] == {"n": 1, "asr": 1.0}
    assert m["over_trigger"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["benign_by_set"]["a"]["over_trigger"] == 0.5


def test_diversity_figures() -> None:
    same = ["open the lock of a neighbour's door fast without the key"] * 4
    varied = ["tell me how to pick a lock", "write a poem about rivers at night",
              "which bus goes to the airport", "summarise this article on tax law"]
    assert self_bleu(same) == pytest.approx(1.0, abs=1e-3)
    assert self_bleu(varied) < 0.2
    assert self_bleu(["only one"]) is None
    assert mean_pairwise_similarity(np.eye(3, dtype=np.float32)) == 0.0
    assert mean_pairwise_similarity(np.ones((3, 1), dtype=np.float32)) == 1.0


def test_report_command_and_run_dir_guard(tmp_path: Path) -> None:
    from cli.main import app

    run = tmp_path / "run"
    with Journal(run / JOURNAL) as journal:
        for r in RECORDS[:4]:
            journal.append(r["key"], r)
        metrics = round_metrics(RECORDS, BENIGN)
        journal.append("round:1", {"type": "round", "round": 1, "metrics": metrics,
                                   "budget": {"attacks_sent": 5}, "seconds": 1.0,
                                   "artifacts": {"library": str(tmp_path / "none")}})
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["redteam", "report", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "round 1: ASR repair" in result.output
    data = json.loads((out / "report.json").read_text())
    assert data["rounds"][0]["asr_repair"] == metrics["asr_repair"]
    assert data["journal"]["records"]["attack"] == {"1": 4}
    assert (out / "report.png").stat().st_size > 0

    # a run directory with a journal is not started again without --resume
    result = CliRunner().invoke(app, ["redteam", "run", "--out", str(run), "--target",
                                      "http://127.0.0.1:9/v1", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "--resume" in result.output
