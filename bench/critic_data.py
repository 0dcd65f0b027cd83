"""The stream critic against its training data: trained on judge/data/critic.json alone vs on
every critic file, both scored on the test families of every file (the judge's family split by
id, so no head of either critic saw them), per language, at a few thresholds; and the
critic on every file stacked with the response judge of the workspace (var/judge), which reads
the request too (trained on the judge's seed families: their test families are test here).

    .venv/bin/python bench/critic_data.py [--thresholds 0.5,0.7] [--out [PATH]]

Uses the workspace's serving encoder (var/encoder, as `guide-align prepare` leaves it); the
heads are fitted without the final refit on every family, so test families stay unseen.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.config import Settings
from bench.common import add_out_argument, machine, save_results
from judge.critic import CRITIC_DATA, CachedEncoder, critic_files, critic_rows, train_critic
from judge.data import answer_rows, load_families
from judge.model import load_heads, response_logits
from judge.prepare import SEEDS

console = Console(width=150)


def _rates(hit: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"recall": float(hit[y].mean()), "false_positive_rate": float(hit[~y].mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--thresholds", default="0.5,0.7")
    add_out_argument(parser)
    args = parser.parse_args()
    settings = Settings()
    # each distinct text embedded once across the three trainings
    encoder = CachedEncoder(settings.open_retriever().encoder)
    answers = answer_rows(load_families(SEEDS), seed=13)
    # the spans, their windows and prefixes (no glued rows): the rows critic_finetune.py scores
    test = [r for r in critic_rows(answers, critic_files(), glue=False) if r.split == "test"]
    texts = [r.text for r in test]
    y = np.array([r.unsafe for r in test])
    english = np.array([r.lang == "en" for r in test])
    rows = []
    read = functools.partial(response_logits, load_heads(settings.judge_path))
    judged = read(encoder.encode, [r.prompt for r in test], texts)
    for name, files, response in (("critic.json", [CRITIC_DATA], None),
                                  ("all critic files", critic_files(), None),
                                  ("all critic files + response judge", critic_files(), read)):
        console.print(f"training on {name}")
        critic = train_critic(answers, encoder, path=files, refit=False, response=response,
                              progress=lambda _: None)
        p = critic.unsafe(encoder.encode(texts), texts,
                          judged if critic.reads_response else None)
        for t in (float(x) for x in args.thresholds.split(",")):
            hit = p >= t
            rows.append({"trained_on": name, "threshold": t, **_rates(hit, y),
                         "english": _rates(hit[english], y[english]),
                         "other_languages": _rates(hit[~english], y[~english])})
    table = Table(title=f"stream critic on {len(test)} test-family rows "
                        f"({int(y.sum())} unsafe)")
    for col in ("trained on", "threshold", "recall", "false positives",
                "English recall / FP", "other languages recall / FP"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["trained_on"], f"{r['threshold']:g}", f"{r['recall']:.2f}",
                      f"{r['false_positive_rate']:.2f}",
                      f"{r['english']['recall']:.2f} / {r['english']['false_positive_rate']:.2f}",
                      f"{r['other_languages']['recall']:.2f} / "
                      f"{r['other_languages']['false_positive_rate']:.2f}")
    console.print(table)
    save_results("critic_data", {"machine": machine(), "test_rows": len(test),
                                 "files": [p.name for p in critic_files()], "rows": rows},
                 args.out)


if __name__ == "__main__":
    main()
