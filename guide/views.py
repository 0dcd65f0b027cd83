"""Conversation -> the texts the guide step embeds (its query views).

A client must not be able to hide a request from retrieval by where or how it puts it: a role
spelt ``" User"``, a system message, an assistant prefill, benign turns after it, or benign
padding around it. So every message that carries the client's intent is viewed, and a long one
is viewed sentence by sentence; a guideline keeps its best score over the views. The number
of views is capped, so a long input costs a bounded number of encoder rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from retriever.query import TAIL_WORDS, conversation_query, message_text

Messages = list[dict[str, Any]]

KNOWN_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# Roles whose text is the model's or a tool's, not the client's request (an assistant message
# that ends the conversation is a prefill: the client wrote it, so it is viewed).
_NOT_INTENT = ("assistant", "tool", "function")
# A long text (over TAIL_WORDS words) is viewed sentence by sentence, so benign padding around a
# request cannot water it down; a clause over PASSAGE_WORDS words is cut into passages that
# overlap by half. Each view is an encoder row: beyond ``max_views`` adjacent sentences are
# packed together.
PASSAGE_WORDS = 32
MAX_VIEWS = 48
_SENTENCE_END = re.compile(r"(?<=[.!?;:\u3002\uff01\uff1f])\s+|\n+")
# A sentence longer than this is viewed clause by clause: filler joined to a request by a comma
# must not water it down.
CLAUSE_WORDS = 16
_CLAUSE_END = re.compile(r"(?<=[,\u3001\uff0c])\s+")


def normalise_roles(messages: Sequence[dict[str, Any]]) -> Messages:
    """Messages with each recognised role stripped and lower-cased (``" User"`` -> ``"user"``);
    other messages as sent. Unchanged messages are the same objects."""
    out: Messages = []
    for m in messages:
        role = m.get("role") if isinstance(m, dict) else None
        if isinstance(role, str) and role not in KNOWN_ROLES:
            norm = role.strip().lower()
            if norm in KNOWN_ROLES:
                m = {**m, "role": norm}
        out.append(m)
    return out


def intent_texts(messages: Sequence[dict[str, Any]]) -> list[str]:
    """The texts that carry the client's intent, most telling first: user turns newest first,
    an assistant prefill, then system, developer and unrecognised roles. Roles must be
    normalised; empty and repeated texts are dropped."""
    users, prefill, others = [], [], []
    last = len(messages) - 1
    for n, m in enumerate(messages):
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        text = message_text(m.get("content")).strip()
        if not text:
            continue
        if role == "user":
            users.append(text)
        elif role == "assistant" and n == last:
            prefill.append(text)
        elif role not in _NOT_INTENT:
            others.append(text)
    return list(dict.fromkeys([*reversed(users), *prefill, *others]))


def _windows(words: list[str]) -> list[list[str]]:
    size, stride = PASSAGE_WORDS, PASSAGE_WORDS // 2
    if len(words) <= size:
        return [words]
    starts = [*range(0, len(words) - size, stride), len(words) - size]
    return [words[s:s + size] for s in starts]


def _clauses(text: str) -> list[str]:
    """A text's sentences; a long sentence cut further at commas into its clauses."""
    out = []
    for sentence in _SENTENCE_END.split(text):
        if len(sentence.split()) > CLAUSE_WORDS:
            out += _CLAUSE_END.split(sentence)
        else:
            out.append(sentence)
    return out


def units(text: str) -> list[list[str]]:
    """A text's viewing units: the whole of a short text; a long one's sentences and the clauses
    of its long sentences (a very short one joins the one before), a long clause as overlapping
    passages."""
    words = text.split()
    if len(words) <= TAIL_WORDS:
        return [words] if words else []
    out: list[list[str]] = []
    for clause in _clauses(text):
        part = clause.split()
        if out and len(part) < 4 and len(out[-1]) + len(part) <= PASSAGE_WORDS:
            out[-1] = out[-1] + part
        elif part:
            out += _windows(part)
    return out


def passages(text: str, count: int) -> list[str]:
    """``text`` as at most ``count`` views: its units, adjacent ones packed together when there
    are more than ``count``, so nothing is skipped."""
    parts = units(text)
    if count < 1:
        return []
    total = sum(len(u) for u in parts)
    target = PASSAGE_WORDS
    while len(parts) > count:
        target = max(target, math.ceil(total / count))
        packed: list[list[str]] = []
        for u in parts:
            if packed and len(packed[-1]) + len(u) <= target:
                packed[-1] = packed[-1] + u
            else:
                packed.append(u)
        parts = packed if len(packed) <= count else parts
        target += max(1, target // 4)
    return [" ".join(u) for u in parts]


def _shares(needs: Sequence[int], budget: int) -> list[int]:
    """Passages per text: an even share of ``budget`` each, what one does not need going to the
    others, earlier texts first."""
    shares = [0] * len(needs)
    pending = [i for i, n in enumerate(needs) if n > 0]
    while pending and budget > 0:
        each = max(1, budget // len(pending))
        for i in list(pending):
            give = min(each, needs[i] - shares[i], budget)
            shares[i] += give
            budget -= give
            if shares[i] == needs[i]:
                pending.remove(i)
            if budget == 0:
                break
    return shares


def whole_views(messages: Sequence[dict[str, Any]], *, window: int = 3) -> int:
    """How many of ``conversation_views``' leading views are whole texts (the joined turns and
    the latest turn alone) rather than passages of a long text: 0, 1 or 2."""
    msgs = normalise_roles(messages)
    joined = conversation_query(msgs, window=window)
    return len({joined, conversation_query(msgs, window=0)}) if joined else 0


def conversation_views(messages: Sequence[dict[str, Any]], *, window: int = 3,
                       max_views: int = MAX_VIEWS) -> tuple[str, ...]:
    """The views of a conversation, at most ``max_views``: the latest user turn with up to
    ``window`` earlier ones (a request split across turns), the latest turn alone, then every
    intent text (see ``intent_texts``), a long one sentence by sentence. A one-turn chat
    keeps its one view."""
    msgs = normalise_roles(messages)
    views: list[str] = []
    joined = conversation_query(msgs, window=window)
    if joined:
        views += [joined, conversation_query(msgs, window=0)]
    # a short text already viewed whole needs no slot of its own
    texts = [t for t in intent_texts(msgs) if t not in views or len(t.split()) > TAIL_WORDS]
    if not texts:
        return tuple(dict.fromkeys(views))[:max_views]
    budget = max(1, max_views - len(dict.fromkeys(views)))
    if len(texts) > budget:  # more texts than room: the oldest share the last slot
        texts = [*texts[:budget - 1], "\n".join(texts[budget - 1:])]
    shares = _shares([len(units(t)) for t in texts], budget)
    for text, share in zip(texts, shares, strict=True):
        views += passages(text, share)
    return tuple(dict.fromkeys(views))[:max_views]
