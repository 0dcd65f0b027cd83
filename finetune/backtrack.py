"""Backtracking-aware SFT data: a safe answer with an unsafe span injected mid-way, then the
backtrack marker naming how many words to take back, then the rest of the safe answer
(``...the router. <span> [[backtrack 9]]Change the default...``).

The assistant message carries ``masked``: ``[[start, end]]`` character offsets of the injected
span in its content. Training gives those tokens no loss, so the model learns to emit the
marker after drifting, never the drift itself. The gateway's marker handling
(``guide.backtrack.Marker.apply``) turns such an answer back into the original safe answer.
Unsafe spans come from the unsafe answers of the project's own judge seed families.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from finetune.export import SFTExample
from guide.backtrack import DEFAULT_MARKER, Marker
from judge.data import Family, load_families

MIN_ANSWER_WORDS = 12


@dataclass(frozen=True)
class BacktrackData:
    """How many examples get a span, and the marker the tuned model should emit."""

    share: float = 0.5  # of the examples long enough to take one
    marker: str = DEFAULT_MARKER
    # The gateway can take back only words it still holds: a span longer than its window
    # (backtrack_window, default 16) may have reached the client before the marker arrives.
    max_span_words: int = 16
    seed: int = 13


def unsafe_spans(*, max_words: int = 16, families: Sequence[Family] | None = None
                 ) -> list[str]:
    """The first sentences (up to ``max_words`` words) of every unsafe seed answer (of
    ``families``, default all)."""
    spans = []
    for fam in load_families() if families is None else families:
        for answer in fam.answers:
            if answer.get("label") != "unsafe":
                continue
            sentences = re.split(r"(?<=[.!?])\s+", str(answer["text"]).strip())
            words: list[str] = []
            for sentence in sentences:
                words += sentence.split()
                if len(words) >= 8:
                    break
            if words:
                spans.append(" ".join(words[:max_words]))
    return spans


def inject(answer: str, span: str, marker: Marker, rng: random.Random
           ) -> tuple[str, tuple[int, int]]:
    """``answer`` with ``span`` and its marker put in at a word boundary in its middle half;
    returns the text and the span's character offsets."""
    starts = [m.start() for m in re.finditer(r"\S+", answer)]
    cut = starts[rng.randrange(len(starts) // 4, max(len(starts) // 4 + 1,
                                                       3 * len(starts) // 4))]
    prefix, rest = answer[:cut], answer[cut:]
    # No space after the marker: the rest starts where the taken-back words started, so a
    # stream the gateway cuts while the rest is still to come keeps single spaces.
    text = f"{prefix}{span} {marker.render(len(span.split()))}{rest}"
    return text, (len(prefix), len(prefix) + len(span))


def with_backtracking(examples: Sequence[SFTExample], config: BacktrackData,
                      spans: Sequence[str] | None = None) -> tuple[list[SFTExample], int]:
    """A mixed set: ``share`` of the examples (with answers of at least 12 words) get an
    injected span; returns the examples and how many were changed."""
    marker = Marker(config.marker)
    pool = list(spans) if spans is not None else unsafe_spans(max_words=config.max_span_words)
    if not pool:
        raise ValueError("no unsafe spans to inject")
    rng = random.Random(config.seed)
    out, changed = [], 0
    for example in sorted(examples, key=lambda e: e.key):
        answer = example.messages[-1]
        if answer.get("role") != "assistant" or len(answer["content"].split()) \
                < MIN_ANSWER_WORDS or rng.random() >= config.share:
            out.append(example)
            continue
        text, (start, end) = inject(answer["content"], rng.choice(pool), marker, rng)
        message: dict[str, Any] = {"role": "assistant", "content": text, "masked": [[start, end]]}
        out.append(SFTExample(key=example.key, messages=[*example.messages[:-1], message]))
        changed += 1
    return out, changed
