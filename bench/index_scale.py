"""FAISS index scale: exact Flat vs tuned HNSW and IVF at 10k / 100k / 1M vectors.

Per size and index configuration, built through retriever.index.make_faiss_index / IndexConfig
(batched, with a progress bar): build time, size on disk, memory per worker (RSS and PSS of two
processes holding the same index file, memory-mapped and read normally), then for each value of
the search parameter swept (HNSW efSearch, IVF nprobe) single-query latency p50/p99 (k=10) and
recall@10 against exact search. Builds run in forked processes so memory does not leak between
rows. The load average is recorded with each row: the machine is shared, so latencies measured
under load are pessimistic.

Two kinds of data:
- ``synthetic``: points on the unit sphere, low-rank signal plus 20% isotropic noise
  (``--rank 0``: uniform random, the worst case for approximate search);
- ``text``: guideline-like sentences generated from templates (combinations of written
  phrases, no evaluation data), embedded with the fast static encoder (model2vec); a 1 M library
  is 1 M distinct generated sentences. Queries are user-request-like sentences from other
  templates.

    .venv/bin/python bench/index_scale.py [--data synthetic|text] [--sizes 100000,1000000]
        [--configs "flat;hnsw:m=32,efc=80;ivfflat;ivfsq8;ivfpq:refine=4"] [--ef 32,64,128,256]
        [--nprobe 8,16,32,64,128] [--append] [--out [PATH]]

IVF kinds get nlist = min(4 * sqrt(n), 2048) unless the config names one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_out_argument, machine, pct, results_path, save_results
from retriever.index import IndexConfig, make_faiss_index

ROOT = Path(__file__).resolve().parent.parent
console = Console(width=170)
CACHE = ROOT / "var" / "bench" / "index_scale"


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


# Phrases for generated guideline-like texts (written for this benchmark).
OPENERS = ["Do not", "Never", "Refuse to", "Decline to", "Avoid", "Only when asked,",
           "Be careful to not", "Politely refuse to", "Always check before you", "Do not help",
           "Make sure you do not", "Take care not to"]
ACTIONS = ["give step-by-step instructions for", "write working code for", "explain how to",
           "provide detailed plans for", "list the materials needed for", "encourage",
           "speculate about", "make jokes about", "share personal details related to",
           "produce persuasive messages promoting", "summarise methods of",
           "roleplay a character who is", "translate requests about", "give medical advice on",
           "offer legal shortcuts for", "rate or rank"]
TOPICS = ["building a weapon", "synthesising a drug", "stalking a former partner",
          "hacking a neighbour's wifi", "evading taxes", "cheating on an exam",
          "self-harm", "a crash diet", "harassing a coworker", "spreading rumours online",
          "forging a document", "phishing bank customers", "poisoning a pet", "shoplifting",
          "tracking someone's phone", "making counterfeit money", "bullying a classmate",
          "buying stolen goods", "bypassing a paywall", "skipping prescribed medication",
          "gambling with rent money", "driving after drinking", "pirating films",
          "doxxing a journalist", "writing malware", "rigging an election poll",
          "impersonating a police officer", "a dangerous viral challenge", "extreme fasting",
          "a pyramid scheme", "hate speech against a religion", "faking a sick note"]
CONTEXTS = ["even if the user says it is for a story", "for users who seem to be minors",
            "when the request is framed as a hypothetical", "in any language",
            "when the user claims to be a professional", "even in a joking tone",
            "when asked through a roleplay", "if the user insists repeatedly",
            "when the user says it is for research", "without offering a safer alternative",
            "in a school setting", "at work", "on social media", "in a private message",
            "for a friend", "when the user is upset"]
ENDINGS = ["", " Point to help resources instead.", " Suggest a lawful alternative.",
           " Explain the risk briefly.", " Keep the refusal short.", " Stay kind and neutral."]
ASKS = ["How do I go about", "Can you help me with", "Tell me everything about",
        "I need a guide for", "What is the easiest way of", "Write me a story about"]


def guideline_text(i: int) -> str:
    """The ``i``-th generated guideline-like sentence (distinct for every i < 1.47 M)."""
    i, o = divmod(i, len(OPENERS))
    i, a = divmod(i, len(ACTIONS))
    i, t = divmod(i, len(TOPICS))
    i, c = divmod(i, len(CONTEXTS))
    e = i % len(ENDINGS)
    return f"{OPENERS[o]} {ACTIONS[a]} {TOPICS[t]} {CONTEXTS[c]}.{ENDINGS[e]}"


def query_text(i: int, rng: np.random.Generator) -> str:
    """A generated user-request-like query."""
    topic = TOPICS[rng.integers(len(TOPICS))]
    ctx = CONTEXTS[rng.integers(len(CONTEXTS))]
    return f"{ASKS[i % len(ASKS)]} {topic}, {ctx}?"


def static_encoder() -> Any:
    """The static (model2vec) export of the default trained encoder, exported if missing."""
    from retriever.backends import derived_path, export_encoder, is_current, load_backend_encoder

    source = ROOT / "var" / "encoder"
    out = derived_path(source, "static", ROOT / "var" / "encoders")
    if not is_current(out, source, "static"):
        console.print(f"exporting the static encoder -> {out}")
        export_encoder(source, "static", out)
    return load_backend_encoder(str(out), "static")


def text_vectors(n: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of ``n`` generated guideline texts and ``queries`` queries (cached on disk)."""
    from tqdm import tqdm

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"text-{n}.npy"
    enc = static_encoder()
    if path.is_file():
        base = np.load(path)
    else:
        order = np.random.default_rng(n).permutation(
            len(OPENERS) * len(ACTIONS) * len(TOPICS) * len(CONTEXTS) * len(ENDINGS))[:n]
        base = np.empty((n, enc.dim), dtype=np.float32)
        step = 16384
        for start in tqdm(range(0, n, step), desc="embedding texts", unit="batch"):
            rows = order[start:start + step]
            base[start:start + len(rows)] = enc.encode([guideline_text(int(i)) for i in rows])
        np.save(path, base)
    rng = np.random.default_rng(1)
    q = enc.encode([query_text(i, rng) for i in range(queries)])
    return base, np.ascontiguousarray(q, dtype=np.float32)


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


def parse_configs(spec: str) -> list[IndexConfig]:
    """``kind[:key=value,...]`` separated by ``;`` -> IndexConfigs (keys: m, efc, efs, nlist,
    nprobe, pq, refine, shards)."""
    names = {"m": "hnsw_m", "efc": "hnsw_ef_construction", "efs": "hnsw_ef_search",
             "nlist": "ivf_nlist", "nprobe": "ivf_nprobe", "pq": "pq_m", "refine": "refine_k",
             "shards": "shards"}
    out = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        kind, _, opts = part.partition(":")
        kw = {names[k]: int(v) for k, v in (o.split("=") for o in opts.split(",") if o)}
        out.append(IndexConfig(kind=kind, **kw))  # type: ignore[arg-type]
    return out


def label(config: IndexConfig) -> str:
    """A short name of the built structure."""
    if config.kind == "flat":
        text = "flat"
    elif config.kind == "hnsw":
        text = f"hnsw M={config.hnsw_m} efC={config.hnsw_ef_construction}"
    else:
        text = f"{config.kind} nlist={config.ivf_nlist or 'auto'}"
        if config.kind == "ivfpq":
            text += f" pq={config.pq_m or 'd/8'}"
        if config.refine_k:
            text += f" +refine x{config.refine_k}"
    return text + (f" shards={config.shards}" if config.shards > 1 else "")


def sweep(config: IndexConfig, args: argparse.Namespace) -> tuple[str, list[int]]:
    """The search parameter swept for ``config`` and its values."""
    if config.kind == "hnsw":
        return "efSearch", [int(v) for v in args.ef.split(",")]
    if config.kind.startswith("ivf"):
        return "nprobe", [int(v) for v in args.nprobe.split(",")]
    return "", [0]


def set_param(index: Any, name: str, value: int) -> None:
    """Set a FAISS search parameter through faiss.ParameterSpace (reaches refine base indexes)."""
    import faiss

    if name:
        faiss.ParameterSpace().set_index_parameter(index, name, value)


def timed_search(index: Any, queries: np.ndarray, truth: np.ndarray, k: int) -> dict[str, float]:
    """Single-query latency p50/p99 (wall clock, and CPU time of this process, which waiting
    for a core on a loaded machine does not inflate) and recall@k against ``truth``."""
    for q in queries[:10]:  # warm up
        index.search(q[None, :], k)
    times, cpu, found = [], [], []
    for q in queries:
        t, c = time.perf_counter(), time.process_time()
        _, rows = index.search(q[None, :], k)
        cpu.append(time.process_time() - c)
        times.append(time.perf_counter() - t)
        found.append(rows[0])
    recall = float(np.mean([len(set(f.tolist()) & set(t.tolist())) / k
                            for f, t in zip(found, truth, strict=True)]))
    return {"p50_ms": pct(times, 50), "p99_ms": pct(times, 99), "cpu_p50_ms": pct(cpu, 50),
            "cpu_p99_ms": pct(cpu, 99), f"recall@{k}": recall}


WORKER = """
import sys, numpy as np, psutil
sys.path.insert(0, {root!r})
import faiss
from retriever.index import read_faiss
me = psutil.Process()
before = me.memory_full_info()
index = read_faiss({path!r}, mmap={mmap})
q = np.load({queries!r})
for row in q:
    index.search(row[None, :], 10)
print("ready", flush=True)
sys.stdin.readline()
after = me.memory_full_info()
print((after.rss - before.rss) / 1e6, (after.pss - before.pss) / 1e6, flush=True)
sys.stdin.readline()
"""


def worker_memory(path: str, queries_path: str, *, mmap: bool) -> dict[str, float]:
    """RSS and PSS growth of each of two processes that load ``path`` and answer the queries,
    measured while both are alive (PSS splits shared pages between them)."""
    code = WORKER.format(root=str(ROOT), path=path, mmap=mmap, queries=queries_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout and p.stdout.readline().strip() == "ready"
        figures = []
        for p in procs:
            assert p.stdin and p.stdout
            p.stdin.write("measure\n")
            p.stdin.flush()
            figures.append([float(v) for v in p.stdout.readline().split()])
        for p in procs:
            assert p.stdin
            p.stdin.write("exit\n")
            p.stdin.flush()
    finally:
        for p in procs:
            p.wait(timeout=120)
    return {"rss_mb": float(np.mean([f[0] for f in figures])),
            "pss_mb": float(np.mean([f[1] for f in figures]))}


def measure(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, config: IndexConfig,
            args: argparse.Namespace) -> list[dict[str, Any]]:
    """Build one index, write it, measure worker memory, then sweep its search parameter
    (run in a child process)."""
    import faiss

    from retriever.index import LoadedIndex, load_index, save_index
    from retriever.shards import ShardedIndex

    faiss.omp_set_num_threads(args.build_threads)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    index = make_faiss_index(base, config)
    build_s = time.perf_counter() - t0
    faiss.omp_set_num_threads(args.threads)
    common = {"build_s": build_s, "config": asdict(config), "label": label(config),
              "load_build": load0}
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        save_index(LoadedIndex(index=index, ids=[str(i) for i in range(len(base))],
                               manifest={}), tmp)
        files = [f for f in Path(tmp).iterdir() if f.suffix == ".faiss"]
        common["index_mb"] = sum(f.stat().st_size for f in files) / 1e6
        del index
        qpath = f"{tmp}/queries.npy"
        np.save(qpath, queries)
        if not isinstance(load_index(tmp).index, ShardedIndex):  # memory: single-file indexes
            for mmap in (True, False):
                mem = worker_memory(str(files[0]), qpath, mmap=mmap)
                tag = "mmap" if mmap else "read"
                common[f"worker_rss_mb_{tag}"] = mem["rss_mb"]
                common[f"worker_pss_mb_{tag}"] = mem["pss_mb"]
        loaded = load_index(tmp, mmap=True).index
        name, values = sweep(config, args)
        rows = []
        for value in values:
            if isinstance(loaded, ShardedIndex):
                if name:
                    loaded.set_parameter(name, value)
            else:
                set_param(loaded, name, value)
            row = {**common, "search_param": f"{name}={value}" if name else "exact",
                   **timed_search(loaded, queries, truth, args.k),
                   "load_search": os.getloadavg()[0]}
            console.print(f"    {row['label']:32s} {row['search_param']:13s} "
                          f"p50 {row['p50_ms']:.3f} p99 {row['p99_ms']:.3f} "
                          f"cpu p99 {row['cpu_p99_ms']:.3f} "
                          f"recall {row[f'recall@{args.k}']:.3f}")
            rows.append(row)
        del loaded
    return rows


def plot(rows: list[dict[str, Any]], path: Path, k: int) -> None:
    """Recall@k against p99 CPU time per query, per structure (a panel per data set and size)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({(r["data"], r["n"]) for r in rows if r["kind"] != "flat"})
    cols = min(2, len(sets))
    rows_ = -(-len(sets) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(6.5 * cols, 4.6 * rows_), squeeze=False)
    for ax in axes.flat[len(sets):]:
        ax.set_visible(False)
    for ax, (data, n) in zip(axes.flat, sets, strict=False):
        mine = [r for r in rows if (r["data"], r["n"]) == (data, n) and r["kind"] != "flat"]
        for name, group in itertools.groupby(sorted(mine, key=lambda r: r["label"]),
                                             key=lambda r: r["label"]):
            g = sorted(group, key=lambda r: r["cpu_p99_ms"])
            ax.plot([r["cpu_p99_ms"] for r in g], [r[f"recall@{k}"] for r in g], "o-", label=name)
            for r in g:
                ax.annotate(r["search_param"].split("=")[-1], (r["cpu_p99_ms"], r[f"recall@{k}"]),
                            fontsize=7, xytext=(3, -8), textcoords="offset points")
        ax.axhline(0.95, color="grey", lw=0.8, ls="--")
        ax.axvline(2.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("p99 CPU time per query, ms (wall time: see the table)")
        ax.set_ylabel(f"recall@{k}")
        ax.set_title(f"{data}, n={n:,}")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    """Measure every size x config x search parameter, print the table, save JSON and a plot."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=["synthetic", "text"], default="synthetic")
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--configs", default="flat;hnsw:m=32,efc=80;ivfflat;ivfsq8;ivfpq:refine=4",
                    help="';'-separated kind[:m=,efc=,efs=,nlist=,nprobe=,pq=,refine=,shards=]")
    ap.add_argument("--ef", default="32,64,128,256", help="HNSW efSearch values swept")
    ap.add_argument("--nprobe", default="8,16,32,64,128", help="IVF nprobe values swept")
    ap.add_argument("--dim", type=int, default=384, help="synthetic data width")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rank", type=int, default=32,
                    help="intrinsic dimension of the synthetic data (0: uniform random)")
    ap.add_argument("--threads", type=int, default=1,
                    help="OpenMP threads for search (on 2 shared cores, 2 threads made "
                    "single-query Flat search 50x slower)")
    ap.add_argument("--build-threads", type=int, default=1, help="OpenMP threads for builds")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows already in the results file (same data, n and "
                    "structure are replaced)")
    add_out_argument(ap)
    args = ap.parse_args()
    k = args.k
    configs = parse_configs(args.configs)
    out = results_path("index_scale", args.out)
    old: list[dict[str, Any]] = []
    if args.append and out.is_file():
        old = json.loads(out.read_text())["rows"]
    CACHE.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for n in (int(s) for s in args.sizes.split(",")):
        t0 = time.perf_counter()
        if args.data == "text":
            base, queries = text_vectors(n, args.queries)
        else:
            base = vectors(n, args.dim, seed=n, rank=args.rank)
            queries = vectors(args.queries, args.dim, seed=n + 1, rank=args.rank)
        truth = in_child(partial(exact, base, queries, k, args.threads))
        console.print(f"{args.data} n={n:,} dim {base.shape[1]}: data + exact top-{k} in "
                      f"{time.perf_counter() - t0:.1f}s")
        for config in configs:
            if config.kind.startswith("ivf") and not config.ivf_nlist:
                config = replace(config, ivf_nlist=min(int(4 * np.sqrt(n)), 2048))
            got = in_child(partial(measure, base, queries, truth, config, args))
            for row in got:
                row.update({"n": n, "kind": config.kind, "data": args.data, "dim": base.shape[1]})
            rows.extend(got)
        del base

    key = ("data", "n", "label")
    fresh = {tuple(r[c] for c in key) for r in rows}
    rows = [r for r in old if tuple(r.get(c) for c in key) not in fresh] + rows
    table = Table(title=f"FAISS index scale, k={k}, single-query search, {args.threads} "
                  "thread(s); memory per worker: RSS / PSS growth of each of 2 processes "
                  "sharing the file (mmap | plain read); load = 1-min load average (2 shared "
                  "cores)")
    for col in ("data", "n", "index", "search", "build s", "disk MB", "mmap RSS/PSS MB",
                "read RSS/PSS MB", "p50 ms", "p99 ms", "CPU p50", "CPU p99", f"recall@{k}",
                "load"):
        table.add_column(col, justify="left" if col in ("data", "index", "search") else "right")
    for r in sorted(rows, key=lambda r: (r["data"], r["n"], r["label"])):
        mem = {t: (f"{r[f'worker_rss_mb_{t}']:.0f} / {r[f'worker_pss_mb_{t}']:.0f}"
                   if f"worker_rss_mb_{t}" in r else "-") for t in ("mmap", "read")}
        table.add_row(r["data"], f"{r['n']:,}", r["label"], r["search_param"],
                      f"{r['build_s']:.1f}", f"{r['index_mb']:.0f}", mem["mmap"], mem["read"],
                      f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['cpu_p50_ms']:.3f}",
                      f"{r['cpu_p99_ms']:.3f}", f"{r[f'recall@{k}']:.3f}",
                      f"{r['load_search']:.1f}")
    console.print(table)
    path = save_results("index_scale", {
        "machine": machine(), "args": vars(args), "rows": rows,
        "seconds": time.perf_counter() - started,
        "note": "2 CPU cores shared with other jobs (see load_build / load_search, the 1-min "
                "load average): latencies measured under load are pessimistic",
    }, args.out)
    plot(rows, path.with_suffix(".png"), k)
    console.print(f"wrote {path} and {path.with_suffix('.png')} "
                  f"({time.perf_counter() - started:.0f}s)")


if __name__ == "__main__":
    main()
