"""The one guide step: conversation -> query views -> search -> select -> render into messages.

Every caller (the chat route, the search endpoint, `guide-align retriever search`, finetune
generate) goes through ``guide_batch``; later stages (risk gate, refinement) plug in here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from guide.options import Policy
from guideline_lib.render import inject_system, render_guidelines
from retriever.query import conversation_query, query_views
from retriever.types import Hit, Retriever

Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class Guidance:
    """What the guide step decided for one conversation."""

    hits: list[Hit]
    messages: Messages  # the conversation with the guideline block injected (if any)
    views: tuple[str, ...] = ()  # the texts that were embedded
    ignored: tuple[str, ...] = field(default=())  # request options not applied (looser)

    def body_field(self) -> dict[str, Any]:
        """The ``guide_align`` field of a non-streaming answer."""
        out: dict[str, Any] = {"guidelines": [
            {"id": h.id, "category": h.category, "kind": h.kind, "score": round(h.score, 4)}
            for h in self.hits]}
        if self.ignored:
            out["ignored"] = list(self.ignored)
        return out


def as_conversation(query: str | Sequence[dict[str, Any]]) -> Messages:
    """A plain text is a conversation of one user turn."""
    if isinstance(query, str):
        return [{"role": "user", "content": query}]
    return list(query)


def latest_user_text(messages: Sequence[dict[str, Any]]) -> str:
    """The latest non-empty user turn's text ("" when there is none)."""
    return conversation_query(messages, window=0)


def plan_views(messages: Sequence[dict[str, Any]], policy: Policy) -> tuple[str, ...]:
    """The texts the retriever embeds for a conversation under ``policy`` (none when off)."""
    if not policy.enabled or policy.select.k == 0:
        return ()
    return query_views(messages, window=policy.window)


def guide_batch(
    conversations: Sequence[Sequence[dict[str, Any]]],
    retriever: Retriever,
    policies: Sequence[Policy],
    *,
    ignored: Sequence[tuple[str, ...]] | None = None,
) -> list[Guidance]:
    """Guidance for many conversations, each under its own policy, in one encoder call."""
    views = [plan_views(m, p) for m, p in zip(conversations, policies, strict=True)]
    hits = retriever.search_batch(views, [p.select for p in policies])
    notes = ignored if ignored is not None else [()] * len(conversations)
    out = []
    for messages, v, h, note in zip(conversations, views, hits, notes, strict=True):
        out.append(Guidance(hits=h, messages=inject_system(list(messages), render_guidelines(h)),
                            views=v, ignored=tuple(note)))
    return out


def guide(conversation: str | Sequence[dict[str, Any]], retriever: Retriever,
          policy: Policy) -> Guidance:
    """Guidance for one text or conversation."""
    return guide_batch([as_conversation(conversation)], retriever, [policy])[0]
