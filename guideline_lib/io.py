"""Reading and writing library directories; all writes are atomic."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from guideline_lib.schema import Example, Guideline, Library, Manifest

MANIFEST = "manifest.json"
GUIDELINES = "guidelines.jsonl"
EXAMPLES = "examples.jsonl"


class LibraryError(Exception):
    """A library directory is missing, malformed or inconsistent with its manifest."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Text form of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a scratch directory that replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield scratch
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(scratch, target)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def _recover(path: Path) -> None:
    # A crash between the two renames of atomic_directory leaves only the .old copy.
    old = path.with_name(f".{path.name}.old")
    if not path.exists() and old.exists():
        os.replace(old, path)


def _jsonl(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def save_library(library: Library, path: Path | str) -> Library:
    """Write a library directory atomically; returns the sealed library that was written."""
    sealed = library.sealed()
    with atomic_directory(Path(path)) as tmp:
        (tmp / GUIDELINES).write_text(
            _jsonl([g.model_dump_json() for g in sealed.guidelines]), encoding="utf-8"
        )
        (tmp / EXAMPLES).write_text(
            _jsonl([e.model_dump_json() for e in sealed.examples]), encoding="utf-8"
        )
        (tmp / MANIFEST).write_text(sealed.manifest.model_dump_json(indent=2) + "\n", "utf-8")
    return sealed


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise LibraryError(f"{path.name} line {n}: not valid JSON ({exc.msg})") from exc
    return rows


def load_library(path: Path | str, *, check_hash: bool = True) -> Library:
    """Read a library directory; with ``check_hash`` the manifest hash must match the content."""
    path = Path(path)
    _recover(path)
    if not (path / MANIFEST).is_file():
        raise LibraryError(f"{path}: not a library directory (no {MANIFEST})")
    try:
        manifest = Manifest.model_validate_json((path / MANIFEST).read_text("utf-8"))
        guidelines = [Guideline.model_validate(r) for r in _read_jsonl(path / GUIDELINES)]
        examples = (
            [Example.model_validate(r) for r in _read_jsonl(path / EXAMPLES)]
            if (path / EXAMPLES).exists()
            else []
        )
    except (ValueError, OSError) as exc:
        raise LibraryError(f"{path}: {exc}") from exc
    library = Library(manifest=manifest, guidelines=guidelines, examples=examples)
    if check_hash and manifest.content_hash and manifest.content_hash != library.content_hash():
        raise LibraryError(
            f"{path}: content hash mismatch (manifest {manifest.content_hash[:12]}, "
            f"content {library.content_hash()[:12]}); was a file edited by hand? "
            "Re-save it with `guide-align library merge` or rebuild it."
        )
    return library


def default_library_path() -> Path:
    """The starter library shipped inside the package."""
    return Path(__file__).resolve().parent / "starter"
