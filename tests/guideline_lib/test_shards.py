"""Result shards: whole files only, one record per key however often a key was written."""

from __future__ import annotations

from guideline_lib.shards import ShardStore, merge_records


def test_a_half_written_shard_is_invisible_and_duplicates_collapse(tmp_path) -> None:
    store = ShardStore(tmp_path / "shards")
    assert store.write([]) is None and store.shards() == []
    first = store.write([{"key": "a", "status": "failed", "error": "x"}, {"key": "b", "n": 1}])
    store.write([{"key": "a", "n": 2}, {"key": "b", "n": 3}])  # a retried task wrote b again
    (tmp_path / "shards" / ".part-zzz.jsonl.tmp").write_text('{"key": "c"}\n')  # killed mid-write
    assert first is not None and len(store.shards()) == 2
    records = {r["key"]: r for r in store.records()}
    assert set(records) == {"a", "b"} and len(store) == 2
    assert records["a"]["n"] == 2  # an ok record supersedes a failure
    assert records["b"]["n"] in (1, 3)  # one of the two, never both
    assert store.status() == {"a": "ok", "b": "ok"}


def test_merging_keeps_the_first_ok_record_else_the_latest_failure() -> None:
    journal = [{"key": "a", "v": 1}, {"key": "b", "status": "failed", "v": 1}]
    shards = [{"key": "a", "v": 2}, {"key": "b", "status": "failed", "v": 2},
              {"key": "c", "status": "failed", "v": 1}, {"key": "c", "v": 2}]
    merged = {r["key"]: r["v"] for r in merge_records(journal, shards)}
    assert merged == {"a": 1, "b": 2, "c": 2}
