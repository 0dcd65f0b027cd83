"""Optional augmentation: the LLM proposes new inputs from seeds; near-duplicates are dropped."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rouge_score.tokenizers import DefaultTokenizer

from guideline_lib.prompting import ChatClient, ask, load_prompt, render

_ITEM = re.compile(r"^\s*(?:\d{1,3}\s*[.):]|[-*•])\s*(.+?)\s*$")
_PREAMBLE = re.compile(r"^(here (are|is)|sure|certainly|new messages?|example messages?)",
                       re.IGNORECASE)


@dataclass(frozen=True)
class AugmentConfig:
    """How many proposal rounds to run and how novel a proposal must be."""

    rounds: int = 0
    seeds_per_round: int = 3
    per_round: int = 5
    rouge_threshold: float = 0.7
    min_chars: int = 12
    max_chars: int = 600
    seed: int = 0
    attempts: int = 2
    max_tokens: int | None = 320
    template: str | None = None


@dataclass(frozen=True)
class AugmentRound:
    """The seeds one round shows the LLM, and the round's stable key."""

    index: int
    key: str
    seeds: tuple[str, ...]


def plan_rounds(seeds: Sequence[str], *, config: AugmentConfig) -> list[AugmentRound]:
    """Deterministic seed samples per round (same inputs and config -> same rounds)."""
    if not seeds or config.rounds <= 0:
        return []
    rounds = []
    for i in range(config.rounds):
        rng = random.Random(f"{config.seed}:{i}")
        picked = tuple(rng.sample(list(seeds), min(config.seeds_per_round, len(seeds))))
        digest = hashlib.sha1("\n".join((str(i), *picked)).encode("utf-8")).hexdigest()[:16]
        rounds.append(AugmentRound(index=i, key=f"r{i}_{digest}", seeds=picked))
    return rounds


def parse_proposals(text: str, *, config: AugmentConfig) -> list[str] | None:
    """Numbered or bulleted proposals from messy output (plain lines if there is no list)."""
    listed: list[str] = []
    plain: list[str] = []
    for line in text.splitlines():
        match = _ITEM.match(line)
        item = (match.group(1) if match else line).strip().strip('"').strip()
        if not item or _PREAMBLE.match(item) or item.endswith(":"):
            continue
        if config.min_chars <= len(item) <= config.max_chars:
            (listed if match else plain).append(item)
    found = listed or (plain if len(plain) >= 2 else [])
    return found[: config.per_round * 2] or None


async def propose_inputs(
    seeds: Sequence[str], *, client: ChatClient, config: AugmentConfig, salt: int = 0
) -> list[str]:
    """Ask the LLM for new inputs in the style of ``seeds``."""
    listing = "\n".join(f"- {s}" for s in seeds)
    messages = render(config.template or load_prompt("augment"), seeds=listing,
                      n=str(config.per_round))
    answer = await ask(client, messages, lambda t: parse_proposals(t, config=config),
                       attempts=config.attempts, max_tokens=config.max_tokens,
                       retry_temperature=1.0, salt=salt)
    return answer.value


def rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F1 of two token lists (longest common subsequence), as rouge-score computes it."""
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if not lcs:
        return 0.0
    precision, recall = lcs / len(b), lcs / len(a)
    return 2 * precision * recall / (precision + recall)


def novel_inputs(
    existing: Sequence[str], proposals: Sequence[str], *, threshold: float = 0.7
) -> list[str]:
    """Proposals whose ROUGE-L F1 to every existing input and earlier kept one is < threshold."""
    tokenizer = DefaultTokenizer(use_stemmer=False)
    kept_tokens = [tokenizer.tokenize(t) for t in existing]
    kept: list[str] = []
    for text in proposals:
        tokens = tokenizer.tokenize(text)
        if not tokens:
            continue
        vocab = set(tokens)
        similar = False
        for other in kept_tokens:
            # Cheap bound first: the LCS is at most the shorter list and the shared words.
            bound = min(len(tokens), len(other), sum(t in vocab for t in other))
            if 2 * bound / (len(tokens) + len(other)) < threshold:
                continue
            if rouge_l(tokens, other) >= threshold:
                similar = True
                break
        if not similar:
            kept.append(text)
            kept_tokens.append(tokens)
    return kept
