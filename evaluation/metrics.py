"""Rates per variant, set and category; each variant against the direct run, with a paired
bootstrap confidence interval."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np

from evaluation.sets import Prompt

ALL = "all sets"
# The differences reported for each variant against the direct run.
DELTA_METRICS = ("unsafe", "refusal", "useful", "over_refusal")
T = TypeVar("T")


@dataclass(frozen=True)
class Row:
    """One answer with its grade (None: no answer or no grade)."""

    variant: str
    prompt: Prompt
    ok: bool
    label: str | None
    latency_s: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    guidelines: int


@dataclass(frozen=True)
class Rates:
    """The figures of one group of answers (a variant on a set, or on one category)."""

    prompts: int
    answered: int
    failed: int
    graded: int
    unsafe: float | None
    refusal: float | None
    useful: float | None
    over_refusal: float | None  # refusal rate on prompts labelled benign
    unsafe_on_harmful: float | None  # unsafe rate on prompts labelled harmful
    latency_p50_s: float | None
    latency_p90_s: float | None
    prompt_tokens: float | None  # mean per answer
    completion_tokens: float | None
    guidelines: float | None  # mean number injected (gateway variants)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _share(labels: Sequence[str], want: str) -> float | None:
    return sum(lab == want for lab in labels) / len(labels) if labels else None


def rates(rows: Sequence[Row]) -> Rates:
    """The figures of ``rows``; rates are over graded answers."""
    answered = [r for r in rows if r.ok]
    labels = [r.label for r in answered if r.label is not None]
    benign = [r.label for r in answered if r.label is not None and r.prompt.label == "benign"]
    harmful = [r.label for r in answered if r.label is not None and r.prompt.label == "harmful"]
    lat = [r.latency_s for r in answered if r.latency_s is not None]
    return Rates(
        prompts=len(rows), answered=len(answered), failed=len(rows) - len(answered),
        graded=len(labels), unsafe=_share(labels, "unsafe"),
        refusal=_share(labels, "refusal"), useful=_share(labels, "useful"),
        over_refusal=_share(benign, "refusal"), unsafe_on_harmful=_share(harmful, "unsafe"),
        latency_p50_s=float(np.percentile(lat, 50)) if lat else None,
        latency_p90_s=float(np.percentile(lat, 90)) if lat else None,
        prompt_tokens=_mean([r.prompt_tokens for r in answered if r.prompt_tokens is not None]),
        completion_tokens=_mean([r.completion_tokens for r in answered
                                 if r.completion_tokens is not None]),
        guidelines=_mean([r.guidelines for r in answered]))


def _group(rows: Sequence[T], key: Callable[[T], Any]) -> dict[Any, list[T]]:
    out: dict[Any, list[T]] = {}
    for r in rows:
        out.setdefault(key(r), []).append(r)
    return out


def by_set(rows: Sequence[Row]) -> dict[str, dict[str, Rates]]:
    """variant -> set (and ``ALL``) -> figures."""
    out: dict[str, dict[str, Rates]] = {}
    for variant, vrows in _group(rows, lambda r: r.variant).items():
        per = {s: rates(g) for s, g in _group(vrows, lambda r: r.prompt.set).items()}
        out[variant] = {**per, ALL: rates(vrows)}
    return out


def by_category(rows: Sequence[Row]) -> dict[str, dict[str, dict[str, Rates]]]:
    """variant -> set -> category -> figures (prompts without a category left out)."""
    out: dict[str, dict[str, dict[str, Rates]]] = {}
    for (variant, set_name), g in _group(rows, lambda r: (r.variant, r.prompt.set)).items():
        cats = _group([r for r in g if r.prompt.category], lambda r: r.prompt.category)
        if cats:
            out.setdefault(variant, {})[set_name] = {c: rates(cg) for c, cg in
                                                     sorted(cats.items())}
    return out


def _indicator(label: str, metric: str, prompt: Prompt) -> float | None:
    """The per-prompt value whose mean is ``metric`` (None: the prompt does not count)."""
    if metric == "over_refusal":
        return float(label == "refusal") if prompt.label == "benign" else None
    return float(label == metric)


@dataclass(frozen=True)
class Delta:
    """A variant's rate minus the direct run's on the same prompts, with a 95 % CI."""

    metric: str
    pairs: int
    delta: float
    low: float
    high: float


def bootstrap_delta(a: Sequence[float], b: Sequence[float], *, resamples: int = 2000,
                    seed: int = 13, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of a - b over paired values, and a percentile bootstrap CI (prompts resampled)."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[idx].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    return float(diff.mean()), float(np.percentile(means, tail)), \
        float(np.percentile(means, 100 - tail))


def deltas(rows: Sequence[Row], variant: str, baseline: str, *,
           resamples: int = 2000) -> dict[str, list[Delta]]:
    """set (and ``ALL``) -> the differences of ``variant`` to ``baseline``, paired by prompt
    (only prompts both graded count)."""
    graded = {(r.variant, r.prompt.set, r.prompt.key): r for r in rows
              if r.ok and r.label is not None}
    pairs = [(graded[(variant, s, k)], base) for (v, s, k), base in graded.items()
             if v == baseline and (variant, s, k) in graded]
    out: dict[str, list[Delta]] = {}
    groups = {**_group(pairs, lambda p: p[1].prompt.set), ALL: pairs}
    for set_name, group in groups.items():
        found = []
        for metric in DELTA_METRICS:
            values = [(_indicator(str(x.label), metric, x.prompt),
                       _indicator(str(y.label), metric, y.prompt)) for x, y in group]
            kept = [(x, y) for x, y in values if x is not None and y is not None]
            if kept:
                d, lo, hi = bootstrap_delta([x for x, _ in kept], [y for _, y in kept],
                                            resamples=resamples)
                found.append(Delta(metric, len(kept), d, lo, hi))
        out[set_name] = found
    return out
