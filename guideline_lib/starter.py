"""Assembling the shipped starter library from its hand-written per-category sources."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from guideline_lib.schema import (
    TAXONOMY,
    Example,
    Guideline,
    Library,
    Manifest,
    Provenance,
    normalise_text,
)

SOURCES = Path(__file__).resolve().parent / "starter_src"
TEST_PERCENT = 15
# 1.1.0: example inputs that shared wording with public evaluation prompts were rewritten.
STARTER_VERSION = "1.1.0"
RECATEGORISE = "recategorise.json"  # key -> category overrides, kept beside the sources
EXTRA_SUFFIX = ".examples.json"  # {"examples": [{"input", "keys"}]}, keys of any category


class StarterError(Exception):
    """A starter source file is malformed."""


def split_for(text: str, test_percent: int = TEST_PERCENT) -> str:
    """Stable train/test assignment from a hash of the normalised input."""
    bucket = int(hashlib.sha1(normalise_text(text).encode()).hexdigest()[:8], 16) % 100
    return "test" if bucket < test_percent else "train"


def assemble_starter(
    sources: Path = SOURCES, *, version: str = STARTER_VERSION, test_percent: int = TEST_PERCENT
) -> Library:
    """Read every ``<category>.json`` source and build the starter library."""
    guidelines: dict[str, Guideline] = {}
    examples: list[Example] = []
    moves_file = sources / RECATEGORISE
    moves: dict[str, str] = (
        json.loads(moves_file.read_text("utf-8")) if moves_file.exists() else {}
    )
    seen_inputs: set[str] = set()
    all_keys: dict[str, str] = {}
    for path in sorted(sources.glob("*.json")):
        if path.name == RECATEGORISE or path.name.endswith(EXTRA_SUFFIX):
            continue
        data = json.loads(path.read_text("utf-8"))
        category = data.get("category")
        if category not in TAXONOMY:
            raise StarterError(f"{path.name}: unknown category {category!r}")
        keys: dict[str, str] = {}
        for item in data["guidelines"]:
            # A source may file a guideline under another category (e.g. benign uses of
            # alarming words written beside the safety ones belong to a quality category).
            target = item.get("category") or moves.get(item["key"]) or category
            if target not in TAXONOMY:
                raise StarterError(f"{path.name}: {item['key']} has unknown category {target!r}")
            g = Guideline.create(
                item["text"], target,
                provenance=Provenance(note=f"starter:{item['key']}", prompt_version="hand-written"),
            )
            if g.id in guidelines:
                raise StarterError(f"{path.name}: {item['key']} repeats guideline {g.id}")
            guidelines[g.id] = g
            keys[item["key"]] = g.id
        all_keys.update(keys)
        examples += _examples(path, data["examples"], keys, seen_inputs, test_percent)
    # Extra example files link inputs to guidelines of any category by key.
    for path in sorted(sources.glob(f"*{EXTRA_SUFFIX}")):
        data = json.loads(path.read_text("utf-8"))
        examples += _examples(path, data["examples"], all_keys, seen_inputs, test_percent)
    manifest = Manifest(
        name="guide-align-starter",
        version=version,
        producer={"tool": "guide-align library starter", "sources": "guideline_lib/starter_src",
                  "test_percent": test_percent},
    )
    return Library(manifest=manifest, guidelines=list(guidelines.values()),
                   examples=examples).sealed()


def _examples(path: Path, items: list[dict[str, object]], keys: dict[str, str],
              seen: set[str], test_percent: int) -> list[Example]:
    out = []
    for ex in items:
        text = str(ex["input"]).strip()
        norm = normalise_text(text)
        if not text or norm in seen:
            continue
        seen.add(norm)
        try:
            ids = list(dict.fromkeys(keys[str(k)] for k in ex["keys"]))  # type: ignore[attr-defined]
        except KeyError as exc:
            raise StarterError(f"{path.name}: example links unknown key {exc}") from None
        out.append(Example(input=text, guideline_ids=ids,
                           split=split_for(text, test_percent)))
    return out
