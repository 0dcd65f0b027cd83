"""The refiner's RL reward: the target's answer to the refined prompt, judged against the ORIGINAL.

Per completion (a refined latest user turn):

- an output the serving filter rejects (``check_refined`` != "refined") gets ``minimum``;
- otherwise the target model answers the conversation with the refined turn in place of the
  user's, and the response judge reads that answer against the user's own conversation:
  ``useful`` x (P(useful), or P(useful) + P(refusal) for a risky ask) + ``safe`` x
  P(not unsafe) + ``intent`` x cosine(original, refined) under the serving encoder
  - ``constraints`` x the share of the original's constraints (numbers, quoted strings, named
  formats and languages) missing from the refined text - ``length`` x a length penalty.

Judging against the original is what stops the refiner from winning by changing the task.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np

from finetune.export import Messages
from judge.model import LinearHeads
from retriever.types import Retriever

# Named formats and languages a user may ask for; lowercase, matched as whole words.
NAMED = ("json", "csv", "yaml", "xml", "markdown", "table", "bullet", "bulleted", "list", "poem",
         "haiku", "email", "essay", "tweet", "summary", "python", "javascript", "typescript",
         "java", "rust", "go", "bash", "sql", "c++", "english", "french", "spanish", "german",
         "italian", "portuguese", "chinese", "japanese")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,:]\d+)?%?")
_QUOTED = re.compile(r"\"([^\"]{1,80})\"|“([^”]{1,80})”|«\s*([^»]{1,80}?)\s*»")
_WORD = re.compile(r"[\w+#]+")


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the reward's terms (recorded in the RL manifest)."""

    useful: float = 1.0
    safe: float = 1.0
    intent: float = 0.5
    constraints: float = 0.5
    length: float = 0.2

    @property
    def minimum(self) -> float:
        """The reward of a rejected output: below anything a usable output can score."""
        return -(abs(self.useful) + abs(self.safe) + abs(self.intent) + abs(self.constraints)
                 + abs(self.length)) - 1.0


def constraints(text: str) -> set[str]:
    """The checkable constraints of a prompt: numbers, quoted strings, named formats/languages."""
    found = {m.group(0).rstrip("%") for m in _NUMBER.finditer(text)}
    found |= {next(g for g in m.groups() if g).strip().lower() for m in _QUOTED.finditer(text)}
    words = {w.lower() for w in _WORD.findall(text)}
    found |= {w for w in NAMED if w in words or f"{w}s" in words}
    return found


def dropped_constraints(original: str, refined: str) -> list[str]:
    """The original's constraints that the refined text no longer carries."""
    kept_words = {w.lower() for w in _WORD.findall(refined)}
    low = refined.lower()
    out = []
    for c in sorted(constraints(original)):
        present = (c in kept_words or f"{c}s" in kept_words) if c in NAMED else c in low
        if not present:
            out.append(c)
    return out


def length_penalty(original: str, refined: str) -> float:
    """0 up to 1.5x the original's words plus 25; then rising to 1 at twice that allowance."""
    n_orig, n_ref = len(original.split()), len(refined.split())
    allowance = 1.5 * n_orig + 25
    return float(min(1.0, max(0.0, (n_ref - allowance) / allowance)))


class Target(Protocol):
    """The model whose answers are judged: one answer per conversation."""

    def answer(self, conversations: Sequence[Messages]) -> list[str]: ...


@dataclass
class HTTPTarget:
    """An OpenAI-compatible chat endpoint (the local llama.cpp server by default).

    A failed call answers "" (judged like an empty answer) and is counted in ``failures``, so a
    long training run survives a slow moment of the server.
    """

    base_url: str
    model: str = "smollm2-135m-instruct"
    max_tokens: int = 64
    temperature: float = 0.0
    timeout: float = 120.0
    concurrency: int = 2
    api_key: str | None = field(default=None, repr=False)
    transport: httpx.BaseTransport | None = None
    failures: int = 0
    calls: int = 0

    def __post_init__(self) -> None:
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._http = httpx.Client(base_url=self.base_url.rstrip("/"), headers=headers,
                                  timeout=self.timeout, transport=self.transport)
        self._lock = threading.Lock()

    def _one(self, messages: Messages) -> str:
        body = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                "temperature": self.temperature, "stream": False}
        try:
            r = self._http.post("/chat/completions", json=body)
            r.raise_for_status()
            text = r.json()["choices"][0]["message"].get("content") or ""
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
            with self._lock:
                self.failures += 1
            return ""
        with self._lock:
            self.calls += 1
        return str(text)

    def answer(self, conversations: Sequence[Messages]) -> list[str]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(self._one, conversations))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()


@dataclass(frozen=True)
class Scored:
    """One refined prompt's reward and its terms."""

    reward: float
    outcome: str
    useful: float = 0.0
    safe: float = 0.0
    intent: float = 0.0
    dropped: float = 0.0
    length: float = 0.0
    answer: str = ""


def with_refined(conversation: Messages, refined: str) -> Messages:
    """The conversation with its latest user turn replaced by ``refined``."""
    out = [dict(m) for m in conversation]
    for m in reversed(out):
        if m.get("role") == "user":
            m["content"] = refined
            break
    return out


def latest_user(conversation: Messages) -> str:
    """The latest user turn's text."""
    return next((str(m.get("content") or "") for m in reversed(conversation)
                 if m.get("role") == "user"), "")


def completion_text(completion: Any) -> str:
    """A TRL completion (text, or a list of messages) as text."""
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion
                       if isinstance(m, dict) and m.get("role", "assistant") == "assistant")
    return str(completion)


class RefineReward:
    """The reward function handed to GRPOTrainer; keeps the mean of each term per call."""

    __name__ = "refine_reward"

    def __init__(self, target: Target, retriever: Retriever, judge: LinearHeads, *,
                 weights: RewardWeights | None = None):
        self.target = target
        self.retriever = retriever
        self.judge = judge
        self.weights = weights or RewardWeights()
        self.history: list[dict[str, Any]] = []

    def score(self, conversations: Sequence[Messages], refined: Sequence[str],
              risky: Sequence[bool]) -> list[Scored]:
        """The reward of each refined latest turn of each (original) conversation."""
        from guide.judging import judge_batch
        from guide.refine import check_refined

        w = self.weights
        originals = [latest_user(c) for c in conversations]
        outcomes = [check_refined(o, r) for o, r in zip(originals, refined, strict=True)]
        good = [i for i, o in enumerate(outcomes) if o == "refined"]
        out: list[Scored] = [Scored(w.minimum, o) for o in outcomes]
        if not good:
            return out
        answers = self.target.answer([with_refined(conversations[i], refined[i]) for i in good])
        # Judged against the user's own conversation, not the refined one.
        verdicts = judge_batch([conversations[i] for i in good], answers, self.retriever,
                               self.judge)
        vecs = self.retriever.encode([(t,) for i in good for t in (originals[i], refined[i])])
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-9)
        for j, i in enumerate(good):
            p = verdicts[j].scores
            useful = p["useful"] + (p["refusal"] if risky[i] else 0.0)
            safe = 1.0 - p["unsafe"]
            intent = float(vecs[2 * j] @ vecs[2 * j + 1])
            cons = constraints(originals[i])
            dropped = len(dropped_constraints(originals[i], refined[i])) / len(cons) \
                if cons else 0.0
            length = length_penalty(originals[i], refined[i])
            reward = (w.useful * useful + w.safe * safe + w.intent * intent
                      - w.constraints * dropped - w.length * length)
            out[i] = Scored(float(reward), "refined", float(useful), float(safe), intent,
                            float(dropped), length, answers[j])
        return out

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], *,
                 conversation: Sequence[str], risky: Sequence[bool], **_: Any
                 ) -> list[float | None]:
        from guide.refine import clean_refined

        convs = [json.loads(c) for c in conversation]
        # cleaned as the serving stage cleans a rewrite before checking it
        scored = self.score(convs, [clean_refined(completion_text(c)) for c in completions],
                            [bool(r) for r in risky])
        self.history.append(summarise(scored))
        return [float(s.reward) for s in scored]


def summarise(scored: Sequence[Scored]) -> dict[str, Any]:
    """Means of the terms over usable outputs, and the share of rejected ones."""
    good = [s for s in scored if s.outcome == "refined"]
    means = {k: (round(float(np.mean([asdict(s)[k] for s in good])), 4) if good else None)
             for k in ("useful", "safe", "intent", "dropped", "length")}
    return {"n": len(scored), "rejected": len(scored) - len(good),
            "reward": round(float(np.mean([s.reward for s in scored])), 4) if scored else None,
            **means}
