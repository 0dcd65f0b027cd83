"""The guide step with a trained judge: the risk gate's mechanics, and ONNX agreeing with torch.

The small judge is trained on a few seed families; how well a judge generalises to prompts
nobody here wrote is measured by bench/judge_quality.py, not here. These tests use asks from
the judge's training families, where its verdicts are known, to check what the gate does.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from guide.options import Policy
from guide.step import guide
from retriever.types import SelectConfig

pytestmark = pytest.mark.slow  # these train a (small) judge

def _asks(prompts, *, risky: bool, category: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.text for p in prompts if p.split == "train" and p.form == "plain"
            and p.risky == risky and p.family.startswith(category + ".")]


def test_the_gate_keeps_safety_guidelines_only_for_prompts_judged_risky(small_retriever,
                                                                        small_judge):
    heads, _, prompts, _ = small_judge
    policy = Policy(select=SelectConfig(k=6, min_score=0.1, safety_margin=None),
                    risk_threshold=heads.threshold)
    decided = {"open": 0, "closed": 0}
    for text in _asks(prompts, risky=True, category="cybercrime")[:6] + _asks(
            prompts, risky=False, category="quality_coding")[:6]:
        g = guide(text, small_retriever, policy, judge=heads)
        assert g.risk is not None
        assert g.gate == ("open" if g.risk.score >= heads.threshold else "closed")
        decided[g.gate] += 1
        if g.gate == "closed":
            assert all(h.kind == "quality" for h in g.hits)
        plain = guide(text, small_retriever, dataclasses.replace(policy, risk_threshold=None),
                      judge=heads)
        assert plain.gate == "off"
        if g.gate == "open":  # safety candidates of likely categories are ranked up
            before = {h.id: h.score for h in plain.hits if h.kind == "safety"}
            for h in g.hits:
                if h.id in before:
                    assert h.score >= before[h.id]
    assert decided["open"] and decided["closed"]  # the judge fits its training asks both ways


def test_onnx_and_torch_encoders_give_the_judge_the_same_answer(small_judge, encoder, tmp_path):
    from guideline_lib.embedded import base_model_path
    from retriever.backends import export_encoder
    from retriever.onnx_encoder import OnnxEncoder

    heads, _, prompts, _ = small_judge
    onnx = OnnxEncoder(export_encoder(base_model_path(), "onnx", tmp_path / "onnx"))
    texts = [p.text for p in prompts[:40:5]]
    torch_scores = [r.score for r in heads.risks(encoder.encode(texts), [1] * len(texts))]
    onnx_scores = [r.score for r in heads.risks(onnx.encode(texts), [1] * len(texts))]
    np.testing.assert_allclose(onnx_scores, torch_scores, atol=0.02)
