"""Reading build inputs from JSONL / JSON / CSV / text files or a saved Hugging Face dataset."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guideline_lib.schema import normalise_text

SKIP_REASONS = ("empty", "too_long", "not_utf8", "malformed", "duplicate")
MAX_NOTES = 20


class InputError(Exception):
    """An input path cannot be read at all (missing, unknown format, no such column)."""


@dataclass(frozen=True)
class InputItem:
    """One build input: its text, where it came from and a stable key."""

    key: str
    text: str
    source: str
    line: int


@dataclass
class ReadStats:
    """How many rows were read, kept and skipped (by reason), with the first few messages."""

    read: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        """Count one skipped row and remember a message for the first few."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.notes) < MAX_NOTES:
            self.notes.append(f"{where}: skipped ({reason}{': ' + detail if detail else ''})")

    def summary(self) -> str:
        """One line: read, kept and skipped counts."""
        parts = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items()) if n)
        return f"read {self.read} rows, kept {self.kept}" + (f", skipped {parts}" if parts else "")


def input_key(text: str) -> str:
    """Stable key of an input: a hash of its normalised text (duplicates collapse)."""
    norm = normalise_text(text) or text.strip()
    return "i_" + hashlib.sha1(norm.encode("utf-8")).hexdigest()[:16]


def _text_of(value: Any) -> str | None:
    """A row's text: a string, or the user turns of a message list joined with newlines."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        turns = []
        for m in value:
            if isinstance(m, str):
                turns.append(m)
            elif isinstance(m, dict) and m.get("role", "user") == "user":
                content = m.get("content")
                if isinstance(content, list):  # OpenAI content parts
                    content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
                if isinstance(content, str):
                    turns.append(content)
                else:
                    return None
        return "\n".join(turns)
    return None


# A raw row: (line number, value or None, reason it is unusable or None, detail).
Row = tuple[int, Any, str | None, str]


def _field(record: Any, text_field: str) -> tuple[Any, str | None, str]:
    if isinstance(record, str):
        return record, None, ""
    if not isinstance(record, dict):
        return None, "malformed", f"a JSON {type(record).__name__}, not an object"
    if text_field not in record:
        fields = ", ".join(list(record)[:8])
        return None, "malformed", f"no field {text_field!r} (fields: {fields})"
    return record[text_field], None, ""


def _lines(data: bytes) -> list[bytes]:
    """Lines of a file; the empty remainder after a final newline is not a row."""
    lines = data.split(b"\n")
    return lines[:-1] if lines and not lines[-1].strip() else lines


def _jsonl_rows(data: bytes, text_field: str) -> Iterator[Row]:
    for n, raw in enumerate(_lines(data), 1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield n, None, "not_utf8", "bytes are not UTF-8"
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield n, None, "malformed", f"not valid JSON ({exc.msg})"
            continue
        value, reason, detail = _field(record, text_field)
        yield n, value, reason, detail


def _json_rows(data: bytes, text_field: str) -> Iterator[Row]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        yield from _jsonl_rows(data, text_field)  # find the bad rows one by one
        return
    except json.JSONDecodeError:
        yield from _jsonl_rows(data, text_field)  # JSON Lines under a .json name
        return
    if isinstance(doc, dict):
        doc = next((v for v in doc.values() if isinstance(v, list)), [doc])
    if not isinstance(doc, list):
        yield 1, None, "malformed", "top level is neither a list nor an object"
        return
    for n, record in enumerate(doc, 1):
        value, reason, detail = _field(record, text_field)
        yield n, value, reason, detail


def _csv_rows(data: bytes, text_field: str, where: str) -> Iterator[Row]:
    text = data.decode("utf-8", errors="surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return
    if text_field not in header:
        raise InputError(f"{where}: no column {text_field!r} (columns: {', '.join(header)}); "
                         "choose one with --text-field")
    col = header.index(text_field)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, None, "malformed", f"CSV error ({exc})"
            continue
        if not row:
            continue
        if len(row) != len(header):
            yield reader.line_num, None, "malformed", f"{len(row)} fields, header has {len(header)}"
            continue
        yield reader.line_num, row[col], None, ""


def _txt_rows(data: bytes) -> Iterator[Row]:
    for n, raw in enumerate(_lines(data), 1):
        try:
            yield n, raw.decode("utf-8").rstrip("\r"), None, ""
        except UnicodeDecodeError:
            yield n, None, "not_utf8", "bytes are not UTF-8"


def _dataset_rows(path: Path, text_field: str) -> Iterator[tuple[str, Row]]:
    try:
        from datasets import Dataset, DatasetDict, load_from_disk
    except ImportError as exc:  # pragma: no cover - the train extra is missing
        raise InputError(f"{path}: reading a dataset directory needs `datasets`") from exc
    try:
        loaded = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"{path}: not a Hugging Face dataset saved to disk ({exc})") from exc
    splits = loaded.items() if isinstance(loaded, DatasetDict) else [("", loaded)]
    for split, ds in splits:
        assert isinstance(ds, Dataset)
        if text_field not in ds.column_names:
            raise InputError(f"{path}: no column {text_field!r} (columns: "
                             f"{', '.join(ds.column_names)}); choose one with --text-field")
        name = f"{path}[{split}]" if split else str(path)
        for n, value in enumerate(ds[text_field], 1):
            yield name, (n, value, None, "")


def _rows(path: Path, text_field: str) -> Iterator[tuple[str, Row]]:
    if path.is_dir():
        yield from _dataset_rows(path, text_field)
        return
    if not path.is_file():
        raise InputError(f"{path}: no such file or directory")
    data = path.read_bytes()
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: not a readable gzip file ({exc})") from exc
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ".txt"
    where = str(path)
    if ext == ".jsonl":
        rows: Iterator[Row] = _jsonl_rows(data, text_field)
    elif ext == ".json":
        rows = _json_rows(data, text_field)
    elif ext in (".csv", ".tsv"):
        rows = _csv_rows(data, text_field, where)
    elif ext in (".txt", ".text", ".md", ""):
        rows = _txt_rows(data)
    else:
        raise InputError(f"{path}: unknown input format {ext!r} (use .jsonl, .json, .csv, .txt "
                         "or a dataset directory)")
    for row in rows:
        yield where, row


def read_inputs(
    paths: Sequence[Path], *, text_field: str = "text", max_chars: int = 8000
) -> tuple[list[InputItem], ReadStats]:
    """Read, clean and de-duplicate inputs; bad rows are skipped and counted, never fatal."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long fields are counted, not fatal
    stats = ReadStats(skipped=dict.fromkeys(SKIP_REASONS, 0))
    items: list[InputItem] = []
    seen: Counter[str] = Counter()
    for path in paths:
        for where, (line, value, reason, detail) in _rows(Path(path), text_field):
            stats.read += 1
            here = f"{where}:{line}"
            if reason is not None:
                stats.skip(reason, here, detail)
                continue
            if value is None:
                stats.skip("empty", here)
                continue
            text = _text_of(value)
            if text is None:
                stats.skip("malformed", here, f"{text_field!r} is a {type(value).__name__}")
                continue
            if any("\udc80" <= c <= "\udcff" for c in text):  # surrogateescape'd bytes
                stats.skip("not_utf8", here, "bytes are not UTF-8")
                continue
            text = text.replace("\x00", "").strip()
            if not text:
                stats.skip("empty", here)
                continue
            if len(text) > max_chars:
                stats.skip("too_long", here, f"{len(text)} characters, limit {max_chars}")
                continue
            key = input_key(text)
            seen[key] += 1
            if seen[key] > 1:
                stats.skip("duplicate", here)
                continue
            items.append(InputItem(key=key, text=text, source=where, line=line))
    stats.kept = len(items)
    return items, stats
