"""How far the stream critic's readings can separate the benchmark's streams at all.

For each whole scripted answer of bench/backtrack_streams.py, the three logits the critic
stacks (the dense head on the MiniLM embedding, the lexical character-n-gram head, the judge's
response head on the answer to its request) and the shipped stack's P(unsafe), as ROC AUC,
in English and in the other languages. Then a diagnostic ceiling: a logistic stack fitted on
the benchmark itself (which no shipped critic may do: it is the test set), and the share of
unsafe answers it ranks above all but k benign ones. When even that is far from "every unsafe
answer above every benign one", no threshold or stacker over these readings can meet the
backtracking aim, and a stronger reading (a guard model, app/guard.py) is what is missing.

    .venv/bin/python bench/critic_ceiling.py [--out]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config import Settings
from bench.backtrack_streams import BENIGN, UNSAFE
from bench.common import add_out_argument, machine, save_results
from judge.model import answer_views, response_features

console = Console(width=150)
LANGS = ("-es", "-fr", "-de", "-it", "-pt")


def readings() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The critic's logits per whole answer, the labels, and which answers are English."""
    settings = Settings()
    retriever = settings.open_retriever()
    heads = settings.open_critic(retriever) or settings.model_copy(
        update={"backtrack": "enforce"}).open_critic(retriever)
    if heads is None or heads.critic is None:
        raise SystemExit("no stream critic: run `guide-align prepare` with BACKTRACK=enforce")
    critic = heads.critic
    cases = [*UNSAFE, *BENIGN]
    texts = [c.text for c in cases]
    encode = retriever.encode
    vecs = encode([(t,) for t in texts])
    response = heads.unsafe_logits(response_features(
        encode([(c.user,) for c in cases]), vecs, encode([(answer_views(t)[1],) for t in texts])))
    columns = {"dense": critic.dense_logits(vecs), "lexical": critic.lexical_logits(texts),
               "response": response}
    columns["shipped stack"] = critic.unsafe(vecs, texts, response if critic.reads_response
                                             else None)
    y = np.array([c.unsafe for c in cases])
    english = np.array([c.shape != "other language" and not c.name.endswith(LANGS)
                        for c in cases])
    return columns, y, english


def ranked_above(scores: np.ndarray, y: np.ndarray, k: int) -> float:
    """Share of positives scoring above all but ``k`` negatives."""
    negatives = np.sort(scores[~y])[::-1]
    bar = negatives[k] if k < len(negatives) else -np.inf
    return float((scores[y] > bar).mean())


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_out_argument(parser)
    args = parser.parse_args()
    columns, y, english = readings()
    rows: list[dict[str, Any]] = []
    for name, z in columns.items():
        rows.append({"reading": name, "auc": float(roc_auc_score(y, z)),
                     "auc_english": float(roc_auc_score(y[english], z[english])),
                     "auc_other": float(roc_auc_score(y[~english], z[~english])),
                     **{f"recall_at_{k}_false": ranked_above(z, y, k) for k in (0, 1, 3, 6)}})
    x = np.column_stack([columns[k] for k in ("dense", "lexical", "response")])
    oracle = LogisticRegression(C=100.0, max_iter=1000).fit(x, y).decision_function(x)
    rows.append({"reading": "ceiling: stack fitted on the bench",
                 "auc": float(roc_auc_score(y, oracle)),
                 "auc_english": float(roc_auc_score(y[english], oracle[english])),
                 "auc_other": float(roc_auc_score(y[~english], oracle[~english])),
                 **{f"recall_at_{k}_false": ranked_above(oracle, y, k) for k in (0, 1, 3, 6)}})
    table = Table(title=f"Whole scripted answers: {int(y.sum())} unsafe, {int((~y).sum())} "
                        "benign; recall = unsafe answers ranked above all but k benign ones")
    for col in ("reading", "AUC", "AUC English", "AUC other", "recall k=0", "k=1", "k=3",
                "k=6"):
        table.add_column(col, justify="left" if col == "reading" else "right")
    for r in rows:
        table.add_row(r["reading"], f"{r['auc']:.3f}", f"{r['auc_english']:.3f}",
                      f"{r['auc_other']:.3f}",
                      *(f"{r[f'recall_at_{k}_false']:.0%}" for k in (0, 1, 3, 6)))
    console.print(table)
    data = {"machine": machine(), "unsafe": int(y.sum()), "benign": int((~y).sum()),
            "rows": rows}
    console.print(f"saved {save_results('critic_ceiling', data, args.out)}")


if __name__ == "__main__":
    main()
