"""FAISS index scale: Flat vs HNSW vs IVF-PQ at 10k / 100k / 1M synthetic normalised vectors.

Per size and index type, built through retriever.index.make_faiss_index / IndexConfig: build time,
memory (bytes of the serialised index and RSS delta of the build), single-query search latency
(p50/p99, k=10) and recall@10 against exact search. Ratios are against exact Flat search measured
in the same run. Every build runs in its own forked process, so RSS deltas do not leak between
runs and the parent never starts OpenMP. The vectors are synthetic points on the unit sphere:
low-rank signal plus 20% isotropic noise (text embeddings too have a low intrinsic dimension);
`--rank 0` gives the (hardest) uniformly random case.

    .venv/bin/python bench/index_scale.py [--sizes 10000,100000,1000000] [--kinds flat,hnsw,ivfpq]
        [--hnsw-m 16] [--ivf-nlist-max 1024] [--queries 200]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_out_argument, machine, pct, save_results
from retriever.index import IndexConfig, make_faiss_index

console = Console(width=150)


def vectors(n: int, dim: int, *, seed: int, rank: int, noise: float = 0.2) -> np.ndarray:
    """``n`` L2-normalised float32 rows of rank-``rank`` signal plus noise (rank 0: uniform).

    Text embeddings have a much lower intrinsic dimension than their width, which is what lets
    approximate indexes find near neighbours; uniform random vectors are the worst case.
    """
    mix = np.random.default_rng(0).standard_normal((max(rank, 1), dim), dtype=np.float32)
    mix /= np.float32(np.sqrt(max(rank, 1)))
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65536):  # chunks keep the peak near the final array
        m = min(65536, n - start)
        x = rng.standard_normal((m, dim), dtype=np.float32)
        if rank:
            x = rng.standard_normal((m, rank), dtype=np.float32) @ mix + np.float32(noise) * x
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def rss() -> int:
    """Resident set size of this process in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def in_child(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked process (inherits the data without copying) and return its result."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def target() -> None:
        try:
            send.send(("ok", fn()))
        except BaseException as exc:  # report, do not hang the parent
            send.send(("error", repr(exc)))

    proc = ctx.Process(target=target)
    proc.start()
    status, value = recv.recv()
    proc.join()
    if status != "ok":
        raise RuntimeError(value)
    return value


def exact(base: np.ndarray, queries: np.ndarray, k: int, threads: int) -> np.ndarray:
    """Exact top-k rows by inner product."""
    import faiss

    faiss.omp_set_num_threads(threads)
    _, rows = faiss.knn(queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)
    return np.asarray(rows)


def config_for(kind: str, n: int, args: argparse.Namespace) -> IndexConfig:
    """The IndexConfig measured for ``kind`` at size ``n``."""
    nlist = min(max(1, int(4 * np.sqrt(n))), args.ivf_nlist_max)
    return IndexConfig(kind=kind, hnsw_m=args.hnsw_m,  # type: ignore[arg-type]
                       hnsw_ef_search=args.hnsw_ef_search, ivf_nlist=nlist,
                       ivf_nprobe=args.ivf_nprobe)


def measure(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, config: IndexConfig,
            args: argparse.Namespace) -> dict[str, Any]:
    """Build one index and measure it (run in a child process)."""
    import faiss

    k = args.k
    faiss.omp_set_num_threads(args.threads)
    before = rss()
    t0 = time.perf_counter()
    # IVF-PQ trains on the first rows only (as one would on a sample); the rest are added after
    index = make_faiss_index(base[:args.train_sample], config)
    if len(base) > args.train_sample:
        index.add(base[args.train_sample:])
    build_s = time.perf_counter() - t0
    rss_delta = rss() - before
    with tempfile.TemporaryDirectory() as tmp:
        faiss.write_index(index, f"{tmp}/index.faiss")
        size = os.path.getsize(f"{tmp}/index.faiss")
    for q in queries[:10]:  # warm up
        index.search(q[None, :], k)
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        _, rows = index.search(q[None, :], k)
        times.append(time.perf_counter() - t)
        found.append(rows[0])
    recall = float(np.mean([len(set(f.tolist()) & set(t.tolist())) / k
                            for f, t in zip(found, truth, strict=True)]))
    return {"build_s": build_s, "rss_delta_mb": rss_delta / 1e6, "index_mb": size / 1e6,
            "p50_ms": pct(times, 50), "p99_ms": pct(times, 99), f"recall@{k}": recall,
            "config": asdict(config), "params": built_params(index, config)}


def built_params(index: Any, config: IndexConfig) -> str:
    """The parameters the built index really has (make_faiss_index caps some by size)."""
    import faiss

    if config.kind == "hnsw":
        h = index.hnsw
        return f"M={config.hnsw_m} efC={h.efConstruction} efS={h.efSearch}"
    if config.kind == "ivfpq":
        codes = (f" pq={index.pq.M}x{index.pq.nbits}b" if isinstance(index, faiss.IndexIVFPQ)
                 else " flat lists")
        return f"nlist={index.nlist} nprobe={index.nprobe}{codes}"
    return "exact"


def main() -> None:
    """Measure every size x kind, print the table, write var/bench/ (--out: bench/results/)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--kinds", default="flat,hnsw,ivfpq")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rank", type=int, default=32,
                    help="intrinsic dimension of the synthetic data (0: uniform random)")
    ap.add_argument("--threads", type=int, default=1,
                    help="OpenMP threads for build and search (on 2 shared cores, 2 threads "
                    "made single-query Flat search 50x slower)")
    ap.add_argument("--train-sample", type=int, default=32768,
                    help="rows IVF-PQ is trained on (all rows are added)")
    ap.add_argument("--hnsw-m", type=int, default=16, help="M (efConstruction: faiss's 40)")
    ap.add_argument("--hnsw-ef-search", type=int, default=IndexConfig().hnsw_ef_search)
    ap.add_argument("--ivf-nlist-max", type=int, default=1024,
                    help="cap on IndexConfig's 4*sqrt(n) lists (k-means cost grows with it)")
    ap.add_argument("--ivf-nprobe", type=int, default=IndexConfig().ivf_nprobe)
    add_out_argument(ap)
    args = ap.parse_args()
    k = args.k
    kinds = args.kinds.split(",")
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for n in (int(s) for s in args.sizes.split(",")):
        t0 = time.perf_counter()
        base = vectors(n, args.dim, seed=n, rank=args.rank)
        queries = vectors(args.queries, args.dim, seed=n + 1, rank=args.rank)
        truth = in_child(lambda b=base, q=queries: exact(b, q, k, args.threads))
        console.print(f"n={n:,}: data + exact top-{k} in {time.perf_counter() - t0:.1f}s")
        for kind in kinds:
            config = config_for(kind, n, args)
            row = in_child(lambda b=base, q=queries, t=truth, c=config: measure(b, q, t, c, args))
            row.update({"n": n, "kind": kind})
            console.print(f"  {kind:6s} build {row['build_s']:.1f}s  p50 {row['p50_ms']:.3f} ms  "
                          f"recall@{k} {row[f'recall@{k}']:.3f}")
            rows.append(row)
        del base

    data = f"rank-{args.rank} synthetic" if args.rank else "uniform random"
    table = Table(title=f"FAISS index scale, dim {args.dim}, {data} data, k={k}, single-query "
                  f"search, {args.threads} thread(s) (baseline: exact Flat, same run; 2 shared "
                  "cores, other load may be present)")
    for col in ("n", "index", "params", "build s", "index MB", "RSS Δ MB", "p50 ms", "p99 ms",
                "speedup p50", f"recall@{k}", "size ×flat"):
        table.add_column(col, justify="left" if col in ("index", "params") else "right")
    for r in rows:
        flat = next((f for f in rows if f["n"] == r["n"] and f["kind"] == "flat"), None)
        table.add_row(
            f"{r['n']:,}", r["kind"], r["params"], f"{r['build_s']:.2f}", f"{r['index_mb']:.1f}",
            f"{r['rss_delta_mb']:.0f}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}",
            f"{flat['p50_ms'] / r['p50_ms']:.1f}x" if flat else "-", f"{r[f'recall@{k}']:.3f}",
            f"{r['index_mb'] / flat['index_mb']:.2f}" if flat else "-",
        )
    console.print(table)
    path = save_results("index_scale", {
        "machine": machine(), "args": vars(args), "rows": rows,
        "seconds": time.perf_counter() - started,
        "note": "2 shared CPU cores; other load may have been present during the run",
    }, args.out)
    console.print(f"wrote {path} ({time.perf_counter() - started:.0f}s)")


if __name__ == "__main__":
    main()
