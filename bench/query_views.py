"""Query views: one embedding of the prompt vs the gateway's views (plus the tail of a long text).

On every evaluation set, with the gateway's retriever and selection defaults (trained encoder,
onnx-int8, min score 0.4, safety margin 0.05): the share of harmful prompts that get a guideline
of an expected category, and the share of benign prompts that get any safety guideline
(over-trigger), first with the prompt embedded once (the baseline), then with
`retriever.query.query_views`. Prompts longer than the tail are counted separately, since only
they change. Skips cleanly without ../shared/data.

    .venv/bin/python bench/query_views.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.config import Settings
from bench.common import add_out_argument, machine, save_results
from bench.retrieval_quality import load_sets
from retriever.query import TAIL_WORDS, query_views

console = Console(width=140)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared"
                    / "data")
    ap.add_argument("--alpaca-max", type=int, default=2000)
    add_out_argument(ap)
    args = ap.parse_args()
    if not args.data.is_dir():
        console.print(f"no evaluation data at {args.data}; nothing to measure")
        return
    ws = Settings()
    ws.prepare(train=False)
    retriever = ws.open_retriever()
    select = ws.select_config()
    table = Table(title=f"one embedding vs query views (tail: last {TAIL_WORDS} words)")
    for col in ("set", "prompts", "long", "metric", "one embedding", "views", "views - one"):
        table.add_column(col, justify="left" if col in ("set", "metric") else "right")
    results = {}
    for s in load_sets(args.data, alpaca_max=args.alpaca_max):
        configs = [select] * len(s.prompts)
        single = retriever.search_batch([(p.strip(),) if p.strip() else () for p in s.prompts],
                                        configs)
        views = retriever.search_batch([query_views(p) for p in s.prompts], configs)
        long_n = sum(len(p.split()) > TAIL_WORDS for p in s.prompts)

        def rate(all_hits: list, s=s) -> float:  # type: ignore[type-arg]
            if s.harmful:
                ok = [any(h.category in exp for h in hits)
                      for hits, exp in zip(all_hits, s.expected, strict=True)]
            else:
                ok = [any(h.kind == "safety" for h in hits) for hits in all_hits]
            return sum(ok) / max(1, len(ok))

        a, b = rate(single), rate(views)
        metric = "hit (any k)" if s.harmful else "over-trigger"
        results[s.name] = {"prompts": len(s.prompts), "long": long_n, "metric": metric,
                           "one": a, "views": b}
        table.add_row(s.name, str(len(s.prompts)), str(long_n), metric, f"{a:.3f}", f"{b:.3f}",
                      f"{b - a:+.3f}")
    console.print(table)
    path = save_results("query_views", {"machine": machine(), "results": results}, args.out)
    console.print(f"saved {path}")


if __name__ == "__main__":
    main()
