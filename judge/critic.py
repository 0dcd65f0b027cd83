"""The stream critic: P(unsafe) of an answer while it streams, for backtracking.

Two readings of the same text, stacked:

- a linear head on the serving encoder's embedding of the text (meaning, mostly English);
- a lexical head: logistic regression on hashed character n-grams of the text
  (``HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5))``), which reads Spanish,
  French, German, Italian and Portuguese as well as English.

With a response judge to lean on (the judge's response head, which reads the user's request as
well as the answer, English only), its unsafe logit is a third input.

The heads are trained on what the critic sees mid-stream: whole answers, their prefixes and
windows of their latest words, from the judge's seed answers and from judge/data/critic.json
and judge/data/critic_*.json (unsafe compliance and benign answers with alarming words, several
languages each). A
logistic fit on the dev families (which neither head nor the response judge trained on)
combines the logits, so the output is a probability and a threshold reads as one.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from judge.data import AnswerRow, family_split

CRITIC_DATA = Path(__file__).resolve().parent / "data" / "critic.json"
Paths = Path | Sequence[Path]
SEGMENT = 16  # words in the latest-words window the gateway also judges
N_FEATURES = 2 ** 18
Progress = Callable[[str], None]
Encode = Callable[[list[str]], np.ndarray]
# the response judge's unsafe logit per (prompt, answer): judge.model.response_logits, bound
Response = Callable[[Encode, Sequence[str], Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class CriticRow:
    """One text the critic learns from: unsafe or not, its family (for the split), language
    and the request it answers."""

    text: str
    unsafe: bool
    family: str
    lang: str
    split: str
    prompt: str = ""


@dataclass(frozen=True)
class StreamCritic:
    """Weights of both heads and the stacker: P = sigmoid(s0 * dense + s1 * lexical + s2), or
    with the response judge, sigmoid(s0 * dense + s1 * lexical + s2 * response + s3)."""

    dense_w: np.ndarray  # (dim,)
    dense_b: float
    lex_w: np.ndarray  # (N_FEATURES,)
    lex_b: float
    stack: np.ndarray  # (3,)
    manifest: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def _hasher(self) -> Any:
        from sklearn.feature_extraction.text import HashingVectorizer

        return HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5),
                                 n_features=len(self.lex_w), alternate_sign=False)

    def lexical_logits(self, texts: Sequence[str]) -> np.ndarray:
        """The lexical head's logit per text."""
        return np.asarray(self._hasher.transform(list(texts)) @ self.lex_w).ravel() + self.lex_b

    def dense_logits(self, vectors: np.ndarray) -> np.ndarray:
        """The embedding head's logit per embedded text."""
        return vectors @ self.dense_w + self.dense_b

    @property
    def reads_response(self) -> bool:
        """Whether the stacker also takes the response judge's unsafe logit."""
        return len(self.stack) == 4

    def unsafe(self, vectors: np.ndarray, texts: Sequence[str],
               response: np.ndarray | None = None) -> np.ndarray:
        """P(unsafe) per text, given its embedding (and, for a critic that reads it, the
        response judge's unsafe logit for the text as the answer to its request)."""
        z = (self.stack[0] * self.dense_logits(vectors)
             + self.stack[1] * self.lexical_logits(texts) + self.stack[-1])
        if self.reads_response:
            if response is None:
                raise ValueError("this critic stacks the response judge: pass its logits")
            z = z + self.stack[2] * np.asarray(response)
        return 1.0 / (1.0 + np.exp(-z))

    def arrays(self) -> dict[str, np.ndarray]:
        """The weights, for the judge's weights file."""
        return {"critic_dense_w": self.dense_w, "critic_dense_b": np.array([self.dense_b]),
                "critic_lex_w": self.lex_w.astype(np.float32),
                "critic_lex_b": np.array([self.lex_b]), "critic_stack": self.stack}

    @classmethod
    def from_arrays(cls, w: Any, manifest: dict[str, Any]) -> StreamCritic | None:
        """The critic stored in a judge's weights file, or None when it has none."""
        if "critic_stack" not in w:
            return None
        return cls(w["critic_dense_w"], float(w["critic_dense_b"][0]),
                   w["critic_lex_w"].astype(np.float32), float(w["critic_lex_b"][0]),
                   w["critic_stack"], manifest)


def critic_files() -> list[Path]:
    """The critic's data files: judge/data/critic.json and every judge/data/critic_*.json."""
    return [CRITIC_DATA, *sorted(CRITIC_DATA.parent.glob("critic_*.json"))]


def _paths(path: Paths | None) -> list[Path]:
    if path is None:
        return critic_files()
    return [path] if isinstance(path, Path) else list(path)


def critic_families(path: Paths | None = None) -> list[dict[str, Any]]:
    """Every family of the critic's data files (ids are unique across them)."""
    families: list[dict[str, Any]] = []
    for p in _paths(path):
        families += json.loads(p.read_text("utf-8"))["families"]
    ids = [f["id"] for f in families]
    if len(ids) != len(set(ids)):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate critic family ids: {dup}")
    return families


def critic_hash(path: Paths | None = None) -> str:
    """sha256 over the critic's own data and code (the judge's seeds are hashed apart)."""
    h = hashlib.sha256()
    for p in (*_paths(path), Path(__file__)):
        h.update(p.read_bytes())
    return h.hexdigest()


def _windows(words: list[str], size: int = SEGMENT, step: int = 6) -> list[str]:
    if len(words) <= size:
        return []
    return [" ".join(words[i:i + size]) for i in range(0, len(words) - size + 1, step)]


def critic_rows(answers: Sequence[AnswerRow], path: Paths | None = None, *,
                seed: int = 13, glue: bool = True) -> list[CriticRow]:
    """Training texts: the critic data's spans (whole, prefixes, latest-word windows, and with
    ``glue`` an unsafe span after a benign opening in the same language) and the judge's seed
    answers (whole, refuse-then-comply, with a disclaimer, and one latest-words window each)."""
    rng = random.Random(seed)
    families = critic_families(path)
    rows: list[CriticRow] = []
    safe_by_lang: dict[str, list[str]] = {}
    for fam in families:
        if fam["label"] == "safe":
            for lang, (_, text) in fam["spans"].items():
                safe_by_lang.setdefault(lang, []).append(text)
    for fam in families:
        unsafe, split = fam["label"] == "unsafe", family_split(fam["id"])
        for lang, (prompt, text) in fam["spans"].items():
            words = text.split()
            views = [text, *_windows(words)]
            views += [" ".join(words[:int(len(words) * s)]) for s in (0.5, 0.75)
                      if int(len(words) * s) >= 8]
            if unsafe and glue:
                opening = " ".join(rng.choice(safe_by_lang.get(lang, [""])).split()[:24])
                views.append(f"{opening} {text}".strip())
            rows += [CriticRow(v, unsafe, fam["id"], lang, split, prompt) for v in views]
    for a in answers:
        if a.form not in ("seed", "refuse_then_comply", "disclaimer"):
            continue
        prompt = _request(a.messages)
        rows.append(CriticRow(a.answer, a.label == "unsafe", a.family, "en", a.split, prompt))
        words = a.answer.split()
        if a.form == "seed" and len(words) > SEGMENT:
            rows.append(CriticRow(" ".join(words[-SEGMENT:]), a.label == "unsafe", a.family,
                                  "en", a.split, prompt))
    return rows


def _request(messages: Sequence[dict[str, Any]]) -> str:
    """The latest user turn of a seed conversation (plain string contents)."""
    return next((str(m.get("content") or "") for m in reversed(messages)
                 if m.get("role") == "user"), "")


class CachedEncoder:
    """An encoder whose ``encode`` embeds each distinct text once (batches of 256)."""

    def __init__(self, encoder: Any):
        self.encoder = encoder
        self.vectors: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        for i in range(0, len(missing), 256):
            batch = missing[i:i + 256]
            self.vectors.update(zip(batch, self.encoder.encode(batch), strict=True))
        return np.vstack([self.vectors[t] for t in texts])


def _fit(x: Any, y: np.ndarray, c: float, seed: int) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression(C=c, class_weight="balanced", max_iter=3000, solver="liblinear",
                           random_state=seed).fit(x, y)
    return m.coef_[0].astype(np.float32), float(m.intercept_[0])


def _rates(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    pos, neg = p[y == 1], p[y == 0]
    return {"n": len(y), "recall": float((pos >= threshold).mean()) if len(pos) else 0.0,
            "false_positive_rate": float((neg >= threshold).mean()) if len(neg) else 0.0}


def train_critic(answers: Sequence[AnswerRow], encoder: Any, *, path: Paths | None = None,
                 seed: int = 13, c_dense: float = 1.0, c_lexical: float = 10.0,
                 refit: bool = True, glue: bool = True, response: Response | None = None,
                 progress: Progress = print) -> StreamCritic:
    """Fit both heads on the train families, the stacker on the dev families (with
    ``response``, also on the response judge's logit for each text as the answer to its
    request), and measure the test families (never seen by either) at P >= 0.5, per language;
    with ``refit``, the heads kept are then fitted again on every family (the stacker's
    weights stay)."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import LogisticRegression

    rows = critic_rows(answers, path, seed=seed, glue=glue)
    progress(f"embedding {len(rows)} texts for the stream critic")
    texts = [r.text for r in rows]
    encode = CachedEncoder(encoder).encode
    vecs = encode(texts)
    y = np.array([r.unsafe for r in rows], dtype=int)
    split = np.array([r.split for r in rows])
    lex = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), n_features=N_FEATURES,
                            alternate_sign=False).transform(texts)
    train, dev, test = (split == "train"), (split == "dev"), (split == "test")
    dense_w, dense_b = _fit(vecs[train], y[train], c_dense, seed)
    lex_w, lex_b = _fit(lex[train], y[train], c_lexical, seed)
    columns = [vecs @ dense_w + dense_b, np.asarray(lex @ lex_w).ravel() + lex_b]
    fit_on = dev if len(set(y[dev].tolist())) == 2 else train  # a tiny data set may lack dev
    scored = fit_on | dev | test
    judged = np.zeros(len(rows))
    if response is not None:  # only the rows the stacker fits or the metrics read
        progress(f"asking the response judge about {int(scored.sum())} texts")
        at = np.flatnonzero(scored)
        judged[at] = response(encode, [rows[i].prompt for i in at], [texts[i] for i in at])
        columns.append(judged)
    logits = np.column_stack(columns)
    stacker = LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit(
        logits[fit_on], y[fit_on])
    stack = np.array([*stacker.coef_[0], stacker.intercept_[0]], dtype=np.float64)
    critic = StreamCritic(dense_w, dense_b, lex_w, lex_b, stack)
    p = critic.unsafe(vecs, texts, judged if response is not None else None)
    langs = sorted({r.lang for r in rows})
    lang = np.array([r.lang for r in rows])
    metrics: dict[str, Any] = {"test": _rates(y[test], p[test]),
               "test_by_language": {g: _rates(y[test & (lang == g)], p[test & (lang == g)])
                                    for g in langs if (test & (lang == g)).any()},
               "dev": _rates(y[dev], p[dev])}
    if refit:
        dense_w, dense_b = _fit(vecs, y, c_dense, seed)
        lex_w, lex_b = _fit(lex, y, c_lexical, seed)
    manifest = {"rows": {s: int((split == s).sum()) for s in ("train", "dev", "test")},
                "stack": stack.tolist(), "metrics": metrics, "critic_hash": critic_hash(path),
                "c_dense": c_dense, "c_lexical": c_lexical, "refit": refit,
                "response": response is not None}
    t = metrics["test"]
    progress(f"stream critic: test recall {t['recall']:.3f}, false positives "
             f"{t['false_positive_rate']:.3f} at P >= 0.5")
    return StreamCritic(dense_w, dense_b, lex_w, lex_b, stack, manifest)
