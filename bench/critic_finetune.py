"""Would a fine-tuned classifier make a better stream critic? all-MiniLM-L6-v2 fine-tuned as a
two-class sequence classifier on the critic's train and dev rows (every critic file, the judge's
seed answers), scored on the test families' rows: the same rows bench/critic_data.py scores the
linear critic on.

    .venv/bin/python bench/critic_finetune.py [--rows 4000] [--epochs 1] [--lr 5e-5]
        [--thresholds 0.5,0.7,0.9] [--threads 1] [--out [PATH]]

An experiment, not a product path: nothing here is saved as a model.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import add_out_argument, machine, save_results
from guideline_lib.embedded import base_model_path
from judge.critic import critic_files, critic_rows
from judge.data import answer_rows, load_families
from judge.prepare import SEEDS

console = Console(width=150)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=4000, help="training rows (shuffled)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--thresholds", default="0.5,0.7,0.9")
    parser.add_argument("--threads", type=int, default=1)
    add_out_argument(parser)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(13)
    torch.set_num_threads(args.threads)
    rows = critic_rows(answer_rows(load_families(SEEDS), seed=13), critic_files(), glue=False)
    train = [r for r in rows if r.split != "test"]
    test = [r for r in rows if r.split == "test"]
    random.Random(13).shuffle(train)
    train = train[:args.rows]
    tok = AutoTokenizer.from_pretrained(str(base_model_path()))
    model = AutoModelForSequenceClassification.from_pretrained(str(base_model_path()),
                                                               num_labels=2)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    start = time.perf_counter()
    model.train()
    steps = range(0, len(train), args.batch_size)
    for epoch in range(args.epochs):
        for i in tqdm(steps, desc=f"epoch {epoch + 1}"):
            batch = train[i:i + args.batch_size]
            x = tok([r.text for r in batch], truncation=True, max_length=128, padding=True,
                    return_tensors="pt")
            loss = model(**x, labels=torch.tensor([int(r.unsafe) for r in batch])).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    train_s = time.perf_counter() - start
    model.eval()
    probs: list[float] = []
    with torch.no_grad():
        for i in range(0, len(test), 64):
            x = tok([r.text for r in test[i:i + 64]], truncation=True, max_length=128,
                    padding=True, return_tensors="pt")
            probs += torch.softmax(model(**x).logits, -1)[:, 1].tolist()
    p = np.array(probs)
    y = np.array([r.unsafe for r in test])
    english = np.array([r.lang == "en" for r in test])
    table = Table(title=f"fine-tuned MiniLM critic: {len(train)} training rows, "
                        f"{args.epochs} epoch(s), {train_s:.0f} s; {len(test)} test rows")
    for col in ("threshold", "recall", "false positives", "English recall / FP",
                "other languages recall / FP"):
        table.add_column(col)
    out = []
    for t in (float(v) for v in args.thresholds.split(",")):
        hit = p >= t
        row = {"threshold": t, "recall": float(hit[y].mean()),
               "false_positive_rate": float(hit[~y].mean()),
               "english": [float(hit[y & english].mean()), float(hit[~y & english].mean())],
               "other_languages": [float(hit[y & ~english].mean()),
                                   float(hit[~y & ~english].mean())]}
        out.append(row)
        table.add_row(f"{t:g}", f"{row['recall']:.2f}", f"{row['false_positive_rate']:.2f}",
                      "{:.2f} / {:.2f}".format(*row["english"]),
                      "{:.2f} / {:.2f}".format(*row["other_languages"]))
    console.print(table)
    save_results("critic_finetune", {"machine": machine(), "args": vars(args),
                                     "train_rows": len(train), "test_rows": len(test),
                                     "train_seconds": train_s, "rows": out}, args.out)


if __name__ == "__main__":
    main()
