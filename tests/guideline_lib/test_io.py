"""Library directories: atomic saves, crash recovery and the content-hash check."""

from __future__ import annotations

import json

import pytest

from guideline_lib.io import (
    GUIDELINES,
    MANIFEST,
    LibraryError,
    atomic_directory,
    atomic_write_text,
    load_library,
    save_library,
)
from guideline_lib.schema import Guideline, Library


def test_round_trip(small_lib: Library, tmp_path) -> None:
    saved = save_library(small_lib, tmp_path / "lib")
    loaded = load_library(tmp_path / "lib")
    assert loaded == saved
    assert loaded.manifest.counts == small_lib.counts()


def test_failed_save_leaves_the_old_library_intact(small_lib: Library, tmp_path) -> None:
    save_library(small_lib, tmp_path / "lib")
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "lib") as scratch:
        (scratch / GUIDELINES).write_text("half written")
        raise RuntimeError("disk full")
    assert load_library(tmp_path / "lib").guidelines == small_lib.guidelines
    assert [p.name for p in tmp_path.iterdir()] == ["lib"]  # no scratch left behind


def test_crash_between_renames_is_recovered(small_lib: Library, tmp_path) -> None:
    save_library(small_lib, tmp_path / "lib")
    (tmp_path / "lib").rename(tmp_path / ".lib.old")  # state after the first rename only
    assert load_library(tmp_path / "lib").guidelines == small_lib.guidelines


def test_atomic_write_text_replaces_whole_files(tmp_path) -> None:
    atomic_write_text(tmp_path / "f.txt", "one")
    atomic_write_text(tmp_path / "f.txt", "two")
    assert (tmp_path / "f.txt").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_hand_edited_library_fails_the_hash_check(small_lib: Library, tmp_path) -> None:
    save_library(small_lib, tmp_path / "lib")
    path = tmp_path / "lib" / GUIDELINES
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[0]["text"] = rows[0]["text"] + " Edited."
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(LibraryError, match="content hash mismatch"):
        load_library(tmp_path / "lib")
    assert load_library(tmp_path / "lib", check_hash=False).guidelines[0].text.endswith("Edited.")


def test_malformed_and_missing_libraries_are_errors(tmp_path) -> None:
    with pytest.raises(LibraryError, match="not a library directory"):
        load_library(tmp_path)
    save_library(Library(guidelines=[Guideline.create("A: b c d e", "quality_advice")]),
                 tmp_path / "lib")
    (tmp_path / "lib" / GUIDELINES).write_text("{not json\n")
    with pytest.raises(LibraryError, match="line 1: not valid JSON"):
        load_library(tmp_path / "lib")
    (tmp_path / "lib" / MANIFEST).write_text("[]")
    with pytest.raises(LibraryError):
        load_library(tmp_path / "lib")
