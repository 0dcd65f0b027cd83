"""Turning journaled build results into a library: merge near-duplicates, link examples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guideline_lib.dedup import DedupConfig, Embedder, plan_merge
from guideline_lib.inputs import InputItem
from guideline_lib.schema import TAXONOMY, Example, Guideline, Library, Manifest, Provenance
from guideline_lib.starter import TEST_PERCENT, split_for


@dataclass
class AssembleStats:
    """What went into the library."""

    ok: int = 0
    failed: int = 0
    missing: int = 0
    candidates: int = 0
    new_guidelines: int = 0
    merged: int = 0
    new_examples: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Candidate:
    """One generated guideline, the input it came from and when."""

    text: str
    category: str
    input_key: str
    created: str | None


def _candidates(
    items: Sequence[InputItem], records: Mapping[str, dict[str, Any]], stats: AssembleStats
) -> list[tuple[InputItem, list[Candidate]]]:
    out = []
    for item in items:
        record = records.get(item.key)
        if record is None:
            stats.missing += 1
            continue
        if record.get("status", "ok") != "ok":
            stats.failed += 1
            stats.failures.append(f"{item.source}:{item.line}: {record.get('stage', '?')}: "
                                  f"{record.get('error', 'failed')}")
            continue
        cands = []
        for g in record.get("guidelines") or []:
            text, category = str(g.get("text", "")).strip(), g.get("category")
            if text and category in TAXONOMY:
                cands.append(Candidate(text, str(category), item.key, record.get("finished")))
        if cands:
            stats.ok += 1
            out.append((item, cands))
        else:
            stats.failed += 1
            stats.failures.append(f"{item.source}:{item.line}: no usable guideline")
    return out


def assemble_library(
    items: Sequence[InputItem],
    records: Mapping[str, dict[str, Any]],
    *,
    base: Library | None = None,
    encoder: Embedder | None = None,
    dedup: DedupConfig | None = None,
    manifest: Manifest | None = None,
    model: str | None = None,
    prompt_version: str | None = None,
    test_percent: int = TEST_PERCENT,
) -> tuple[Library, AssembleStats]:
    """A sealed library: ``base`` plus the new guidelines and examples of ``records``.

    ``records`` maps input keys to journal records. Inputs are taken in ``items`` order, so the
    result does not depend on the order in which records were finished.
    """
    stats = AssembleStats()
    base = base or Library()
    per_input = _candidates(items, records, stats)
    flat = [c for _, cands in per_input for c in cands]
    stats.candidates = len(flat)
    plan = plan_merge(base.guidelines, [c.text for c in flat], encoder=encoder,
                      config=dedup or DedupConfig())
    stats.merged = plan.merged
    new_ids = {plan.into[i] for i in plan.new}
    sources: dict[str, list[str]] = {gid: [] for gid in new_ids}
    for c, gid in zip(flat, plan.into, strict=True):
        if gid in sources and c.input_key not in sources[gid]:
            sources[gid].append(c.input_key)
    guidelines = list(base.guidelines)
    for i in plan.new:
        c = flat[i]
        gid = plan.into[i]
        guidelines.append(Guideline.create(
            c.text, c.category, source="generated",
            provenance=Provenance(inputs=sources[gid], model=model,
                                  prompt_version=prompt_version, created=c.created)))
    stats.new_guidelines = len(plan.new)
    examples = list(base.examples)
    seen = {(e.input, tuple(e.guideline_ids)) for e in examples}
    cursor = 0
    for item, cands in per_input:
        ids = list(dict.fromkeys(plan.into[cursor: cursor + len(cands)]))
        cursor += len(cands)
        if (item.text, tuple(ids)) in seen:
            continue
        seen.add((item.text, tuple(ids)))
        examples.append(Example(input=item.text, guideline_ids=ids,
                                split=split_for(item.text, test_percent)))
        stats.new_examples += 1
    library = Library(manifest=manifest or base.manifest, guidelines=guidelines,
                      examples=examples)
    return library.sealed(), stats
