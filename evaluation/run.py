"""One evaluation: ask (unless regrading), grade with every grader, compute the figures."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.grading import Grader, ToGrade, agreement
from evaluation.harness import (
    DIRECT,
    CallPolicy,
    Collected,
    Sampling,
    Variant,
    answer_key,
    collect_answers,
    read_answers,
    read_manifest,
    read_prompts,
)
from evaluation.metrics import ALL, Row, by_category, by_set, deltas
from evaluation.sets import Prompt
from guideline_lib.io import atomic_write_text
from guideline_lib.schema import utc_now


@dataclass(frozen=True)
class Results:
    """Everything a report shows, JSON-ready in ``data``; ``rows`` per grader for plots."""

    data: dict[str, Any]
    rows: dict[str, list[Row]] = field(default_factory=dict)


def _rows(prompts: Sequence[Prompt], variants: Sequence[str], answers: dict[str, Any],
          grades: dict[str, str | None]) -> list[Row]:
    out = []
    for v in variants:
        for p in prompts:
            key = answer_key(v, p)
            rec = answers.get(key) or {}
            ok = rec.get("status", "failed") == "ok"
            usage = rec.get("usage") or {}
            out.append(Row(variant=v, prompt=p, ok=ok, label=grades.get(key) if ok else None,
                           latency_s=rec.get("latency_s"),
                           prompt_tokens=usage.get("prompt_tokens"),
                           completion_tokens=usage.get("completion_tokens"),
                           guidelines=len(rec.get("guidelines") or [])))
    return out


def _figures(rows: list[Row], variants: Sequence[str], baseline: str | None) -> dict[str, Any]:
    sets = by_set(rows)
    cats = by_category(rows)
    out: dict[str, Any] = {
        "by_set": {v: {s: r.as_dict() for s, r in per.items()} for v, per in sets.items()},
        "by_category": {v: {s: {c: r.as_dict() for c, r in per_c.items()}
                            for s, per_c in per_s.items()} for v, per_s in cats.items()},
        "deltas": {},
    }
    if baseline is not None:
        for v in variants:
            if v != baseline:
                out["deltas"][v] = {s: [d.__dict__ for d in ds]
                                    for s, ds in deltas(rows, v, baseline).items()}
    return out


def grade_and_measure(run_dir: Path, graders: Sequence[Grader], *,
                      collected: Collected | None = None) -> Results:
    """Grade every answer in ``run_dir`` (its latest prompts) and compute the figures."""
    manifest = read_manifest(run_dir) or {}
    prompts = read_prompts(run_dir)
    variants = list(manifest.get("order") or manifest.get("variants", {}))
    answers = read_answers(run_dir)
    answered = [(answer_key(v, p), p) for v in variants for p in prompts
                if answers.get(answer_key(v, p), {}).get("status") == "ok"]
    todo = [ToGrade(key, p, str(answers[key].get("answer") or "")) for key, p in answered]
    grades = {g.name: g.grade(todo) for g in graders}
    for name, labels in grades.items():  # per answer, for a look at what was graded how
        atomic_write_text(run_dir / f"grades-{name}.json", json.dumps(labels, indent=0) + "\n")
    baseline = DIRECT if DIRECT in variants else None
    rows = {name: _rows(prompts, variants, answers, g) for name, g in grades.items()}
    data: dict[str, Any] = {
        "tool": "guide-align eval", "created": utc_now(), "run_dir": str(run_dir),
        "sampling": manifest.get("sampling"), "variants": {
            v: {k: x for k, x in manifest.get("variants", {}).get(v, {}).items()}
            for v in variants},
        "baseline": baseline, "primary_grader": graders[0].name if graders else None,
        "grader_info": {g.name: g.info for g in graders},
        "sets": {s: {"prompts": n, "labels": sorted({str(p.label) for p in prompts
                                                     if p.set == s})}
                 for s, n in (manifest.get("sets") or {}).items()},
        "graders": {name: _figures(r, variants, baseline) for name, r in rows.items()},
        "stopped": dict(collected.stopped) if collected else {},
        "notes": list(collected.notes) if collected else [],
        "all": ALL,
    }
    names = list(grades)
    if len(names) > 1:
        data["agreement"] = {f"{a} vs {b}": agreement(grades[a], grades[b])
                             for i, a in enumerate(names) for b in names[i + 1:]}
    return Results(data=data, rows=rows)


def evaluate(prompts: Sequence[Prompt], variants: Sequence[Variant], run_dir: Path,
             graders: Sequence[Grader], *, sampling: Sampling,
             policy: CallPolicy = CallPolicy(), transport: Any = None) -> Results:
    """Ask every variant every prompt (resuming ``run_dir``), then grade and measure."""
    collected = collect_answers(prompts, variants, run_dir, sampling=sampling, policy=policy,
                                transport=transport)
    return grade_and_measure(run_dir, graders, collected=collected)
