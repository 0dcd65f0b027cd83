"""The judge's models: small linear heads on the retriever's own sentence embeddings.

Prompt risk reads the embedding the guide step computes anyway (one row per query view; a
conversation's risk is its riskiest view), so in the request path it costs two matrix products:
a kNN vote over the library's labelled examples (``ExampleMemory``, which carries most of the
signal on real prompts) and the linear heads trained on judge/data (categories, and optionally a
share of the risk score).
The response judge reads the prompt and the answer (its head and its tail, so a long or growing
answer is seen where it matters). Scores are calibrated on the dev split (Platt scaling, stored
as breakpoints and applied with ``np.interp``), so a threshold means a probability.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from guideline_lib.io import MANIFEST, atomic_directory
from guideline_lib.taxonomy import SAFETY_IDS
from judge.critic import StreamCritic

WEIGHTS = "heads.npz"
LABELS = ("unsafe", "refusal", "useful")
TAIL_WORDS = 40
HNSW_FROM = 4096  # memory rows from which the kNN vote searches an HNSW graph


class JudgeError(Exception):
    """A judge directory is missing, corrupt or was trained for another encoder."""


@dataclass(frozen=True)
class Calibration:
    """A monotone map from raw score to probability (breakpoints, linearly interpolated)."""

    x: np.ndarray
    y: np.ndarray

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.x, self.y)


@dataclass(frozen=True)
class Risk:
    """How risky a conversation is: P(risky) and a score per safety category."""

    score: float
    categories: dict[str, float]

    def top(self, n: int = 3, *, floor: float = 0.0) -> list[tuple[str, float]]:
        """The ``n`` most likely categories scoring at least ``floor``."""
        ranked = sorted(self.categories.items(), key=lambda kv: -kv[1])
        return [(c, s) for c, s in ranked[:n] if s >= floor]


@dataclass(frozen=True)
class Verdict:
    """The response judge's label for one answer, with a probability per label and category."""

    label: str
    scores: dict[str, float]
    categories: dict[str, float]


@dataclass(frozen=True)
class ExampleMemory:
    """Labelled example embeddings that prompt risk votes over (example-kNN): the risk of a
    query is the similarity-weighted share of risky examples among its ``k`` nearest."""

    vectors: np.ndarray  # (n, dim), unit length
    risky: np.ndarray  # (n,) 1.0 risky, 0.0 benign
    categories: np.ndarray  # (n, n_categories) 1.0 where the example carries that harm
    k: int = 15

    @cached_property
    def _index(self) -> Any:
        """Exact search for a small memory; above ``HNSW_FROM`` rows an HNSW graph, built on
        first use (under a second for the starter library): about 4x faster per query, with
        votes within 0.001 of exact on average (measured on the public dev/test prompts)."""
        import faiss

        dim = self.vectors.shape[1]
        index: Any
        if len(self.risky) >= HNSW_FROM:
            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.hnsw.efSearch = 128
        else:
            index = faiss.IndexFlatIP(dim)
        index.add(np.ascontiguousarray(self.vectors, dtype=np.float32))
        return index

    def warm(self) -> ExampleMemory:
        """Build the search index now rather than on the first request."""
        _ = self._index
        return self

    def vote(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(risk share, category shares) per row of ``vectors``."""
        n = len(self.risky)
        if not n or not len(vectors):
            return np.zeros(len(vectors)), np.zeros((len(vectors), self.categories.shape[1]))
        sims, top = self._index.search(np.ascontiguousarray(vectors, dtype=np.float32),
                                       min(self.k, n))
        w = np.clip(sims, 0.0, None)
        norm = np.maximum(w.sum(axis=1), 1e-6)
        risk = (self.risky[top] * w).sum(axis=1) / norm
        cats = (self.categories[top] * w[..., None]).sum(axis=1) / norm[:, None]
        return risk, cats


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class LinearHeads:
    """Weights of both heads, their calibration, and the manifest they were saved with."""

    risk_w: np.ndarray  # (dim,)
    risk_b: float
    risk_cal: Calibration
    cat_w: np.ndarray  # (n_categories, dim)
    cat_b: np.ndarray  # (n_categories,)
    resp_w: np.ndarray  # (3, 4 * dim)
    resp_b: np.ndarray  # (3,)
    resp_cat_w: np.ndarray  # (n_categories, 4 * dim)
    resp_cat_b: np.ndarray
    threshold: float  # P(risky) at which the gate opens (chosen on dev)
    manifest: dict[str, Any]
    # With a memory, the raw risk is its kNN vote plus head_weight x the head's probability,
    # and category scores mix the vote's shares (category_mix) with the category heads.
    memory: ExampleMemory | None = None
    head_weight: float = 0.0
    category_mix: float = 0.5
    # the stream critic of backtracking (judge/critic.py); None: the response head is the critic
    critic: StreamCritic | None = None

    # -- prompt risk --------------------------------------------------------------------
    def head_logits(self, vectors: np.ndarray) -> np.ndarray:
        """The linear risk head's logits per embedded row."""
        return vectors @ self.risk_w + self.risk_b

    def risk_raw(self, vectors: np.ndarray) -> np.ndarray:
        """Raw (uncalibrated) risk per embedded row."""
        return self._raw(vectors)[0]

    def _raw(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cats = _sigmoid(vectors @ self.cat_w.T + self.cat_b)
        if self.memory is None:
            return self.head_logits(vectors), cats
        vote, vote_cats = self.memory.vote(vectors)
        raw = vote + self.head_weight * _sigmoid(self.head_logits(vectors))
        return raw, (1.0 - self.category_mix) * cats + self.category_mix * vote_cats

    def risks(self, vectors: np.ndarray, groups: Sequence[int], *,
              whole: Sequence[int] | None = None, passage_margin: float = 0.0) -> list[Risk]:
        """One Risk per query; ``groups`` gives how many consecutive rows (views) each has.

        With ``whole`` (per query, how many of its leading views are whole texts), the later
        views (passages of a long text) count ``passage_margin`` less: one sentence of a long
        benign message must look riskier than a whole request to open the gate."""
        raw, cats = self._raw(vectors)
        prob = self.risk_cal(raw)
        out, start = [], 0
        for i, n in enumerate(groups):
            if n == 0:
                out.append(Risk(0.0, dict.fromkeys(SAFETY_IDS, 0.0)))
                continue
            block = prob[start:start + n].copy()
            if whole is not None:
                block[whole[i]:] -= passage_margin
            out.append(Risk(float(max(block.max(), 0.0)),
                            dict(zip(SAFETY_IDS, cats[start:start + n].max(axis=0).tolist(),
                                     strict=True))))
            start += n
        return out

    # -- response judge -----------------------------------------------------------------
    def unsafe_logits(self, features: np.ndarray) -> np.ndarray:
        """log P(unsafe) / (1 - P(unsafe)) per row of ``response_features``."""
        p = _softmax(features @ self.resp_w.T + self.resp_b)[:, LABELS.index("unsafe")]
        p = np.clip(p, 1e-6, 1.0 - 1e-6)
        return np.log(p / (1.0 - p))

    def verdicts(self, features: np.ndarray) -> list[Verdict]:
        """One Verdict per row of ``response_features``."""
        probs = _softmax(features @ self.resp_w.T + self.resp_b)
        cats = _sigmoid(features @ self.resp_cat_w.T + self.resp_cat_b)
        return [Verdict(LABELS[int(p.argmax())], dict(zip(LABELS, p.tolist(), strict=True)),
                        dict(zip(SAFETY_IDS, c.tolist(), strict=True)))
                for p, c in zip(probs, cats, strict=True)]


def response_logits(heads: LinearHeads, encode: Callable[[list[str]], np.ndarray],
                    prompts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """The response judge's unsafe logit, log P(unsafe) / (1 - P(unsafe)), per (prompt,
    answer) pair; ``encode`` embeds a list of texts (the stream critic stacks these)."""
    tails = [answer_views(a)[1] for a in answers]
    n = len(answers)
    vecs = encode([*prompts, *answers, *tails])
    return heads.unsafe_logits(response_features(vecs[:n], vecs[n:2 * n], vecs[2 * n:]))


def answer_views(answer: str) -> tuple[str, str]:
    """An answer's head (what the encoder reads first) and its last ``TAIL_WORDS`` words."""
    words = answer.split()
    return answer, " ".join(words[-TAIL_WORDS:])


def response_features(prompt_vecs: np.ndarray, head_vecs: np.ndarray,
                      tail_vecs: np.ndarray) -> np.ndarray:
    """Features of (prompt, answer) pairs: the three embeddings and the prompt-answer product."""
    return np.hstack([prompt_vecs, head_vecs, tail_vecs, prompt_vecs * head_vecs])


def save_heads(heads: LinearHeads, path: Path) -> None:
    """Write a judge directory atomically: weights and a manifest."""
    with atomic_directory(Path(path)) as tmp:
        arrays: dict[str, np.ndarray] = {
            "risk_w": heads.risk_w, "risk_b": np.array([heads.risk_b]),
            "risk_cal_x": heads.risk_cal.x, "risk_cal_y": heads.risk_cal.y,
            "cat_w": heads.cat_w, "cat_b": heads.cat_b, "resp_w": heads.resp_w,
            "resp_b": heads.resp_b, "resp_cat_w": heads.resp_cat_w,
            "resp_cat_b": heads.resp_cat_b, "threshold": np.array([heads.threshold]),
            "mix": np.array([heads.head_weight, heads.category_mix])}
        if heads.memory is not None:
            arrays |= _memory_arrays(heads.memory)
        if heads.critic is not None:
            arrays |= heads.critic.arrays()
        np.savez(tmp / WEIGHTS, **arrays)  # type: ignore[arg-type]
        (tmp / MANIFEST).write_text(json.dumps(heads.manifest, indent=2) + "\n", "utf-8")


def load_heads(path: Path, *, encoder_hash: str | None = None) -> LinearHeads:
    """Read a judge directory, refusing one trained on another encoder's embeddings."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text("utf-8"))
        w = np.load(path / WEIGHTS)
    except (OSError, ValueError) as exc:
        raise JudgeError(f"no usable judge at {path} ({exc}); run `guide-align prepare` or "
                         "`guide-align judge train`") from None
    if encoder_hash is not None and manifest.get("encoder_hash") != encoder_hash:
        raise JudgeError(f"{path}: judge was trained on encoder "
                         f"{str(manifest.get('encoder_hash'))[:12]}, but the encoder loaded is "
                         f"{encoder_hash[:12]}; run `guide-align prepare` to retrain it")
    if list(manifest.get("categories", [])) != list(SAFETY_IDS):
        raise JudgeError(f"{path}: judge categories differ from the taxonomy; retrain it")
    return LinearHeads(
        risk_w=w["risk_w"], risk_b=float(w["risk_b"][0]),
        risk_cal=Calibration(w["risk_cal_x"], w["risk_cal_y"]), cat_w=w["cat_w"],
        cat_b=w["cat_b"], resp_w=w["resp_w"], resp_b=w["resp_b"], resp_cat_w=w["resp_cat_w"],
        resp_cat_b=w["resp_cat_b"], threshold=float(w["threshold"][0]), manifest=manifest,
        memory=ExampleMemory(w["mem_vectors"].astype(np.float32), w["mem_risky"],
                             w["mem_categories"].astype(np.float32), int(w["mem_k"][0])).warm()
        if "mem_vectors" in w else None,
        critic=StreamCritic.from_arrays(w, manifest.get("critic", {})),
        **({"head_weight": float(w["mix"][0]), "category_mix": float(w["mix"][1])}
           if "mix" in w else {}))


def _memory_arrays(memory: ExampleMemory) -> dict[str, np.ndarray]:
    return {"mem_vectors": memory.vectors.astype(np.float16), "mem_risky": memory.risky,
            "mem_categories": memory.categories.astype(np.uint8),
            "mem_k": np.array([memory.k])}
