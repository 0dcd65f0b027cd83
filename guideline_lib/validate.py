"""Library checks, statistics and version diffs: pure functions over Library objects."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from rapidfuzz import fuzz, process

from guideline_lib.schema import MAX_GUIDELINE_CHARS, TAXONOMY, Guideline, Library, guideline_id

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One defect found in a library."""

    level: Level
    code: str
    message: str


@dataclass
class Report:
    """All findings of a validation run."""

    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, level: Level, code: str, message: str) -> None:
        self.findings.append(Finding(level, code, message))


def near_duplicates(
    guidelines: list[Guideline], threshold: float = 0.85
) -> list[tuple[Guideline, Guideline, float]]:
    """Pairs whose fuzzy similarity (token-sort ratio on lower-cased text) is >= threshold."""
    if len(guidelines) < 2:
        return []
    texts = [g.text.lower() for g in guidelines]
    scores = process.cdist(texts, texts, scorer=fuzz.token_sort_ratio, workers=-1,
                           score_cutoff=threshold * 100)
    rows, cols = np.nonzero(np.triu(scores, k=1))
    return [(guidelines[i], guidelines[j], float(scores[i, j]) / 100) for i, j in
            zip(rows.tolist(), cols.tolist(), strict=True)]


def validate_library(
    library: Library,
    *,
    dup_threshold: float = 0.85,
    max_chars: int = MAX_GUIDELINE_CHARS,
) -> Report:
    """Check categories, kinds, ids, text lengths, example links and near-duplicates."""
    report = Report()
    ids = Counter(g.id for g in library.guidelines)
    for gid, n in ids.items():
        if n > 1:
            report.add("error", "duplicate_id", f"id {gid} appears {n} times")
    for g in library.guidelines:
        if g.category not in TAXONOMY:
            report.add("error", "unknown_category", f"{g.id}: unknown category {g.category!r}")
        elif TAXONOMY[g.category] != g.kind:
            report.add("error", "kind_mismatch",
                       f"{g.id}: kind {g.kind!r} but {g.category} is {TAXONOMY[g.category]!r}")
        if not g.text.strip():
            report.add("error", "empty_text", f"{g.id}: empty text")
        elif len(g.text) > max_chars:
            report.add("error", "too_long", f"{g.id}: {len(g.text)} characters (max {max_chars})")
        if g.text.strip() and not g.title:
            report.add("warning", "no_title", f"{g.id}: text is not 'Title: instruction'")
        if g.text.strip() and g.id != guideline_id(g.text):
            report.add("warning", "id_not_from_text", f"{g.id}: id is not derived from its text")
    known = set(ids)
    linked: Counter[str] = Counter()
    for n, ex in enumerate(library.examples):
        if not ex.input.strip():
            report.add("error", "empty_input", f"example {n}: empty input")
        if not ex.guideline_ids:
            report.add("error", "no_guidelines", f"example {n}: links no guideline")
        for gid in ex.guideline_ids:
            linked[gid] += 1
            if gid not in known:
                report.add("error", "dangling_id", f"example {n}: unknown guideline id {gid}")
    for a, b, score in near_duplicates(library.guidelines, dup_threshold):
        report.add("error", "near_duplicate",
                   f"{a.id} ~ {b.id} ({score:.2f}): {a.text[:60]!r} / {b.text[:60]!r}")
    unlinked = [g.id for g in library.guidelines if not linked[g.id]]
    if library.examples and unlinked:
        report.add("warning", "unlinked",
                   f"{len(unlinked)} guidelines have no example (e.g. {unlinked[0]})")
    return report


def library_stats(library: Library) -> list[dict[str, object]]:
    """Per category: kind, guidelines, examples (train / test) linking to it."""
    by_id = library.by_id()
    rows = []
    ex_train: Counter[str] = Counter()
    ex_test: Counter[str] = Counter()
    for ex in library.examples:
        cats = {by_id[g].category for g in ex.guideline_ids if g in by_id}
        for c in cats:
            (ex_train if ex.split == "train" else ex_test)[c] += 1
    counts = Counter(g.category for g in library.guidelines)
    for cat in [*TAXONOMY, *sorted(set(counts) - set(TAXONOMY))]:
        rows.append({
            "category": cat,
            "kind": TAXONOMY.get(cat, "?"),
            "guidelines": counts.get(cat, 0),
            "examples_train": ex_train.get(cat, 0),
            "examples_test": ex_test.get(cat, 0),
        })
    return rows


@dataclass(frozen=True)
class LibraryDiff:
    """What changed between two library versions."""

    added: list[Guideline]
    removed: list[Guideline]
    changed: list[tuple[Guideline, Guideline]]  # same id, other category/kind/tags/provenance

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def diff_libraries(old: Library, new: Library) -> LibraryDiff:
    """Guidelines added, removed, or changed in metadata between ``old`` and ``new``."""
    a, b = old.by_id(), new.by_id()
    added = [b[i] for i in b if i not in a]
    removed = [a[i] for i in a if i not in b]
    changed = [(a[i], b[i]) for i in a if i in b and a[i] != b[i]]
    return LibraryDiff(added=added, removed=removed, changed=changed)


def merge_libraries(base: Library, *others: Library, name: str | None = None) -> Library:
    """Union of libraries: guidelines by id (first wins), examples de-duplicated by input."""
    guidelines = {g.id: g for g in base.guidelines}
    examples = {(e.input, tuple(e.guideline_ids)): e for e in base.examples}
    for lib in others:
        for g in lib.guidelines:
            guidelines.setdefault(g.id, g)
        for e in lib.examples:
            examples.setdefault((e.input, tuple(e.guideline_ids)), e)
    manifest = base.manifest.model_copy(update={"name": name or base.manifest.name})
    return Library(manifest=manifest, guidelines=list(guidelines.values()),
                   examples=list(examples.values())).sealed()
