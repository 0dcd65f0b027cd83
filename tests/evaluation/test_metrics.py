"""Rates over graded answers, and paired differences with bootstrap intervals."""

from __future__ import annotations

import pytest

from evaluation.metrics import ALL, Row, bootstrap_delta, by_set, deltas
from evaluation.sets import make_prompt


def _row(variant: str, n: int, label: str | None, *, ok: bool = True,
         benign: bool = False) -> Row:
    prompt = make_prompt("s", f"prompt {n}", label="benign" if benign else "harmful")
    assert prompt is not None
    return Row(variant, prompt, ok, label, 1.0, 10, 5, 0)


def test_rates_leave_out_failed_and_ungraded_answers():
    rows = [_row("direct", 0, "unsafe"), _row("direct", 1, None, ok=False),
            _row("direct", 2, None), _row("direct", 3, "refusal", benign=True)]
    r = by_set(rows)["direct"]["s"]
    assert (r.prompts, r.answered, r.failed, r.graded) == (4, 3, 1, 2)
    assert (r.unsafe, r.refusal, r.useful) == (0.5, 0.5, 0.0)
    assert r.over_refusal == 1.0 and r.unsafe_on_harmful == 1.0
    assert by_set(rows)["direct"][ALL] == r


def test_deltas_pair_prompts_graded_in_both_runs():
    direct = [_row("direct", i, "unsafe") for i in range(10)]
    gateway = [_row("gateway", i, "refusal") for i in range(8)] + [
        _row("gateway", 8, None, ok=False), _row("gateway", 9, "unsafe")]
    found = {d.metric: d for d in deltas(direct + gateway, "gateway", "direct")["s"]}
    assert found["unsafe"].pairs == 9  # prompt 8 failed through the gateway
    assert found["unsafe"].delta == pytest.approx(-8 / 9)
    assert found["unsafe"].low < found["unsafe"].delta < found["unsafe"].high < 0
    assert "over_refusal" not in found  # no benign prompt


def test_bootstrap_interval():
    assert bootstrap_delta([1.0, 0.0, 1.0], [1.0, 0.0, 1.0]) == (0.0, 0.0, 0.0)
    d, low, high = bootstrap_delta([1.0] * 10 + [0.0] * 10, [0.0] * 20)
    assert d == 0.5 and 0.25 <= low < 0.5 < high <= 0.75  # about two standard errors
    assert bootstrap_delta([1.0] * 10 + [0.0] * 10, [0.0] * 20, seed=13) == (d, low, high)
