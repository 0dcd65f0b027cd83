"""Index at scale: batched builds, memory-mapped loading, sharding by row range, `auto` kind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

import retriever.index as index_mod
from retriever.index import (
    IndexConfig,
    IndexLoadError,
    LoadedIndex,
    build_index,
    load_index,
    make_faiss_index,
    resolve_config,
    save_index,
)
from retriever.search import DenseRetriever
from retriever.shards import ShardedIndex, merge_topk

ROOT = Path(__file__).resolve().parents[2]


def unit_rows(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def saved(tmp_path: Path, vectors: np.ndarray, config: IndexConfig, name: str = "idx") -> Path:
    loaded = LoadedIndex(index=make_faiss_index(vectors, config),
                         ids=[f"g{i}" for i in range(len(vectors))], manifest={})
    save_index(loaded, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("shards", [2, 3, 7])
def test_sharded_flat_search_equals_unsharded_exactly(shards):
    base, queries = unit_rows(1000), unit_rows(25, seed=1)
    whole = make_faiss_index(base, IndexConfig(kind="flat"))
    split = make_faiss_index(base, IndexConfig(kind="flat", shards=shards))
    assert isinstance(split, ShardedIndex) and len(split.shards) == shards
    assert split.ntotal == 1000
    want_scores, want_rows = whole.search(queries, 10)
    got_scores, got_rows = split.search(queries, 10)
    assert (got_rows == want_rows).all()  # global row numbers, not rows within a shard
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6)


def test_a_shard_smaller_than_k_is_padded_and_merged():
    base = unit_rows(12)
    split = make_faiss_index(base, IndexConfig(kind="flat", shards=4))  # 3 rows per shard
    scores, rows = split.search(base[:2], 10)
    assert rows.shape == (2, 10) and rows[0, 0] == 0 and rows[1, 0] == 1
    assert sorted(set(rows[0].tolist())) == sorted(rows[0].tolist())  # no duplicates
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_merge_topk_keeps_the_best_scores_and_offsets_rows():
    a = (np.array([[0.9, 0.2]], dtype=np.float32), np.array([[1, 0]]))
    b = (np.array([[0.5, 0.4]], dtype=np.float32), np.array([[0, -1]]))
    scores, rows = merge_topk([a, b], [0, 100], 3)
    assert rows.tolist() == [[1, 100, 0]]
    np.testing.assert_allclose(scores, [[0.9, 0.5, 0.2]])


def test_sharded_index_round_trips_through_its_directory(tmp_path):
    base, queries = unit_rows(600), unit_rows(10, seed=1)
    path = saved(tmp_path, base, IndexConfig(kind="hnsw", hnsw_m=8, shards=3))
    entries = load_index(path).manifest["shards"]
    assert [e["start"] for e in entries] == [0, 200, 400]
    assert sorted(p.name for p in path.glob("*.faiss")) == [
        "index-000.faiss", "index-001.faiss", "index-002.faiss"]
    unsharded = make_faiss_index(base, IndexConfig(kind="flat"))
    _, want = unsharded.search(queries, 1)
    _, got = load_index(path).index.search(queries, 1)
    assert (got == want).all()  # HNSW finds each query's nearest row on this small set
    (path / "index-001.faiss").unlink()
    with pytest.raises(IndexLoadError, match="corrupt"):
        load_index(path)


@pytest.mark.parametrize("config", [
    IndexConfig(kind="flat"),
    IndexConfig(kind="hnsw", hnsw_m=8),
    IndexConfig(kind="ivfflat", ivf_nprobe=4),
    IndexConfig(kind="ivfsq8", ivf_nprobe=4),
    IndexConfig(kind="ivfpq", ivf_nprobe=4, refine_k=4),
], ids=lambda c: c.kind + ("+refine" if c.refine_k else ""))
def test_memory_mapped_and_plain_loads_give_the_same_results(tmp_path, config):
    # 8-bit PQ codebooks want 39 * 256 training rows
    base, queries = unit_rows(10000 if config.kind == "ivfpq" else 3000), unit_rows(20, seed=1)
    path = saved(tmp_path, base, config)
    mapped = load_index(path, mmap=True).index
    plain = load_index(path, mmap=False).index
    for index in (mapped, plain):
        assert index.ntotal == len(base)
    a_scores, a_rows = mapped.search(queries, 10)
    b_scores, b_rows = plain.search(queries, 10)
    assert (a_rows == b_rows).all()
    np.testing.assert_allclose(a_scores, b_scores, rtol=1e-6)


def test_refine_returns_exact_inner_products_of_the_rows_it_finds():
    base, queries = unit_rows(10000), unit_rows(20, seed=1)
    index = make_faiss_index(base, IndexConfig(kind="ivfpq", ivf_nprobe=8, refine_k=4))
    scores, rows = index.search(queries, 5)
    exact = np.einsum("qd,qkd->qk", queries, base[rows])
    np.testing.assert_allclose(scores, exact, rtol=1e-5, atol=1e-6)


def test_batched_build_holds_every_row_in_order(monkeypatch):
    monkeypatch.setattr(index_mod, "ADD_BATCH", 64)
    base = unit_rows(1000)
    index = make_faiss_index(base, IndexConfig(kind="flat"))
    _, rows = index.search(base[[0, 63, 64, 500, 999]], 1)
    assert rows[:, 0].tolist() == [0, 63, 64, 500, 999]


def test_a_mapped_index_keeps_answering_after_the_directory_is_replaced(tmp_path):
    base, other = unit_rows(2000), unit_rows(2000, seed=5)
    path = saved(tmp_path, base, IndexConfig(kind="flat"))
    serving = load_index(path).index
    _, before = serving.search(base[:5], 1)
    saved(tmp_path, other, IndexConfig(kind="flat"))  # a rebuild, as hot reload sees it
    _, after = serving.search(base[:5], 1)
    assert (before == after).all() and before[:, 0].tolist() == [0, 1, 2, 3, 4]
    _, fresh = load_index(path).index.search(other[:2], 1)
    assert fresh[:, 0].tolist() == [0, 1]


WORKER = """
import sys, psutil
sys.path.insert(0, {root!r})
from retriever.index import load_index
import faiss  # imported before the first reading: only the index's growth is measured
me = psutil.Process()
before = me.memory_full_info()
index = load_index({path!r}, mmap={mmap}).index
index.search(index.reconstruct_n(0, 4), 10)  # a flat search reads every row
print("ready", flush=True)
sys.stdin.readline()
after = me.memory_full_info()
print(after.rss - before.rss, after.pss - before.pss, flush=True)
sys.stdin.readline()
"""


def two_workers(path: Path, mmap: bool) -> list[tuple[int, int]]:
    """RSS and PSS growth of each of two live processes that load the index at ``path``."""
    code = WORKER.format(root=str(ROOT), path=str(path), mmap=mmap)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout and p.stdout.readline().strip() == "ready"
        out = []
        for p in procs:
            assert p.stdin and p.stdout
            p.stdin.write("measure\n")
            p.stdin.flush()
            rss, pss = p.stdout.readline().split()
            out.append((int(rss), int(pss)))
        return out
    finally:
        for p in procs:
            p.communicate("exit\n", timeout=60)


def test_two_workers_share_one_memory_mapped_copy(tmp_path):
    path = saved(tmp_path, unit_rows(40000, dim=384), IndexConfig(kind="flat"))  # 61 MB
    size = (path / "index.faiss").stat().st_size
    for rss, pss in two_workers(path, mmap=True):
        assert rss > 0.9 * size  # every row resident (mapped) in each worker ...
        assert pss < 0.65 * size  # ... but each one's share of it is about half
    for _, pss in two_workers(path, mmap=False):
        assert pss > 0.9 * size  # a plain read: a private copy each


def test_auto_picks_exact_search_for_small_libraries_and_ivf_for_large_ones():
    assert resolve_config(IndexConfig(kind="auto"), 500).kind == "flat"
    big = resolve_config(IndexConfig(kind="auto", shards=2), 1_000_000)
    assert (big.kind, big.ivf_nlist, big.ivf_nprobe, big.shards) == ("ivfflat", 2048, 16, 2)
    assert resolve_config(IndexConfig(kind="ivfpq"), 10).kind == "ivfpq"  # asked for: kept


def test_auto_is_kept_in_the_manifest_so_a_rebuild_chooses_again(small_lib, encoder,
                                                                  monkeypatch):
    monkeypatch.setattr(index_mod, "AUTO_FLAT_MAX", 3)  # the small library counts as large
    loaded = build_index(small_lib, encoder, encoder_path="e", encoder_hash="h",
                         config=IndexConfig(kind="auto"))
    assert loaded.manifest["index_type"] == "ivfflat"
    assert loaded.manifest["index_params"]["kind"] == "auto"
    assert isinstance(faiss.downcast_index(loaded.index), faiss.IndexIVFFlat)
    retriever = DenseRetriever(small_lib, encoder, loaded)
    assert retriever.size == len(small_lib.guidelines)
