"""An index split by row (id) range across several FAISS files, searched as one.

Each shard holds a contiguous range of rows and answers with its own top-k; the merge keeps the
best k overall and maps shard rows back to global rows. A shard is searched in process here, but
only through ``search`` and ``merge_topk``, so one could as well answer from another host.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

SHARD_FILE = "index-{:03d}.faiss"


def merge_topk(results: Sequence[tuple[np.ndarray, np.ndarray]], starts: Sequence[int],
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` (inner product: highest first) of per-shard ``(scores, rows)`` results,
    with each shard's rows offset by its first global row (``starts``); -1 rows stay -1."""
    import faiss

    def padded(a: np.ndarray, fill: float) -> np.ndarray:  # a shard that returned < k
        return np.pad(a[:, :k], ((0, 0), (0, max(0, k - a.shape[1]))), constant_values=fill)

    scores = np.stack([padded(s, -np.inf) for s, _ in results])
    rows = np.stack([np.where(r >= 0, r + start, -1) for r, start in
                     zip((padded(r, -1) for _, r in results), starts, strict=True)])
    merged_scores, merged_rows = faiss.merge_knn_results(
        np.ascontiguousarray(scores, dtype=np.float32), np.ascontiguousarray(rows, dtype=np.int64),
        keep_max=True)
    return merged_scores, merged_rows


class ShardedIndex:
    """Several FAISS indexes over consecutive row ranges, with FAISS's ``search`` signature."""

    def __init__(self, shards: Sequence[Any]):
        if not shards:
            raise ValueError("a sharded index needs at least one shard")
        self.shards = list(shards)
        self.starts = [int(s) for s in np.cumsum([0] + [sh.ntotal for sh in self.shards])[:-1]]

    @property
    def ntotal(self) -> int:
        return sum(int(s.ntotal) for s in self.shards)

    @property
    def d(self) -> int:
        return int(self.shards[0].d)

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` inner-product scores and global rows for each row of ``x``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        return merge_topk([shard.search(x, k) for shard in self.shards], self.starts, k)

    def set_parameter(self, name: str, value: float) -> None:
        """Set a FAISS search parameter (``efSearch``, ``nprobe``, ``k_factor_rf``) on every
        shard."""
        import faiss

        space = faiss.ParameterSpace()
        for shard in self.shards:
            space.set_index_parameter(shard, name, value)


def make_sharded(empty: Any, vectors: np.ndarray, shards: int) -> ShardedIndex:
    """``shards`` copies of the trained but empty index ``empty``, each given one consecutive
    range of ``vectors``."""
    import faiss

    from retriever.index import add_in_batches

    bounds = np.linspace(0, len(vectors), shards + 1).astype(int)
    parts = []
    for n, (lo, hi) in enumerate(pairwise(bounds)):
        shard = faiss.clone_index(empty)
        add_in_batches(shard, vectors[lo:hi], desc=f"shard {n + 1}/{shards}")
        parts.append(shard)
    return ShardedIndex(parts)


def write_shards(index: ShardedIndex, directory: Path) -> list[dict[str, Any]]:
    """Write one file per shard into ``directory``; the manifest entries describing them."""
    import faiss

    entries = []
    for n, (shard, start) in enumerate(zip(index.shards, index.starts, strict=True)):
        name = SHARD_FILE.format(n)
        faiss.write_index(shard, str(directory / name))
        entries.append({"file": name, "start": start, "count": int(shard.ntotal)})
    return entries


def read_shards(directory: Path, entries: list[dict[str, Any]], *, mmap: bool = True)\
        -> ShardedIndex:
    """The ShardedIndex of ``directory`` as its manifest ``entries`` describe it."""
    from retriever.index import read_faiss

    shards = []
    for entry in entries:
        shard = read_faiss(directory / entry["file"], mmap=mmap)
        if shard.ntotal != entry["count"]:
            raise ValueError(f"{entry['file']} holds {shard.ntotal} rows, "
                             f"manifest says {entry['count']}")
        shards.append(shard)
    index = ShardedIndex(shards)
    if index.starts != [e["start"] for e in entries]:
        raise ValueError("shard row ranges do not follow one another")
    return index
