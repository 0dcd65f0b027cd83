"""No project-written data may share an 8-word run with a prompt of a public evaluation set.

Evaluation sets are for measuring only. Every text field of every data file the project writes
(the starter library and its sources, prompt templates, benchmark sets, and data sets later
stages add) and every string in the test code (fixtures) is compared with every string under
../shared/data; words are lowercase [a-z0-9'] runs. Skipped when that folder is absent.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED_DATA

N = 8
WORD = re.compile(r"[a-z0-9']+")
DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".txt", ".json.gz", ".jsonl.gz", ".csv.gz")
# Benchmark results (bench/results/) are checked too: figures over the public sets may be
# committed, their prompts (or example outputs quoting them) may not.
NOT_PROJECT_DATA: tuple[str, ...] = ()


def shingles(text: str) -> set[tuple[str, ...]]:
    """Every run of N consecutive words of ``text``."""
    words = WORD.findall(text.lower())
    return {tuple(words[i:i + N]) for i in range(len(words) - N + 1)}


def strings(value: object) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def file_strings(path: Path) -> Iterator[str]:
    """The text fields of a JSON / JSONL / CSV / text file (optionally gzipped)."""
    csv.field_size_limit(1 << 30)
    name = path.name.removesuffix(".gz")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        if name.endswith(".jsonl"):
            for line in fh:
                try:
                    yield from strings(json.loads(line))
                except json.JSONDecodeError:
                    yield line
        elif name.endswith(".json"):
            yield from strings(json.load(fh))
        elif name.endswith(".csv"):
            for row in csv.reader(fh):
                yield from row
        else:
            yield fh.read()


def python_strings(path: Path) -> Iterator[str]:
    """String constants of a Python file (test fixtures live there)."""
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def project_texts() -> Iterator[tuple[str, str]]:
    """(file, text) for every project-written data file and test module in the repository."""
    skip_dirs = {".git", ".venv", "var", "__pycache__", ".mypy_cache", ".ruff_cache",
                 ".pytest_cache", "node_modules"}
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT).as_posix()
        if not path.is_file() or skip_dirs & set(path.relative_to(ROOT).parts):
            continue
        if rel.startswith(NOT_PROJECT_DATA):
            continue
        if path.name.endswith(DATA_SUFFIXES):
            for text in file_strings(path):
                yield rel, text
        elif rel.startswith("tests/") and path.suffix == ".py":
            for text in python_strings(path):
                yield rel, text


@pytest.fixture(scope="module")
def public_shingles() -> set[tuple[str, ...]]:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: nothing to compare with")
    found: set[tuple[str, ...]] = set()
    for path in sorted(SHARED_DATA.rglob("*")):
        if path.is_file() and path.name.endswith(DATA_SUFFIXES):
            for text in file_strings(path):
                found |= shingles(text)
    assert found, "no prompts read from the shared data"
    return found


def test_shingles_are_runs_of_eight_lowercase_words():
    assert shingles("One two three four five six seven") == set()
    assert shingles("One, TWO three-four five six seven eight's nine") == {
        ("one", "two", "three", "four", "five", "six", "seven", "eight's"),
        ("two", "three", "four", "five", "six", "seven", "eight's", "nine")}


def test_no_project_data_shares_an_eight_word_run_with_public_prompts(public_shingles):
    leaks = []
    for rel, text in project_texts():
        shared = shingles(text) & public_shingles
        if shared:
            leaks.append(f"{rel}: {' '.join(min(shared))!r} in {text[:80]!r}")
    assert leaks == [], f"{len(leaks)} leaks:\n" + "\n".join(leaks[:40])
