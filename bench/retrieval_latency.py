"""Retrieval latency and quality per encoder backend (torch, onnx, onnx-int8, static), side by side.

Per backend: encode + FAISS search + select latency for single queries (p50/p99), batched
throughput (queries/s at batch 1, 8, 32) and held-out quality (recall@1/6, MRR@10 on the library's
test split, raw ranking over a flat index, as retriever.evaluate defines them). Speed and quality
ratios are against the torch path measured in the same run, with the same number of intra-op
threads for every backend (--threads, default 1; 0 loads them as the gateway does). Backends are
timed in interleaved rounds so that other load on the machine hits them alike. The trained
encoder (var/encoder) is used when present, else base MiniLM. Exports are cached under
var/encoders, where the gateway looks for them.

    .venv/bin/python bench/retrieval_latency.py [--backends torch,onnx,onnx-int8,static]
        [--single 200] [--throughput 128] [--rounds 4] [--threads 1] [--encoder PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from app.config import Settings
from bench.common import add_out_argument, machine, pct, save_results
from guideline_lib.io import default_library_path, load_library
from guideline_lib.schema import Library
from retriever.backends import (
    BACKENDS,
    derived_path,
    export_encoder,
    get_backend,
    is_current,
    load_backend_encoder,
    model_hash,
)
from retriever.encoder import Encoder
from retriever.index import build_index
from retriever.search import DenseRetriever
from retriever.service import check_encoder
from retriever.types import SelectConfig

console = Console(width=160)
BATCHES = (1, 8, 32)
SELECT = SelectConfig()  # the serving defaults


def held_out(library: Library) -> tuple[list[str], list[set[str]]]:
    """Test-split inputs and their relevant guideline ids."""
    rows = [(e.input, set(e.guideline_ids)) for e in library.examples
            if e.split == "test" and e.guideline_ids]
    return [r[0] for r in rows], [r[1] for r in rows]


def quality(retriever: DenseRetriever, queries: list[str], relevant: list[set[str]])\
        -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """recall@1/6 and MRR@10 of the raw ranking; also the query vectors and top-10 rows."""
    vecs = retriever.encoder.encode(queries)
    _, rows = retriever.index.index.search(vecs, 10)
    ids = retriever.index.ids
    r1 = r6 = mrr = 0.0
    for rel, row in zip(relevant, rows, strict=True):
        ranked = [ids[i] for i in row if i >= 0]
        r1 += len(rel & set(ranked[:1])) / len(rel)
        r6 += len(rel & set(ranked[:6])) / len(rel)
        mrr += next((1.0 / (n + 1) for n, g in enumerate(ranked) if g in rel), 0.0)
    n = max(1, len(queries))
    return ({"recall@1": r1 / n, "recall@6": r6 / n, "mrr@10": mrr / n}, vecs, rows)


def time_single(retriever: DenseRetriever, queries: list[str]) -> tuple[list[float], list[float]]:
    """Per single query: seconds to encode, and to encode + search + select."""
    enc, total = [], []
    for q in queries:
        t0 = time.perf_counter()
        retriever.encoder.encode([q])
        t1 = time.perf_counter()
        retriever.search((q,), SELECT)  # encode + search + select, as a request pays
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        total.append(t2 - t1)
    return enc, total


def time_batches(retriever: DenseRetriever, queries: list[str], batch: int) -> float:
    """Seconds to push ``queries`` through search_batch ``batch`` at a time."""
    t0 = time.perf_counter()
    for start in range(0, len(queries), batch):
        chunk = queries[start:start + batch]
        retriever.search_batch([(q,) for q in chunk], [SELECT] * len(chunk))
    return time.perf_counter() - t0


def dir_mb(path: Path) -> float:
    """Size on disk of an encoder directory in MB."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


@dataclass
class Subject:
    """One backend under test, with its samples."""

    name: str
    retriever: DenseRetriever
    row: dict[str, Any]
    enc: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    batch_s: dict[int, float] = field(default_factory=dict)


def load(name: str, path: Path, threads: int) -> Encoder:
    """The backend's encoder as the gateway loads it, or with ``threads`` intra-op threads."""
    if threads and name.startswith("onnx"):
        from retriever.onnx_encoder import OnnxEncoder

        return OnnxEncoder(path, threads=threads)
    encoder = load_backend_encoder(str(path), name)
    if threads and name == "torch":
        import torch

        torch.set_num_threads(threads)
    return encoder


def prepare_backend(name: str, source: Path, exports: Path, library: Library,
                    queries: list[str], relevant: list[set[str]], threads: int)\
        -> tuple[Subject, np.ndarray, np.ndarray]:
    """Export (cached), load, index and score one backend."""
    t0 = time.perf_counter()
    path = source
    if get_backend(name).export is not None:
        path = derived_path(source, name, exports)
        if not is_current(path, source, name):
            export_encoder(source, name, path)
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    encoder = load(name, path, threads)
    load_s = time.perf_counter() - t0
    loaded = build_index(library, encoder, encoder_path=str(path), encoder_hash=model_hash(path))
    retriever = DenseRetriever(library, encoder, loaded)
    q, vecs, rows = quality(retriever, queries, relevant)
    for text in queries[:10]:  # warm up
        retriever.search((text,), SELECT)
    row: dict[str, Any] = {"backend": name, "path": str(path), "dim": encoder.dim,
                           "size_mb": dir_mb(path), "export_s": export_s, "load_s": load_s, **q}
    return Subject(name, retriever, row), vecs, rows


def measure(subjects: list[Subject], queries: list[str], args: argparse.Namespace) -> None:
    """Interleave the backends over rounds so that load changes hit them alike."""
    single = queries[:args.single]
    per_round = max(1, len(single) // args.rounds)
    for r in range(args.rounds):
        chunk = single[r * per_round:(r + 1) * per_round]
        for s in subjects:
            enc, total = time_single(s.retriever, chunk)
            s.enc += enc
            s.total += total
            for b in BATCHES:
                s.batch_s[b] = s.batch_s.get(b, 0.0) + time_batches(
                    s.retriever, queries[:args.throughput], b)
    for s in subjects:
        s.row.update({"p50_ms": pct(s.total, 50), "p99_ms": pct(s.total, 99),
                      "encode_p50_ms": pct(s.enc, 50), "single_n": len(s.total)})
        s.row["search_select_p50_ms"] = s.row["p50_ms"] - s.row["encode_p50_ms"]
        for b in BATCHES:
            s.row[f"qps_b{b}"] = args.rounds * args.throughput / s.batch_s[b]


def main() -> None:
    """Run every backend, print the table, write var/bench/ (--out: bench/results/)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--library", type=Path, default=default_library_path())
    ap.add_argument("--encoder", type=Path, default=None,
                    help="default: the workspace's trained encoder (var/encoder)")
    ap.add_argument("--exports", type=Path, default=None,
                    help="default: the workspace's exports (var/encoders)")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--single", type=int, default=200, help="single queries timed")
    ap.add_argument("--throughput", type=int, default=128,
                    help="queries per batch-size run, per round")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch / ONNX Runtime intra-op threads, the same for every backend "
                    "(0: as the gateway loads them: torch min(4, cores), ORT half the cores)")
    add_out_argument(ap)
    args = ap.parse_args()

    library = load_library(args.library)
    ws = Settings(encoder_path=args.encoder)
    source = check_encoder(ws.retriever_paths().encoder)
    args.exports = args.exports or ws.exports_path
    queries, relevant = held_out(library)
    kind = "trained" if args.encoder is None else "explicit"
    console.print(f"encoder: {source} ({kind}); "
                  f"{len(library.guidelines)} guidelines, {len(queries)} held-out queries; "
                  f"intra-op threads: {args.threads or 'gateway defaults'}")
    subjects: list[Subject] = []
    ref_vecs: np.ndarray | None = None
    ref_top: np.ndarray | None = None
    for name in args.backends.split(","):
        console.print(f"[bold]{name}[/]: export (cached), load, index, held-out quality ...")
        subject, vecs, top = prepare_backend(name, source, args.exports, library, queries,
                                             relevant, args.threads)
        if ref_vecs is None or ref_top is None:
            ref_vecs, ref_top = vecs, top
        subject.row["top1_agree"] = float(np.mean(top[:, 0] == ref_top[:, 0]))
        subject.row["cos_vs_ref"] = (float(np.mean(np.sum(vecs * ref_vecs, axis=1)))
                                     if vecs.shape == ref_vecs.shape else float("nan"))
        subjects.append(subject)
    console.print(f"timing {args.rounds} interleaved rounds ...")
    measure(subjects, queries, args)
    rows = [s.row for s in subjects]

    base = rows[0]
    table = Table(title=f"retrieval latency + quality per encoder backend (baseline: "
                  f"{base['backend']}, same run; 2 shared cores, other load may be present)")
    for col in ("backend", "dim", "MB", "recall@6", "Δr@6 pt", "MRR@10", "top1=ref", "p50 ms",
                "p99 ms", "enc p50", "speedup p50", "q/s b1", "q/s b8", "q/s b32", "b32 ×ref"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in rows:
        table.add_row(
            r["backend"], str(r["dim"]), f"{r['size_mb']:.0f}", f"{r['recall@6']:.4f}",
            f"{100 * (r['recall@6'] - base['recall@6']):+.2f}", f"{r['mrr@10']:.4f}",
            f"{r['top1_agree']:.3f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
            f"{r['encode_p50_ms']:.2f}", f"{base['p50_ms'] / r['p50_ms']:.2f}x",
            f"{r['qps_b1']:.0f}", f"{r['qps_b8']:.0f}", f"{r['qps_b32']:.0f}",
            f"{r['qps_b32'] / base['qps_b32']:.2f}x",
        )
    console.print(table)
    name = "retrieval_latency" if args.threads == 1 else f"retrieval_latency_t{args.threads}"
    path = save_results(name, {
        "machine": machine(), "encoder": str(source), "trained_encoder": args.encoder is None,
        "library": str(args.library), "queries": len(queries), "single": args.single,
        "throughput_queries": args.throughput, "rounds": args.rounds,
        "threads": args.threads or "gateway defaults",
        "baseline": base["backend"], "rows": rows,
        "note": "2 shared CPU cores; other load may have been present during the run",
    }, args.out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
