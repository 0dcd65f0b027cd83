"""Turning a conversation into the text the retriever embeds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from retriever.types import Query


def message_text(content: Any) -> str:
    """Text of an OpenAI message content: a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def conversation_query(messages: Sequence[dict[str, Any]], *, window: int = 3) -> str:
    """The latest user turn, then up to ``window`` earlier user turns newest first, one per line.

    Earlier turns are kept so that a harmful request split across turns is still seen. The
    latest turn comes first because the encoder reads a bounded number of tokens (64 for the
    trained retriever) and cuts the rest: long earlier turns must not push it out.
    """
    user_turns = [
        text
        for m in messages
        if isinstance(m, dict) and m.get("role") == "user"
        for text in [message_text(m.get("content")).strip()]
        if text
    ]
    if not user_turns:
        return ""
    return "\n".join(reversed(user_turns[-(window + 1) :]))


# The trained encoder reads 64 tokens (about 45 English words) and cuts the rest. A long text
# is also embedded by its last TAIL_WORDS words, where a request after a long preamble (a
# role-play or "ignore your rules" wrapper, pasted context) usually sits.
TAIL_WORDS = 40


def _with_tail(views: list[str], text: str) -> None:
    words = text.split()
    if len(words) > TAIL_WORDS:
        views.append(" ".join(words[-TAIL_WORDS:]))


def query_views(query: Query, *, window: int = 3) -> tuple[str, ...]:
    """The texts embedded for one query; a guideline's score is its best over them.

    A text is one view, plus its tail when it is long. A conversation adds the latest user turn
    alone (and its tail) to the windowed query, so that a harmful request split across turns is
    seen, and long or benign earlier turns can neither truncate nor dilute the latest one.
    Duplicates are dropped.
    """
    views: list[str] = []
    if isinstance(query, str):
        text = query.strip()
        if text:
            views.append(text)
            _with_tail(views, text)
    else:
        joined = conversation_query(query, window=window)
        if joined:
            latest = conversation_query(query, window=0)
            views += [joined, latest]
            _with_tail(views, latest)
    return tuple(dict.fromkeys(views))
