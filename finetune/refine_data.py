"""The refiner's SFT set: (conversation, refined latest user turn) pairs from project templates.

Pairs come from :mod:`finetune.refine_templates` with a fixed seed, in the shapes real traffic
has: plain, terse, long with context, typos, vague openers, role-play wrappers around risky
asks, added constraints (kept word for word in the refined side), multi-turn follow-ups, and
non-English asks rewritten in the same language. Training conversations are built with the
serving contract (``guide.refine.refiner_messages``), and pairs the serving filter
(``check_refined``) would reject are dropped.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from finetune.export import Messages
from finetune.refine_templates import (
    ASSISTANT_REPLIES,
    CONSTRAINTS,
    FOLLOW_UPS,
    LONG_CONTEXT,
    NEEDS,
    NUMBERS,
    QUOTES,
    ROLE_NAMES,
    ROLE_PLAY,
    VAGUE_OPENERS,
    Need,
)

SHAPES = ("plain", "terse", "long", "typos", "vague", "role_play", "constraint", "multi_turn")
_SLOT = re.compile(r"{(\w+)}")


@dataclass(frozen=True)
class RefinePair:
    """One conversation (ending with a user turn) and the refined text of that turn."""

    conversation: Messages
    refined: str
    category: str
    risky: bool
    shape: str
    language: str

    @property
    def original(self) -> str:
        """The latest user turn as the user wrote it."""
        return str(self.conversation[-1]["content"])


def _fill(need: Need, rng: random.Random) -> tuple[str, str]:
    values = {k: rng.choice(v) for k, v in need.slots.items()}
    ask = rng.choice(need.asks)
    return ask.format(**values), need.refined.format(**values)


def _typos(text: str, rng: random.Random) -> str:
    """Swap two neighbouring letters in about one word in four (never the first letter)."""
    words = text.split(" ")
    for i, w in enumerate(words):
        if len(w) > 3 and w.isalpha() and rng.random() < 0.25:
            j = rng.randrange(1, len(w) - 1)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


def _constraint(rng: random.Random) -> tuple[str, str]:
    ask, refined = rng.choice(CONSTRAINTS)
    values = {"n": rng.choice(NUMBERS), "quote": rng.choice(QUOTES)}
    return ask.format(**values), refined.format(**values)


def make_pair(need: Need, shape: str, rng: random.Random) -> RefinePair:
    """One pair of ``need`` in ``shape`` (shapes that do not fit the need fall back to plain)."""
    ask, refined = _fill(need, rng)
    if need.language != "en" and shape not in ("plain", "terse", "typos"):
        shape = "plain"  # wrappers and added constraints are written in English
    if shape == "role_play" and not need.risky:
        shape = "plain"
    conversation: Messages = []
    if shape == "terse":
        ask = re.sub(r"[?!,]|\.(?!\d)", "", ask).lower()
    elif shape == "long":
        context, kept = rng.choice(LONG_CONTEXT)
        n = rng.choice(("2", "3", "6"))
        ask = f"{context.format(n=n)} {ask[0].upper()}{ask[1:]}?"
        refined = f"{kept.format(n=n)} {refined}"
    elif shape == "typos":
        ask = _typos(ask, rng)
    elif shape == "vague":
        ask = rng.choice(VAGUE_OPENERS) + ask
    elif shape == "role_play":
        ask = rng.choice(ROLE_PLAY).format(name=rng.choice(ROLE_NAMES), ask=ask)
    elif shape == "constraint":
        extra, kept = _constraint(rng)
        ask = f"{ask} {extra}"
        refined = f"{refined} {kept}"
    elif shape == "multi_turn":
        follow, kept = rng.choice(FOLLOW_UPS)
        n = rng.choice(NUMBERS)
        conversation = [{"role": "user", "content": ask},
                        {"role": "assistant", "content": rng.choice(ASSISTANT_REPLIES)}]
        ask = follow.format(n=n)
        refined = f"{refined} {kept.format(n=n)}"
    conversation.append({"role": "user", "content": ask})
    if rng.random() < 0.15 and shape != "multi_turn":
        conversation.insert(0, {"role": "system", "content": "You are a helpful assistant."})
    return RefinePair(conversation=conversation, refined=refined, category=need.category,
                      risky=need.risky, shape=shape, language=need.language)


def build_pairs(n: int = 3000, *, seed: int = 17) -> list[RefinePair]:
    """``n`` distinct pairs (fewer if the templates run out), every need and shape covered."""
    rng = random.Random(seed)
    # every (need, shape) once in a shuffled order, then random draws
    grid = [(need, shape) for need in NEEDS for shape in SHAPES]
    rng.shuffle(grid)
    pairs: list[RefinePair] = []
    seen: set[str] = set()
    attempts = 0
    while len(pairs) < n and attempts < n * 20:
        need, shape = grid[attempts] if attempts < len(grid) else (rng.choice(NEEDS),
                                                                  rng.choice(SHAPES))
        attempts += 1
        pair = make_pair(need, shape, rng)
        key = repr(pair.conversation)
        if key not in seen:
            seen.add(key)
            pairs.append(pair)
    return pairs


def usable(pairs: Sequence[RefinePair]) -> tuple[list[RefinePair], Counter[str]]:
    """Pairs whose refined side passes the serving filter, and the outcomes of those that
    did not (the serving stage would throw such an output away, so the refiner must not
    learn it)."""
    from guide.refine import check_refined

    kept: list[RefinePair] = []
    dropped: Counter[str] = Counter()
    for p in pairs:
        outcome = check_refined(p.original, p.refined)
        if outcome == "refined":
            kept.append(p)
        else:
            dropped[outcome] += 1
    return kept, dropped


def sft_conversation(pair: RefinePair) -> Messages:
    """The refiner's prompt for the pair (the serving contract) with the refined text as the
    assistant turn."""
    from guide.refine import refiner_messages

    return [*refiner_messages(pair.conversation), {"role": "assistant", "content": pair.refined}]


def sft_splits(pairs: Sequence[RefinePair], *, validation: float = 0.05,
               seed: int = 17) -> dict[str, list[Messages]]:
    """Seeded train/validation split of the SFT conversations."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = round(len(order) * validation)
    convs = [sft_conversation(pairs[i]) for i in order]
    return {"train": convs[n_val:], "validation": convs[:n_val]}


def describe(pairs: Sequence[RefinePair]) -> dict[str, Any]:
    """Counts per category, shape, language and risk."""
    return {"pairs": len(pairs),
            "risky": sum(p.risky for p in pairs),
            "categories": dict(Counter(p.category for p in pairs).most_common()),
            "shapes": dict(Counter(p.shape for p in pairs).most_common()),
            "languages": dict(Counter(p.language for p in pairs).most_common())}


def slots_of(template: str) -> set[str]:
    """The slot names of a template."""
    return set(_SLOT.findall(template))
