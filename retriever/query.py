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


def query_views(query: Query, *, window: int = 3) -> tuple[str, ...]:
    """The texts embedded for one query; a guideline's score is its best over them.

    A text is one view. A conversation is two: the windowed query (a request split across turns)
    and the latest user turn alone (so that long or benign earlier turns cannot dilute a
    harmful request in the mean-pooled embedding). They are one view when they coincide.
    """
    if isinstance(query, str):
        text = query.strip()
        return (text,) if text else ()
    joined = conversation_query(query, window=window)
    if not joined:
        return ()
    latest = conversation_query(query, window=0)
    return (joined,) if latest == joined else (joined, latest)


def query_text(query: Query, *, window: int = 3) -> str:
    """Normalise a text or message-list query to the text that is embedded."""
    if isinstance(query, str):
        return query.strip()
    return conversation_query(query, window=window)
