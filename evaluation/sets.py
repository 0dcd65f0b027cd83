"""Evaluation sets: prompts (single or multi-turn) with optional harmful / benign labels and a
category, read from JSONL / JSON / CSV files or a Hugging Face dataset saved to disk."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Label = Literal["harmful", "benign"]
Messages = tuple[dict[str, str], ...]

# Column names tried, in order, when none is given.
TEXT_FIELDS = ("messages", "conversation", "text", "prompt", "question", "query", "instruction",
               "goal", "input")
LABEL_FIELDS = ("label", "harmful", "is_harmful")
CATEGORY_FIELDS = ("category", "type", "harm_category")
# Spellings of the two labels that files use.
_LABELS: dict[str, Label] = {
    "harmful": "harmful", "unsafe": "harmful", "risky": "harmful", "yes": "harmful",
    "true": "harmful", "1": "harmful", "benign": "benign", "safe": "benign", "harmless": "benign",
    "no": "benign", "false": "benign", "0": "benign",
}
_ROLES = ("system", "user", "assistant")


class SetError(Exception):
    """A set cannot be read: missing file, unknown format, no usable column, no prompts."""


@dataclass(frozen=True)
class Prompt:
    """One conversation to send (it ends with a user turn), with what is known about it."""

    key: str
    set: str
    messages: Messages
    label: Label | None = None
    category: str | None = None

    @property
    def text(self) -> str:
        """The latest user turn."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


@dataclass(frozen=True)
class PromptSet:
    """A named list of prompts; ``skipped`` counts rows that were unusable."""

    name: str
    prompts: tuple[Prompt, ...]
    skipped: int = 0


def prompt_key(set_name: str, messages: Sequence[dict[str, str]]) -> str:
    """Stable key of a prompt within its set (a hash of the conversation)."""
    blob = json.dumps([set_name, list(messages)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def make_prompt(set_name: str, conversation: Any, *, label: Any = None,
                category: Any = None) -> Prompt | None:
    """A prompt from a text or a message list; None when it is unusable (empty, no user turn
    last, unknown roles)."""
    messages = _messages(conversation)
    if not messages:
        return None
    return Prompt(key=prompt_key(set_name, messages), set=set_name, messages=messages,
                  label=parse_label(label), category=_category(category))


def _messages(value: Any) -> Messages | None:
    if isinstance(value, str):
        value = value.strip()
        return ({"role": "user", "content": value},) if value else None
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple) or not value:
        return None
    out = []
    for m in value:
        if not isinstance(m, dict):
            return None
        role, content = m.get("role") or m.get("from"), m.get("content", m.get("value"))
        role = {"human": "user", "gpt": "assistant"}.get(str(role), role)
        if role not in _ROLES or not isinstance(content, str):
            return None
        out.append({"role": str(role), "content": content})
    while out and out[-1]["role"] == "assistant":  # an answer to be graded is not sent
        out.pop()
    if not out or out[-1]["role"] != "user" or not out[-1]["content"].strip():
        return None
    return tuple(out)


def parse_label(value: Any) -> Label | None:
    """'harmful' / 'benign' from the spellings files use (bools, 0/1, unsafe/safe...)."""
    if value is None:
        return None
    return _LABELS.get(str(value).strip().lower())


def _category(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):  # NaN from pandas
        return None
    text = str(value).strip()
    return text or None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL / JSON / CSV file or a saved Hugging Face dataset, as dicts."""
    if path.is_dir():
        return _dataset_rows(path)
    if not path.is_file():
        raise SetError(f"{path}: no such file or directory")
    suffix = path.suffix.lower()
    try:
        text = path.read_text("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SetError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if suffix == ".csv":
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        return [dict(r) for r in csv.DictReader(io.StringIO(text, newline=""))]
    if suffix == ".jsonl":
        return list(_jsonl(text, path))
    if suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            return list(_jsonl(text, path))
        if isinstance(doc, dict):
            doc = next((v for v in doc.values() if isinstance(v, list)), [doc])
        return [r for r in doc if isinstance(r, dict)] if isinstance(doc, list) else []
    raise SetError(f"{path}: unknown set format {suffix or '(none)'!r} (use .jsonl, .json, .csv "
                   "or a dataset directory saved with save_to_disk)")


def _jsonl(text: str, path: Path) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            yield {}  # counted as skipped by the caller
            continue
        yield row if isinstance(row, dict) else {"text": row} if isinstance(row, str) else {}


def _dataset_rows(path: Path) -> list[dict[str, Any]]:
    try:
        from datasets import Dataset, DatasetDict, load_from_disk
    except ImportError:  # pragma: no cover - the train extra is missing
        raise SetError(f"{path}: reading a dataset directory needs `datasets`") from None
    try:
        loaded = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise SetError(f"{path}: not a Hugging Face dataset saved to disk ({exc})") from None
    parts = [loaded["test"]] if isinstance(loaded, DatasetDict) and "test" in loaded else \
        list(loaded.values()) if isinstance(loaded, DatasetDict) else [loaded]
    return [dict(r) for ds in parts if isinstance(ds, Dataset) for r in ds]


def _pick(columns: Iterable[str], wanted: str | None, candidates: Sequence[str],
          what: str, path: Path) -> str | None:
    cols = list(columns)
    if wanted is not None:
        if wanted not in cols:
            raise SetError(f"{path}: no {what} column {wanted!r} (columns: {', '.join(cols)})")
        return wanted
    return next((c for c in candidates if c in cols), None)


def load_file_set(path: Path, *, name: str | None = None, text_field: str | None = None,
                  label_field: str | None = None, category_field: str | None = None,
                  label: Label | None = None) -> PromptSet:
    """A set from a file; ``label`` applies to every row that has no label of its own."""
    rows = read_rows(path)
    columns = {c for r in rows for c in r}
    text_col = _pick(columns, text_field, TEXT_FIELDS, "text", path)
    # Without --text-field each row uses the first text column it fills (a file may mix
    # plain prompts and conversations).
    text_cols = [text_field] if text_field else [c for c in TEXT_FIELDS if c in columns]
    if text_col is None:
        raise SetError(f"{path}: no text column found (tried {', '.join(TEXT_FIELDS)}; columns: "
                       f"{', '.join(sorted(columns)) or 'none'}); name one with --text-field")
    label_col = _pick(columns, label_field, LABEL_FIELDS, "label", path)
    cat_col = _pick(columns, category_field, CATEGORY_FIELDS, "category", path)
    set_name = name or path.stem
    prompts, skipped = [], 0
    for row in rows:
        text = next((row[c] for c in text_cols if row.get(c) is not None), None)
        p = make_prompt(set_name, text,
                        label=row.get(label_col) if label_col else None,
                        category=row.get(cat_col) if cat_col else None)
        if p is None:
            skipped += 1
            continue
        prompts.append(p if p.label or label is None else
                       Prompt(p.key, p.set, p.messages, label, p.category))
    return finish_set(set_name, prompts, skipped, where=str(path))


def finish_set(name: str, prompts: Iterable[Prompt], skipped: int, *, where: str) -> PromptSet:
    """Drop duplicate prompts (counted as skipped); refuse a set with none left."""
    seen: set[str] = set()
    kept = []
    for p in prompts:
        if p.key in seen:
            skipped += 1
            continue
        seen.add(p.key)
        kept.append(p)
    if not kept:
        raise SetError(f"{where}: no usable prompts ({skipped} rows skipped)")
    return PromptSet(name=name, prompts=tuple(kept), skipped=skipped)


def stratified_sample(prompts: Sequence[Prompt], n: int, *, seed: int = 13) -> list[Prompt]:
    """``n`` prompts (all when ``n`` is 0 or more than there are), spread over the (label,
    category) strata in proportion to their size; the same seed gives the same sample."""
    if n <= 0 or n >= len(prompts):
        return list(prompts)
    strata: dict[tuple[str, str], list[Prompt]] = defaultdict(list)
    for p in prompts:
        strata[(p.label or "", p.category or "")].append(p)
    rng = random.Random(seed)
    for group in strata.values():
        rng.shuffle(group)
    # Largest remainder: each stratum gets its share, leftovers go to the largest remainders.
    shares = {s: n * len(g) / len(prompts) for s, g in strata.items()}
    take = {s: int(v) for s, v in shares.items()}
    for s in sorted(shares, key=lambda s: (take[s] - shares[s], s))[: n - sum(take.values())]:
        take[s] += 1
    chosen = {p.key for s, g in strata.items() for p in g[: take[s]]}
    return [p for p in prompts if p.key in chosen]
