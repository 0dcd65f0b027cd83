"""run_batch: journaled, bounded, resumable work over many items."""

from __future__ import annotations

import asyncio

import pytest

from guideline_lib.batch import run_batch
from guideline_lib.journal import Journal


class Fatal(Exception):
    pass


def run(items, worker, journal, **kw):  # type: ignore[no-untyped-def]
    options = {"key": str, "concurrency": 3, "desc": "test", "show_progress": False}
    options.update(kw)
    return asyncio.run(run_batch(items, worker, journal=journal, **options))


def test_results_and_failures_are_journaled(tmp_path) -> None:
    async def worker(n: int) -> dict:
        if n == 3:
            raise ValueError("three is bad")
        if n == 4:
            return {"status": "failed", "why": "declined"}
        return {"square": n * n}

    journal = Journal(tmp_path / "j.jsonl")
    stats = run([1, 2, 3, 4], worker, journal)
    assert (stats.total, stats.ok, stats.failed, stats.skipped_done) == (4, 2, 2, 0)
    records = {r["key"]: r for r in journal.records()}
    assert records["2"] == {"square": 4, "status": "ok", "key": "2"}
    assert records["3"]["status"] == "failed"
    assert "ValueError: three is bad" in records["3"]["error"]
    assert records["4"]["why"] == "declined"


def test_done_items_are_skipped_and_failed_ones_retried_on_request(tmp_path) -> None:
    calls: list[int] = []
    fail = {2}

    async def worker(n: int) -> dict:
        calls.append(n)
        if n in fail:
            raise RuntimeError("flaky")
        return {}

    journal = Journal(tmp_path / "j.jsonl")
    run([1, 2, 3], worker, journal)
    calls.clear()
    stats = run([1, 2, 3, 4], worker, journal)
    assert calls == [4] and stats.skipped_done == 3
    fail.clear()
    calls.clear()
    stats = run([1, 2, 3, 4], worker, journal, retry_failed=True)
    assert calls == [2] and stats.ok == 1 and journal.failed_keys() == set()


def test_duplicate_items_run_once(tmp_path) -> None:
    calls: list[int] = []

    async def worker(n: int) -> dict:
        calls.append(n)
        return {}

    run([5, 5, 6, 5], worker, Journal(tmp_path / "j.jsonl"))
    assert sorted(calls) == [5, 6]


def test_concurrency_is_bounded(tmp_path) -> None:
    active = peak = 0

    async def worker(n: int) -> dict:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return {}

    run(list(range(20)), worker, Journal(tmp_path / "j.jsonl"), concurrency=4)
    assert peak == 4


def test_fatal_errors_stop_the_batch_without_a_record(tmp_path) -> None:
    async def worker(n: int) -> dict:
        if n == 2:
            raise Fatal("endpoint gone")
        await asyncio.sleep(0.05 if n > 2 else 0)
        return {}

    journal = Journal(tmp_path / "j.jsonl")
    with pytest.raises(Fatal):
        run([1, 2, 3, 4, 5, 6], worker, journal, concurrency=2, fatal=(Fatal,))
    assert "2" not in journal.done_keys()  # a rerun does it again
    assert journal.failed_keys() == set()
