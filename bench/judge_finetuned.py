"""Option (b) of the judge comparison: a fine-tuned MiniLM sequence classifier for prompt risk.

    .venv/bin/python bench/judge_finetuned.py [--data ../shared/data] [--rows 4000] [--epochs 1]

Fine-tunes all-MiniLM-L6-v2 (the wheel) with a two-class head (transformers
AutoModelForSequenceClassification, a plain torch loop, fixed seed) on a balanced sample of the
project's own rows: half the library's linked train examples (safety-linked = risky), half the
judge data's train families. Then scores the TEST halves of ../shared/data and the judge's own
family-split test set, next to the shipped gate (kNN over the library's examples) in the same
run, with the same metrics as bench/judge_quality.py, plus the per-prompt latency of each.
This model needs a second encoder pass per request (the gate reuses the retriever's embedding),
so it is measured here as an offline option, not wired into the request path.
Writes var/bench/judge_finetuned.json, or with ``--out`` bench/results/judge_finetuned.json.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.config import Settings
from bench.common import add_out_argument, machine, save_results
from bench.judge_quality import tuned_threshold
from bench.retrieval_quality import _half, load_sets
from guide.judging import assess_batch
from guide.step import as_conversation
from guideline_lib.embedded import base_model_path
from judge.data import load_families, prompt_rows
from judge.train import binary_metrics, library_memory

console = Console(width=140)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared"
                    / "data")
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=64)
    add_out_argument(ap)
    args = ap.parse_args()
    if not args.data.is_dir():
        console.print(f"no evaluation data at {args.data}; nothing to measure")
        return
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(13)
    rng = random.Random(13)
    ws = Settings(risk_gate=True)
    retriever = ws.open_retriever()
    heads = ws.open_judge(retriever)
    assert heads is not None
    memory = [m for m in library_memory(retriever.library) if m.split == "train"]
    own = prompt_rows(load_families())
    own_train = [r for r in own if r.split == "train"]
    own_test = [r for r in own if r.split == "test"]
    half = args.rows // 2
    rows = [(m.text, int(m.risky)) for m in rng.sample(memory, min(half, len(memory)))]
    rows += [(r.text, int(r.risky)) for r in rng.sample(own_train, min(half, len(own_train)))]
    rng.shuffle(rows)

    base = str(base_model_path())
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5)
    batch = 32
    started = time.monotonic()
    model.train()
    for epoch in range(args.epochs):
        for i in track(range(0, len(rows), batch), description=f"fine-tuning, epoch {epoch + 1}"):
            texts, labels = zip(*rows[i:i + batch], strict=True)
            enc = tok(list(texts), truncation=True, max_length=args.max_length, padding=True,
                      return_tensors="pt")
            loss = model(**enc, labels=torch.tensor(labels)).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    train_s = time.monotonic() - started
    model.eval()

    def finetuned(prompts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(prompts), 64):
                enc = tok(prompts[i:i + 64], truncation=True, max_length=128, padding=True,
                          return_tensors="pt")
                out.append(torch.log_softmax(model(**enc).logits, -1)[:, 1].numpy())
        return np.concatenate(out)

    def shipped(prompts: list[str]) -> np.ndarray:
        return np.array([r.score for i in range(0, len(prompts), 256)
                         for r in assess_batch([as_conversation(p) for p in prompts[i:i + 256]],
                                               retriever, heads, window=ws.window)])

    sets = load_sets(args.data, alpaca_max=2000)
    table = Table(title=f"Prompt risk, fine-tuned MiniLM (b) vs the shipped gate (c); "
                  f"{len(rows)} training rows, {args.epochs} epoch(s), {train_s:.0f}s")
    for col in ("system", "test AUROC", "recall@3%FPR", "recall @dev thr", "benign FP @dev thr",
                "own AUROC", "own recall@3%FPR", "p50 ms / prompt"):
        table.add_column(col, justify="left" if col == "system" else "right")
    results: dict[str, object] = {"rows": len(rows), "epochs": args.epochs,
                                  "train_seconds": train_s}
    for name, score in (("fine-tuned MiniLM (b)", finetuned), ("shipped gate (c)", shipped)):
        y_dev, s_dev, y_test, s_test = [], [], [], []
        for es in sets:
            s = score(es.prompts)
            for p, v in zip(es.prompts, s, strict=True):
                (y_dev if _half(p) == "dev" else y_test).append(int(es.harmful))
                (s_dev if _half(p) == "dev" else s_test).append(float(v))
        thr = tuned_threshold(np.array(s_dev), np.array(y_dev))
        m = binary_metrics(np.array(y_test), np.array(s_test), thr)
        own_m = binary_metrics(np.array([r.risky for r in own_test], dtype=int),
                               score([r.text for r in own_test]), thr)
        sample = [p for es in sets for p in es.prompts][:100]
        times = []
        for p in sample:
            t0 = time.perf_counter()
            score([p])
            times.append((time.perf_counter() - t0) * 1000)
        p50 = float(np.percentile(times, 50))
        results[name] = {"test": m, "own_test": own_m, "p50_ms": p50}
        table.add_row(name, f"{m['auroc']:.3f}", f"{m['recall_at_3pct_fpr']:.3f}",
                      f"{m['recall_at_threshold']:.3f}", f"{m['fpr_at_threshold']:.3f}",
                      f"{own_m['auroc']:.3f}", f"{own_m['recall_at_3pct_fpr']:.3f}", f"{p50:.1f}")
    console.print(table)
    path = save_results('judge_finetuned', {'machine': machine(), **results}, args.out)
    console.print(f"saved {path}")


if __name__ == "__main__":
    main()
