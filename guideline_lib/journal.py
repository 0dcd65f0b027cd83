"""An append-only JSONL journal of finished work items, safe against kill -9."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson


class JournalError(Exception):
    """The journal is locked by another process or cannot be written."""


def _scan(data: bytes) -> tuple[int, list[dict[str, Any]]]:
    """Length of the complete-line prefix of ``data`` and the records in it."""
    end = data.rfind(b"\n") + 1  # a torn last line (no newline) is not part of the journal
    records = []
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("key"), str):
            records.append(record)
    return end, records


class Journal:
    """Append-only JSONL of ``{"key": ..., ...}`` records, one per finished item.

    Each append is one fsynced write. A torn last line left by a kill is ignored on read and
    cut off before the next append. A key is recorded once; the only exception is a record
    whose ``status`` is ``"failed"``, which a later record for the same key may supersede
    (``records()`` then yields the later one).
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._status: dict[str, str] = {}
        self._valid_len = 0
        self._load()

    def _load(self) -> None:
        data = self.path.read_bytes() if self.path.exists() else b""
        self._valid_len, records = _scan(data)
        self._status = {r["key"]: str(r.get("status", "ok")) for r in records}

    def open(self) -> None:
        """Take the journal for writing: lock it and cut off a torn last line."""
        with self._lock:
            if self._fd is not None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise JournalError(
                    f"{self.path} is in use by another running build; wait for it or stop it"
                ) from None
            self._fd = fd
            self._load()  # re-read under the lock: another process may have written meanwhile
            if os.fstat(fd).st_size != self._valid_len:
                os.ftruncate(fd, self._valid_len)
                os.fsync(fd)

    def append(self, key: str, record: dict[str, Any]) -> bool:
        """Write one record and fsync; False (nothing written) if ``key`` is already done."""
        if self._fd is None:
            self.open()
        line = orjson.dumps({**record, "key": key}) + b"\n"
        with self._lock:
            previous = self._status.get(key)
            if previous is not None and previous != "failed":
                return False
            assert self._fd is not None
            os.write(self._fd, line)
            os.fsync(self._fd)
            self._valid_len += len(line)
            self._status[key] = str(record.get("status", "ok"))
            return True

    def done_keys(self) -> set[str]:
        """Keys with a record (ok or failed)."""
        return set(self._status)

    def failed_keys(self) -> set[str]:
        """Keys whose latest record is a failure."""
        return {k for k, s in self._status.items() if s == "failed"}

    def records(self) -> Iterator[dict[str, Any]]:
        """The latest record of each key, in the order keys were first recorded."""
        data = self.path.read_bytes() if self.path.exists() else b""
        _, records = _scan(data)
        latest: dict[str, dict[str, Any]] = {}
        for r in records:
            latest[r["key"]] = r
        yield from latest.values()

    def __len__(self) -> int:
        return len(self._status)

    def close(self) -> None:
        """Release the lock and the file."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
