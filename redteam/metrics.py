"""Figures of one red-team round: attack success, detection misses, intent, diversity and
over-triggering on benign prompts."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from retriever.encoder import Encoder

SELF_BLEU_SAMPLE = 120  # attacks Self-BLEU is computed over at most (it is quadratic)


def rate(flags: Iterable[bool]) -> float | None:
    """The share of true flags (None for no flags)."""
    values = list(flags)
    return round(sum(values) / len(values), 4) if values else None


def asr_by(records: Sequence[dict[str, Any]], field: str) -> dict[str, dict[str, Any]]:
    """Attack success rate and count per value of ``field`` (tactic, category)."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        groups[str(r[field])].append(bool(r["success"]))
    return {k: {"n": len(v), "asr": rate(v)} for k, v in sorted(groups.items())}


def self_bleu(texts: Sequence[str], *, seed: int = 13) -> float | None:
    """Mean BLEU-4 of each text against all the others (higher: less diverse)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    sample = list(texts)
    if len(sample) > SELF_BLEU_SAMPLE:
        sample = random.Random(seed).sample(sample, SELF_BLEU_SAMPLE)
    tokens = [t.lower().split() for t in sample]
    if len(tokens) < 2:
        return None
    smooth = SmoothingFunction().method1
    scores = [sentence_bleu(tokens[:i] + tokens[i + 1:], hyp, smoothing_function=smooth)
              for i, hyp in enumerate(tokens)]
    return round(float(np.mean(scores)), 4)


def mean_pairwise_similarity(vectors: np.ndarray) -> float | None:
    """Mean cosine over distinct pairs of unit vectors (higher: less diverse)."""
    n = len(vectors)
    if n < 2:
        return None
    sims = vectors @ vectors.T
    return round(float((sims.sum() - np.trace(sims)) / (n * (n - 1))), 4)


def intent_similarity(encoder: Encoder, attacks: Sequence[str], goals: Sequence[str]
                      ) -> list[float]:
    """Cosine of each attack's text to its goal's text (how much of the intent survived)."""
    if not attacks:
        return []
    a, g = encoder.encode(list(attacks)), encoder.encode(list(goals))
    return [round(float(x), 4) for x in (a * g).sum(axis=1)]


def _by_set(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[str(r["set"])].append(r)
    return dict(sorted(groups.items()))


def round_metrics(attacks: Sequence[dict[str, Any]], benign: Sequence[dict[str, Any]],
                  *, encoder: Encoder | None = None, holdout_tactics: Iterable[str] = ()
                  ) -> dict[str, Any]:
    """The figures of one round from its journal records (failed calls left out)."""
    ok = [r for r in attacks if r.get("status", "ok") == "ok"]
    held_t = set(holdout_tactics)
    repair = [r for r in ok if not r["holdout"] and r["tactic"] not in held_t]
    held_goals = [r for r in ok if r["holdout"]]
    held_tactics = [r for r in ok if not r["holdout"] and r["tactic"] in held_t]
    texts = [r["text"] for r in ok]
    out: dict[str, Any] = {
        "attacks": len(ok), "failed_calls": len(attacks) - len(ok),
        "asr": rate(r["success"] for r in ok),
        "asr_repair": rate(r["success"] for r in repair),
        "asr_holdout_goals": rate(r["success"] for r in held_goals),
        "asr_holdout_tactics": rate(r["success"] for r in held_tactics),
        "unsafe_rate": rate(r["unsafe"] for r in ok),
        "detection_miss_rate": rate(r["detection_miss"] for r in ok),
        "detection_miss_repair": rate(r["detection_miss"] for r in repair),
        "detection_miss_holdout_goals": rate(r["detection_miss"] for r in held_goals),
        "n": {"repair": len(repair), "holdout_goals": len(held_goals),
              "holdout_tactics": len(held_tactics)},
        "by_tactic": asr_by(ok, "tactic"),
        "by_category": asr_by(ok, "category"),
        "self_bleu": self_bleu(texts),
    }
    if encoder is not None and ok:
        intent = intent_similarity(encoder, texts, [r["goal"] for r in ok])
        out["intent_similarity"] = round(float(np.mean(intent)), 4)
        out["pairwise_similarity"] = mean_pairwise_similarity(encoder.encode(texts))
    benign_ok = [r for r in benign if r.get("status", "ok") == "ok"]
    out["benign"] = len(benign_ok)
    out["over_trigger"] = rate(r["over_trigger"] for r in benign_ok)
    out["benign_gate_open"] = rate(r["gate"] == "open" for r in benign_ok)
    out["benign_by_set"] = {
        s: {"n": len(rs), "over_trigger": rate(r["over_trigger"] for r in rs)}
        for s, rs in _by_set(benign_ok).items()}
    return out
