"""A directory of JSONL result shards, each written atomically; read back deduplicated by key."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from guideline_lib.io import atomic_write_bytes

PATTERN = "part-*.jsonl"
SHARDS = "shards"  # a run directory's shards folder (the journal's Ray counterpart)


class ShardStore:
    """Result records as ``part-<uuid>.jsonl`` files under one directory.

    A shard is renamed into place only once complete (tmp + rename), so a killed run leaves
    whole shards or none. The same key may appear in two shards (a task that Ray retried after
    its shard was written); reading keeps one record per key, as the journal does: the first
    ok record, else the latest failed one.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def write(self, records: Iterable[dict[str, Any]]) -> Path | None:
        """Write ``records`` (each with a ``key``) as one new shard; None when there are none."""
        data = b"".join(orjson.dumps(r) + b"\n" for r in records)
        if not data:
            return None
        target = self.path / f"part-{uuid.uuid4().hex}.jsonl"
        atomic_write_bytes(target, data)
        return target

    def shards(self) -> list[Path]:
        """The complete shards, in name order."""
        return sorted(self.path.glob(PATTERN)) if self.path.is_dir() else []

    def _all(self) -> Iterator[dict[str, Any]]:
        for shard in self.shards():
            for line in shard.read_bytes().splitlines():
                if line.strip():
                    record = orjson.loads(line)
                    if isinstance(record, dict) and isinstance(record.get("key"), str):
                        yield record

    def records(self) -> Iterator[dict[str, Any]]:
        """One record per key (the first ok one, else the latest failed one)."""
        yield from merge_records(self._all())

    def status(self) -> dict[str, str]:
        """Each key's status (ok or failed) after deduplication."""
        return {r["key"]: str(r.get("status", "ok")) for r in self.records()}

    def __len__(self) -> int:
        return len(self.status())


def merge_records(*sources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per key over ``sources`` in order: the first ok one, else the latest failed."""
    latest: dict[str, dict[str, Any]] = {}
    for source in sources:
        for r in source:
            previous = latest.get(r["key"])
            if previous is None or previous.get("status", "ok") == "failed":
                latest[r["key"]] = r
    return list(latest.values())
