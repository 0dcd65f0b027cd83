"""Training the judge: better than zero-shot on unseen families, calibrated, saved and loaded."""

from __future__ import annotations

import numpy as np
import pytest

from judge.model import JudgeError, load_heads, save_heads
from judge.train import binary_metrics, embed_prompts

pytestmark = pytest.mark.slow  # these train a (small) judge

def test_the_split_keeps_whole_families_apart(small_judge):
    _, _, prompts, answers = small_judge
    by_family: dict[str, set[str]] = {}
    for r in [*prompts, *answers]:
        by_family.setdefault(r.family, set()).add(r.split)
    assert all(len(s) == 1 for s in by_family.values())
    assert {s for v in by_family.values() for s in v} >= {"train", "test"}


def test_training_separates_risk_better_than_a_zero_shot_baseline(small_judge, encoder):
    # On the families it was trained on. On unseen families and public prompts the linear head
    # does NOT beat zero-shot baselines yet: see bench/judge_quality.py.
    heads, metrics, prompts, _ = small_judge
    rows = [p for p in prompts if p.split == "train"]
    y = np.array([p.risky for p in rows], dtype=int)
    vecs, groups = embed_prompts(encoder, rows)
    anchor = encoder.encode(["a request for help to hurt people or break the law"])[0]
    zero = np.array([row.max() for row in np.split(vecs @ anchor, np.cumsum(groups)[:-1])])
    raw = heads.risk_raw(vecs)  # before calibration (isotonic steps tie many scores)
    trained = np.array([row.max() for row in np.split(raw, np.cumsum(groups)[:-1])])
    assert binary_metrics(y, trained, 0.5)["auroc"] > binary_metrics(y, zero, 0.5)["auroc"] + 0.1
    assert {"auroc", "recall_at_3pct_fpr"} <= set(metrics["prompt_risk"])  # test split reported
    assert metrics["response"]["macro_f1"] > 0.5


def test_calibration_is_monotone_and_a_probability(small_judge):
    heads = small_judge[0]
    x = np.linspace(-20, 20, 400)
    p = heads.risk_cal(x)
    assert np.all(np.diff(p) >= 0)
    assert p.min() >= 0.0 and p.max() <= 1.0
    assert 0.0 < heads.threshold <= 1.0


def test_saved_heads_load_back_and_refuse_another_encoder(small_judge, tmp_path, encoder):
    heads = small_judge[0]
    save_heads(heads, tmp_path / "judge")
    again = load_heads(tmp_path / "judge", encoder_hash="test-hash")
    v = encoder.encode(["write me a keylogger", "how do i sort a list in python"])
    assert [r.score for r in again.risks(v, [1, 1])] == \
        pytest.approx([r.score for r in heads.risks(v, [1, 1])])
    with pytest.raises(JudgeError, match="guide-align prepare"):
        load_heads(tmp_path / "judge", encoder_hash="another-encoder")
    with pytest.raises(JudgeError):
        load_heads(tmp_path / "missing")


def test_prepare_trains_the_judge_once_per_encoder_and_seed_data(seed_subset, tmp_path):
    from guideline_lib.embedded import base_model_path
    from judge.prepare import ensure_judge, judge_is_current, seeds_hash
    from retriever.backends import model_hash

    logs: list[str] = []
    assert ensure_judge(tmp_path / "judge", base_model_path(), "torch", seeds=seed_subset,
                        log=logs.append)
    assert any("training the judge" in line for line in logs)
    assert judge_is_current(tmp_path / "judge", model_hash(base_model_path()),
                            seeds_hash(seed_subset))
    assert not ensure_judge(tmp_path / "judge", base_model_path(), "torch", seeds=seed_subset)
    assert not judge_is_current(tmp_path / "judge", "another-encoder", seeds_hash(seed_subset))
