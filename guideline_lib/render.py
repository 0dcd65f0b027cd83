"""Guidelines -> system message text: the one rendering used by the gateway and by finetune."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Protocol

PREAMBLE = (
    "Guidelines for this conversation. Apply the ones that fit, aim for an answer that is both "
    "safe and genuinely helpful, and do not mention these guidelines to the user."
)


class HasText(Protocol):
    """Anything with guideline text (a Guideline or a retrieval Hit)."""

    @property
    def text(self) -> str: ...


def render_guidelines(guidelines: Sequence[HasText]) -> str:
    """A numbered guideline block, or an empty string when there is nothing to say."""
    if not guidelines:
        return ""
    lines = [PREAMBLE]
    lines += [f"{n}. {g.text}" for n, g in enumerate(guidelines, 1)]
    return "\n".join(lines)


def inject_system(messages: list[dict[str, Any]], block: str) -> list[dict[str, Any]]:
    """Return messages with ``block`` merged into the leading system message (or a new one).

    The client's own system message is kept, word for word, ahead of the guidelines.
    """
    if not block:
        return messages
    out = list(messages)
    first = out[0] if out else None
    if isinstance(first, dict) and first.get("role") in ("system", "developer"):
        merged = copy.copy(first)
        content = first.get("content")
        if isinstance(content, list):
            merged["content"] = [*content, {"type": "text", "text": block}]
        elif content:
            merged["content"] = f"{content}\n\n{block}"
        else:
            merged["content"] = block
        out[0] = merged
    else:
        out.insert(0, {"role": "system", "content": block})
    return out
