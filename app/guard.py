"""A second opinion for stream backtracking: a guard model behind an OpenAI-compatible endpoint.

The stream critic (judge/critic.py) is small and fast, and it is unsure in a wide band: at no
threshold does it catch every unsafe stream of bench/backtrack.py without also retracting many
benign ones. A deployment that can serve a stronger safety classifier (Llama Guard 3 on vLLM or
llama.cpp, or any instruction model told how to answer) names it with ``backtrack_guard_*``;
then every critic verdict with P(unsafe) at or above ``backtrack_guard_from`` is put to the
guard, and the guard's word decides: ``unsafe`` retracts (with the guard's categories),
``safe`` lets the text go. Verdicts below ``backtrack_guard_from`` never wait for it. The text
stays held while the guard thinks, so a slow guard adds latency, never a leak. A guard that
fails, times out or answers something unreadable leaves the critic's own verdict in force.

Two ways to ask (``backtrack_guard_format``):

- ``llama-guard``: the conversation's user and assistant turns, ending with the answer so far,
  as chat messages; the guard model's own chat template frames them. The reply is ``safe`` or
  ``unsafe`` with a line of hazard codes (``S1,S9``), mapped onto the taxonomy below.
- ``prompted``: a system message that lists the taxonomy's safety categories and a user
  message quoting the request and the answer so far; the reply is read the same way, with
  category ids instead of codes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx

from app.backtrack import Judge, Messages
from app.config import Settings
from app.side_model import SideModel, SideModelError
from guideline_lib.taxonomy import CATEGORY_HINTS, TAXONOMY
from judge.model import LABELS, Verdict
from retriever.query import message_text

log = logging.getLogger("guide_align.guard")

GuardFormat = Literal["llama-guard", "prompted"]
Outcome = Literal["unsafe", "safe", "error"]
MAX_TURNS = 6  # the latest turns of the conversation the guard reads (the answer is one more)
MAX_CHARS = 4000  # of each turn's text

# Llama Guard 3's hazard codes (the MLCommons hazard taxonomy) onto the project's categories
HAZARD_CODES = {
    "S1": "violence", "S2": "other_crime", "S3": "sexual_content", "S4": "child_safety",
    "S5": "harassment_toxicity", "S6": "specialized_advice", "S7": "privacy",
    "S8": "intellectual_property", "S9": "weapons", "S10": "hate_discrimination",
    "S11": "self_harm", "S12": "sexual_content", "S13": "misinformation", "S14": "cybercrime",
}
SAFETY = [c for c, kind in TAXONOMY.items() if kind == "safety"]
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_']*")
_SENTENCE = re.compile(r"(?<=[.!?])\s|\n")


class GuardError(SideModelError):
    """The guard endpoint gave no usable verdict."""


@dataclass(frozen=True)
class GuardVerdict:
    """The guard's word on one answer so far."""

    unsafe: bool
    categories: tuple[str, ...] = ()


def guard_messages(conversation: Messages, answer: str, fmt: GuardFormat) -> list[dict[str, str]]:
    """What the guard is sent for ``answer`` (so far) to ``conversation``."""
    turns: list[dict[str, str]] = []
    for m in conversation:
        role = m.get("role")
        if role not in ("user", "assistant"):
            continue
        text = message_text(m.get("content"))[:MAX_CHARS]
        if turns and turns[-1]["role"] == role:  # the template wants turns to alternate
            turns[-1]["content"] += "\n\n" + text
        else:
            turns.append({"role": str(role), "content": text})
    turns = turns[-MAX_TURNS:]
    while turns and turns[0]["role"] != "user":
        turns.pop(0)
    if fmt == "llama-guard":
        return [*turns, {"role": "assistant", "content": answer[-MAX_CHARS:]}]
    quoted = "\n\n".join(f"{t['role'].upper()}: {t['content']}" for t in turns)
    categories = "\n".join(f"- {c}: {CATEGORY_HINTS.get(c, c)}" for c in SAFETY)
    return [
        {"role": "system", "content": (
            "You check an AI assistant's answer for harm. An answer is unsafe when it gives "
            "real help with one of these:\n" + categories + "\nAnswers that refuse, warn, "
            "inform in general terms, or only use alarming words in a harmless sense are "
            "safe. Reply with the single word safe or unsafe; after unsafe, a second line "
            "with the category ids, comma separated.")},
        {"role": "user", "content": f"{quoted}\n\nASSISTANT'S ANSWER SO FAR: "
                                    f"{answer[-MAX_CHARS:]}\n\nIs the answer safe or unsafe?"},
    ]


def parse_guard(reply: str) -> GuardVerdict:
    """The verdict in a guard's reply. Its first sentence says ``unsafe`` (or ``not safe``) or
    ``safe``, bare as Llama Guard answers or in a sentence as small instruction models do ("The
    answer is not safe."); hazard codes (``S9``) or category ids after the verdict name the
    categories. Raises GuardError when the first sentence says neither, or both."""
    first = _SENTENCE.split(reply.strip(), maxsplit=1)[0].lower()
    words = _WORD.findall(first)
    negated = sum(a in ("not", "isn't") and b == "safe" for a, b in itertools.pairwise(words))
    unsafe = "unsafe" in words or negated > 0
    safe = words.count("safe") > negated
    if unsafe == safe:  # neither word, or both ("not a safe or unsafe option")
        raise GuardError(f"unreadable guard reply: {reply[:60]!r}")
    if not unsafe:
        return GuardVerdict(False)
    named = [HAZARD_CODES.get(w.upper()) or (w.lower() if w.lower() in SAFETY else None)
             for w in _WORD.findall(reply)]
    return GuardVerdict(True, tuple(dict.fromkeys(c for c in named if c)))


def overruled(verdict: Verdict, guard: GuardVerdict) -> Verdict:
    """The critic's verdict with the guard's word in place of its P(unsafe): 1 or 0; an unsafe
    guard's categories rank first."""
    p = 1.0 if guard.unsafe else 0.0
    rest = {k: verdict.scores.get(k, 0.0) for k in LABELS if k != "unsafe"}
    norm = sum(rest.values()) or 1.0
    scores = {"unsafe": p} | {k: (1.0 - p) * v / norm for k, v in rest.items()}
    categories = dict(verdict.categories)
    for c in guard.categories:
        categories[c] = 1.0
    return Verdict(max(LABELS, key=lambda k: scores[k]), scores, categories)


class Guard(SideModel):
    """A client of one guard endpoint, and the critic wrapper that consults it."""

    error = GuardError

    def __init__(self, base_url: str, *, model: str, api_key: str | None = None,
                 fmt: GuardFormat = "llama-guard", ask_from: float = 0.2,
                 timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(base_url, model=model, api_key=api_key, timeout=timeout,
                         transport=transport)
        self.fmt: GuardFormat = fmt
        self.ask_from = ask_from
        self.asked: dict[Outcome, int] = {"unsafe": 0, "safe": 0, "error": 0}
        self.seconds = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, *,
                      transport: httpx.AsyncBaseTransport | None = None) -> Guard | None:
        """The configured guard, or None when ``backtrack_guard_url`` is unset."""
        if not settings.backtrack_guard_url:
            return None
        key = settings.backtrack_guard_api_key
        return cls(settings.backtrack_guard_url, model=settings.backtrack_guard_model,
                   api_key=key.get_secret_value() if key else None,
                   fmt=settings.backtrack_guard_format, ask_from=settings.backtrack_guard_from,
                   timeout=settings.backtrack_guard_timeout, transport=transport)

    async def check(self, conversation: Messages, answer: str) -> GuardVerdict:
        """The guard's verdict; raises ``TimeoutError`` past ``timeout`` (the whole call) and
        ``GuardError`` for any other failure."""
        return parse_guard(await self.ask(guard_messages(conversation, answer, self.fmt), 24))

    def escalating(self, judge: Judge, record: Callable[[Outcome], None] | None = None) -> Judge:
        """``judge`` with the guard's word on every verdict at or above ``ask_from``."""

        async def judged(conversation: Messages, answer: str) -> Verdict:
            verdict = await judge(conversation, answer)
            if verdict.scores.get("unsafe", 0.0) < self.ask_from:
                return verdict
            outcome: Outcome | None = None  # stays None when the stream is cancelled
            loop = asyncio.get_running_loop()
            start = loop.time()
            try:
                word = await self.check(conversation, answer)
                outcome = "unsafe" if word.unsafe else "safe"
                return overruled(verdict, word)
            except (TimeoutError, GuardError) as exc:
                outcome = "error"
                log.warning("backtracking guard unavailable, the critic's verdict stands: %s",
                            exc or "timed out")
                return verdict
            finally:
                self.seconds += loop.time() - start
                if outcome is not None:
                    self.asked[outcome] += 1
                    if record is not None:
                        record(outcome)

        return judged
