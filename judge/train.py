"""Training the judge's heads on the project's own data set (judge/data), with fixed seeds.

1. embed the prompts (every query view), the answers and the memory examples (the library's
   linked examples: safety-linked ones risky, the rest benign) with the serving encoder;
2. fit logistic-regression heads (risk, risk categories, response label, response categories)
   and keep the memory's train rows for the kNN vote;
3. calibrate the risk score on the dev rows of both (Platt scaling) and pick the gate threshold
   there;
4. evaluate on the test split (families never seen in training); 5. save with a manifest.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from guideline_lib.schema import utc_now
from guideline_lib.taxonomy import SAFETY_IDS
from judge.data import AnswerRow, PromptRow
from judge.model import (
    LABELS,
    Calibration,
    ExampleMemory,
    LinearHeads,
    answer_views,
    response_features,
)
from retriever.encoder import Encoder
from retriever.query import query_views

Progress = Callable[[str], None]


@dataclass(frozen=True)
class JudgeTrainConfig:
    """Hyper-parameters (regularisation strength per head) and the seed."""

    c_risk: float = 1.0
    c_categories: float = 1.0
    c_response: float = 1.0
    # The gate threshold: the best recall on dev whose false-positive rate on the dev rows'
    # benign prompts (same-topic contrast asks and the library's benign examples, harder than
    # real traffic) stays under this. Today's safety-margin rule over-triggers on about 19 % of
    # the judge data's benign test prompts; the default keeps the gate a little below that.
    target_fpr: float = 0.15
    seed: int = 13
    window: int = 3
    # kNN over the memory: neighbours, and how much the linear risk head adds to the vote
    # (0: the vote alone, which generalised best to real prompts on the public dev halves).
    memory_k: int = 15
    head_weight: float = 0.0
    category_mix: float = 0.5


@dataclass(frozen=True)
class MemoryRow:
    """One labelled example the risk score votes over."""

    text: str
    risky: bool
    categories: tuple[str, ...]
    split: str


def library_memory(library: Any) -> list[MemoryRow]:
    """The library's linked examples as memory rows: risky when every guideline they are
    linked to is a safety guideline, with those guidelines' categories."""
    by_id = {g.id: g for g in library.guidelines}
    rows = []
    for e in library.examples:
        linked = [by_id[g] for g in e.guideline_ids if g in by_id]
        if not linked:
            continue
        risky = all(g.kind == "safety" for g in linked)
        cats = tuple(dict.fromkeys(g.category for g in linked if g.kind == "safety"))
        rows.append(MemoryRow(e.input, risky, cats if risky else (), e.split))
    return rows


def data_hash(prompts: Sequence[PromptRow], answers: Sequence[AnswerRow]) -> str:
    """sha256 over the training rows, for the manifest."""
    h = hashlib.sha256()
    for rows in (prompts, answers):
        for r in rows:
            h.update(json.dumps(asdict(r), sort_keys=True).encode())
    return h.hexdigest()


def _encode(encoder: Encoder, texts: Sequence[str], batch: int = 256) -> np.ndarray:
    return np.vstack([encoder.encode(list(texts[i:i + batch]))
                      for i in range(0, len(texts), batch)])


def embed_prompts(encoder: Encoder, rows: Sequence[PromptRow], *, window: int = 3,
                  batch: int = 256) -> tuple[np.ndarray, list[int]]:
    """Every query view of every row (as the gateway embeds them) and the view count per row."""
    views = [query_views(r.messages, window=window) for r in rows]
    flat = [v for group in views for v in group]
    vecs = _encode(encoder, flat, batch) if flat else np.zeros((0, encoder.dim), dtype=np.float32)
    return vecs, [len(g) for g in views]


def embed_answers(encoder: Encoder, rows: Sequence[AnswerRow], *, batch: int = 256
                  ) -> np.ndarray:
    """Response-judge features for every (conversation, answer) row."""
    prompts = [query_views(r.messages, window=0)[0] for r in rows]
    heads, tails = zip(*(answer_views(r.answer) for r in rows), strict=True)
    return response_features(_encode(encoder, prompts, batch), _encode(encoder, heads, batch),
                             _encode(encoder, tails, batch))


def _expand(labels: Sequence[Any], groups: Sequence[int]) -> list[Any]:
    return [lab for lab, n in zip(labels, groups, strict=True) for _ in range(n)]


def _rowwise_max(values: np.ndarray, groups: Sequence[int]) -> np.ndarray:
    out, start = [], 0
    for n in groups:
        out.append(values[start:start + n].max(axis=0) if n else np.zeros(values.shape[1:]))
        start += n
    return np.array(out)


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, AUPRC, F1 at ``threshold``, and recall at 1 % and 3 % false positives."""
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score, roc_curve

    if len(set(y.tolist())) < 2:
        return {"n": float(len(y))}
    fpr, tpr, _ = roc_curve(y, p)
    return {"n": float(len(y)), "auroc": float(roc_auc_score(y, p)),
            "auprc": float(average_precision_score(y, p)),
            "f1": float(f1_score(y, p >= threshold)),
            "recall_at_1pct_fpr": float(np.interp(0.01, fpr, tpr)),
            "recall_at_3pct_fpr": float(np.interp(0.03, fpr, tpr)),
            "fpr_at_threshold": float(((p >= threshold) & (y == 0)).sum() / max(1, (y == 0).sum())),
            "recall_at_threshold": float(((p >= threshold) & (y == 1)).sum()
                                         / max(1, (y == 1).sum()))}


def _fit_binary(x: np.ndarray, y: np.ndarray, c: float, seed: int) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    if len(set(y.tolist())) < 2:  # a category with no positives: never fires
        return np.zeros(x.shape[1], dtype=np.float32), -20.0
    m = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
    m.fit(x, y)
    return m.coef_[0].astype(np.float32), float(m.intercept_[0])


def train_heads(
    prompts: Sequence[PromptRow],
    answers: Sequence[AnswerRow],
    encoder: Encoder,
    *,
    encoder_hash: str,
    config: JudgeTrainConfig | None = None,
    memory: Sequence[MemoryRow] = (),
    progress: Progress = print,
) -> tuple[LinearHeads, dict[str, Any]]:
    """Fit, calibrate and evaluate both heads (and the example memory, when given); returns
    them (with a manifest) and the metrics."""
    from sklearn.linear_model import LogisticRegression

    config = config or JudgeTrainConfig()
    started = time.monotonic()
    progress(f"embedding {len(prompts)} prompts and {len(answers)} answers")
    pv, groups = embed_prompts(encoder, prompts, window=config.window)
    split_rows = {s: [i for i, r in enumerate(prompts) if r.split == s]
                  for s in ("train", "dev", "test")}
    row_of_view: list[int] = np.repeat(np.arange(len(prompts)), groups).tolist()
    view_split = np.array([prompts[i].split for i in row_of_view])
    y_view = np.array([prompts[i].risky for i in row_of_view], dtype=int)
    train_v = view_split == "train"

    progress("fitting the risk head and the category heads")
    risk_w, risk_b = _fit_binary(pv[train_v], y_view[train_v], config.c_risk, config.seed)
    cat_w, cat_b = [], []
    for cat in SAFETY_IDS:
        y_cat = np.array([cat in prompts[i].categories for i in row_of_view], dtype=int)
        w, b = _fit_binary(pv[train_v], y_cat[train_v], config.c_categories, config.seed)
        cat_w.append(w)
        cat_b.append(b)

    mem, mv = None, np.zeros((0, pv.shape[1]), dtype=np.float32)
    if memory:
        progress(f"embedding {len(memory)} memory examples")
        mv = _encode(encoder, [m.text for m in memory])
        keep = np.array([m.split == "train" for m in memory])
        cats = np.array([[c in m.categories for c in SAFETY_IDS] for m in memory], np.float32)
        mem = ExampleMemory(mv[keep], np.array([m.risky for m in memory], np.float32)[keep],
                            cats[keep], config.memory_k)
    draft = LinearHeads(risk_w=risk_w, risk_b=risk_b, risk_cal=Calibration(
        np.array([0.0, 1.0]), np.array([0.0, 1.0])), cat_w=np.array(cat_w),
        cat_b=np.array(cat_b, dtype=np.float32), resp_w=np.zeros((3, 1)), resp_b=np.zeros(3),
        resp_cat_w=np.zeros((1, 1)), resp_cat_b=np.zeros(1), threshold=0.5, manifest={},
        memory=mem, head_weight=config.head_weight, category_mix=config.category_mix)
    raw = _rowwise_max(draft.risk_raw(pv)[:, None], groups)[:, 0]
    y_row = np.array([r.risky for r in prompts], dtype=int)
    dev = np.array(split_rows["dev"])
    mem_dev = np.array([m.split == "dev" for m in memory], dtype=bool)
    dev_raw = np.concatenate([raw[dev], draft.risk_raw(mv[mem_dev]) if mem_dev.any() else []])
    dev_y = np.concatenate([y_row[dev], [int(m.risky) for m, d in zip(memory, mem_dev,
                                                                        strict=True) if d]])
    cal = platt_calibration(dev_raw, dev_y, config.seed)
    threshold = _threshold_at_fpr(dev_y, cal(dev_raw), config.target_fpr)

    progress("fitting the response judge")
    af = embed_answers(encoder, answers)
    a_train = np.array([r.split == "train" for r in answers])
    y_label = np.array([LABELS.index(r.label) for r in answers])
    resp = LogisticRegression(C=config.c_response, class_weight="balanced", max_iter=3000,
                              random_state=config.seed)
    resp.fit(af[a_train], y_label[a_train])
    resp_w = np.zeros((len(LABELS), af.shape[1]), dtype=np.float32)
    resp_b = np.full(len(LABELS), -20.0, dtype=np.float32)
    for k, cls in enumerate(resp.classes_):
        resp_w[int(cls)] = resp.coef_[k]
        resp_b[int(cls)] = resp.intercept_[k]
    rc_w, rc_b = [], []
    for cat in SAFETY_IDS:
        y_cat = np.array([cat in r.categories for r in answers], dtype=int)
        w, b = _fit_binary(af[a_train], y_cat[a_train], config.c_categories, config.seed)
        rc_w.append(w)
        rc_b.append(b)

    heads = LinearHeads(
        risk_w=risk_w, risk_b=risk_b, risk_cal=cal, cat_w=np.array(cat_w),
        cat_b=np.array(cat_b, dtype=np.float32), resp_w=resp_w, resp_b=resp_b,
        resp_cat_w=np.array(rc_w), resp_cat_b=np.array(rc_b, dtype=np.float32),
        threshold=threshold, manifest={}, memory=mem, head_weight=config.head_weight,
        category_mix=config.category_mix)
    metrics = evaluate_heads(heads, prompts, answers, pv, groups, af)
    mem_test = np.array([m.split == "test" for m in memory], dtype=bool)
    if mem_test.any():
        y_mem = np.array([m.risky for m, t in zip(memory, mem_test, strict=True) if t], int)
        p_mem = np.array([r.score for r in heads.risks(mv[mem_test], [1] * int(mem_test.sum()))])
        metrics["memory_test"] = binary_metrics(y_mem, p_mem, threshold)
    manifest = {
        "kind": "guide-align judge (linear heads and example-kNN on the retriever's embedding)",
        "memory": {"rows": len(memory), "kept": 0 if mem is None else len(mem.risky),
                   "k": config.memory_k, "head_weight": config.head_weight},
        "created": utc_now(), "encoder_hash": encoder_hash, "categories": list(SAFETY_IDS),
        "labels": list(LABELS), "data_hash": data_hash(prompts, answers),
        "counts": {s: len(v) for s, v in split_rows.items()} | {"answers": len(answers)},
        "config": asdict(config), "threshold": threshold, "metrics": metrics,
        "seconds": round(time.monotonic() - started, 1),
    }
    return LinearHeads(**{**heads.__dict__, "manifest": manifest}), metrics


def platt_calibration(raw: np.ndarray, y: np.ndarray, seed: int, points: int = 256
                      ) -> Calibration:
    """Platt scaling (a logistic fit of the label on the raw score), stored as breakpoints over
    the raw range seen: strictly monotone, so it keeps the ranking (isotonic steps would tie
    prompts the raw score tells apart) and a threshold reads as a probability."""
    from sklearn.linear_model import LogisticRegression

    lo, hi = float(raw.min()), float(raw.max())
    grid = np.linspace(lo, hi if hi > lo else lo + 1.0, points)
    if len(set(y.tolist())) < 2:
        return Calibration(grid, np.full(points, float(y.mean()) if len(y) else 0.0))
    m = LogisticRegression(C=1e4, max_iter=1000, random_state=seed).fit(raw[:, None], y)
    return Calibration(grid, m.predict_proba(grid[:, None])[:, 1])


def _threshold_at_fpr(y: np.ndarray, p: np.ndarray, target: float) -> float:
    """The lowest threshold whose false-positive rate on ``y == 0`` is at most ``target``."""
    negatives = p[y == 0]
    for t in sorted(set(np.unique(p).tolist()) | {1.0}):
        if not len(negatives) or float((negatives >= t).mean()) <= target:
            return float(t)
    return 1.0


def evaluate_heads(heads: LinearHeads, prompts: Sequence[PromptRow],
                   answers: Sequence[AnswerRow], pv: np.ndarray, groups: Sequence[int],
                   af: np.ndarray) -> dict[str, Any]:
    """Test-split metrics of both heads (families never seen in training)."""
    from sklearn.metrics import accuracy_score, f1_score

    risks = heads.risks(pv, groups)
    test = [i for i, r in enumerate(prompts) if r.split == "test"]
    y = np.array([prompts[i].risky for i in test], dtype=int)
    p = np.array([risks[i].score for i in test])
    out: dict[str, Any] = {"prompt_risk": binary_metrics(y, p, heads.threshold)}
    hits = [risks[i].top(1)[0][0] in prompts[i].categories for i in test if prompts[i].risky]
    out["prompt_risk"]["category_top1"] = float(np.mean(hits)) if hits else 0.0
    a_test = [i for i, r in enumerate(answers) if r.split == "test"]
    if a_test:
        verdicts = heads.verdicts(af[a_test])
        truth = [answers[i].label for i in a_test]
        pred = [v.label for v in verdicts]
        out["response"] = {"n": len(a_test), "accuracy": float(accuracy_score(truth, pred)),
                           "macro_f1": float(f1_score(truth, pred, average="macro")),
                           **{f"f1_{lab}": float(f1_score(truth, pred, labels=[lab],
                                                          average="macro")) for lab in LABELS}}
    return out
