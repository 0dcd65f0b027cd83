"""The append-only journal: one record per key, torn lines survived, one writer at a time."""

from __future__ import annotations

import json

import pytest

from guideline_lib.journal import Journal, JournalError


def lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_records_round_trip_with_keys(tmp_path) -> None:
    with Journal(tmp_path / "j.jsonl") as journal:
        assert journal.append("a", {"status": "ok", "n": 1})
        assert journal.append("b", {"n": 2})
    reread = Journal(tmp_path / "j.jsonl")
    assert reread.done_keys() == {"a", "b"}
    assert list(reread.records()) == [{"status": "ok", "n": 1, "key": "a"}, {"n": 2, "key": "b"}]


def test_a_key_is_never_recorded_twice(tmp_path) -> None:
    with Journal(tmp_path / "j.jsonl") as journal:
        journal.append("a", {"status": "ok", "n": 1})
        assert not journal.append("a", {"status": "ok", "n": 2})
    with Journal(tmp_path / "j.jsonl") as again:  # also across processes / reopenings
        assert not again.append("a", {"status": "ok", "n": 3})
    assert [r["n"] for r in lines(tmp_path / "j.jsonl")] == [1]


def test_a_failure_can_be_superseded(tmp_path) -> None:
    with Journal(tmp_path / "j.jsonl") as journal:
        journal.append("a", {"status": "failed", "error": "boom"})
        assert journal.failed_keys() == {"a"}
        assert journal.append("a", {"status": "ok", "n": 1})
        assert journal.failed_keys() == set()
        assert not journal.append("a", {"status": "ok", "n": 2})
    assert [r["status"] for r in Journal(tmp_path / "j.jsonl").records()] == ["ok"]


def test_torn_last_line_is_ignored_then_cut_before_the_next_append(tmp_path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"key": "a", "status": "ok"}\n{"key": "b", "stat')  # killed mid-write
    journal = Journal(path)
    assert journal.done_keys() == {"a"}
    assert [r["key"] for r in journal.records()] == ["a"]
    journal.append("b", {"status": "ok"})
    journal.close()
    assert [r["key"] for r in lines(path)] == ["a", "b"]  # every line parses


def test_second_writer_is_refused_while_the_first_holds_it(tmp_path) -> None:
    first = Journal(tmp_path / "j.jsonl")
    first.open()
    second = Journal(tmp_path / "j.jsonl")
    with pytest.raises(JournalError, match="in use"):
        second.append("x", {})
    first.close()
    assert second.append("x", {})  # free again once the first build is gone
    second.close()


def test_missing_journal_reads_as_empty_and_is_not_created(tmp_path) -> None:
    journal = Journal(tmp_path / "sub" / "j.jsonl")
    assert journal.done_keys() == set() and list(journal.records()) == []
    assert not (tmp_path / "sub").exists()
