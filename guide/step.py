"""The one guide step: conversation -> query views -> prompt risk -> search -> gate and select ->
render into messages.

Every caller (the chat route, the search and moderation endpoints, `guide-align retriever
search`, finetune generate) goes through ``guide_batch``; later stages plug in here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from guide.forgery import defang, sign_block
from guide.options import Policy
from guide.views import conversation_views, normalise_roles, whole_views
from guideline_lib.render import inject_system, render_guidelines
from judge.model import LinearHeads, Risk
from retriever.query import conversation_query
from retriever.types import Hit, Retriever

Messages = list[dict[str, Any]]
log = logging.getLogger("guide_align.guide")
# A passage of a long text opens the risk gate only this far above the threshold: measured on
# public benign and harmful prompts (bench/judge_quality.py), 0.15 keeps most of what sentence
# views catch in long harmful messages while long benign ones stop tripping the gate.
PASSAGE_RISK_MARGIN = 0.15


@dataclass(frozen=True)
class Guidance:
    """What the guide step decided for one conversation."""

    hits: list[Hit]
    messages: Messages  # the conversation with the guideline block injected (if any)
    views: tuple[str, ...] = ()  # the texts that were embedded
    ignored: tuple[str, ...] = field(default=())  # request options not applied (looser)
    risk: Risk | None = None  # prompt risk, when a judge is loaded
    gate: str = "off"  # "open" / "closed" when the risk gate decided, "off" otherwise
    details: str = "ids"  # "full": the body field lists each guideline's text too
    forgeries: int = 0  # client text imitating the guideline block, neutralised

    def body_field(self) -> dict[str, Any]:
        """The ``guide_align`` field of a non-streaming answer."""
        full = self.details == "full"
        out: dict[str, Any] = {"guidelines": [
            {"id": h.id, "category": h.category, "kind": h.kind, "score": round(h.score, 4)}
            | ({"text": h.text} if full else {}) for h in self.hits]}
        if self.risk is not None:
            out["risk"] = {"score": round(self.risk.score, 4), "gate": self.gate,
                           "categories": {c: round(s, 4) for c, s in self.risk.top(3)}}
        if self.ignored:
            out["ignored"] = list(self.ignored)
        return out


def as_conversation(query: str | Sequence[dict[str, Any]]) -> Messages:
    """A plain text is a conversation of one user turn."""
    if isinstance(query, str):
        return [{"role": "user", "content": query}]
    return list(query)


def latest_user_text(messages: Sequence[dict[str, Any]]) -> str:
    """The latest non-empty user turn's text ("" when there is none; roles normalised)."""
    return conversation_query(normalise_roles(messages), window=0)


def plan_views(messages: Sequence[dict[str, Any]], policy: Policy) -> tuple[str, ...]:
    """The texts embedded for a conversation under ``policy`` (none when guidance is off)."""
    if not policy.enabled or policy.select.k == 0:
        return ()
    return conversation_views(messages, window=policy.window, max_views=policy.max_views)


def plan_whole(messages: Sequence[dict[str, Any]], policy: Policy) -> int:
    """How many of ``plan_views``' leading views are whole texts (the rest are passages)."""
    return whole_views(messages, window=policy.window) if plan_views(messages, policy) else 0


def client_conversation(messages: Sequence[dict[str, Any]]) -> tuple[Messages, int]:
    """The client's messages as they are forwarded, before the block is injected: recognised
    roles normalised, text imitating the guideline block defanged (and how many times)."""
    return defang(normalise_roles(messages))


def gate(hits: Sequence[Hit], risk: Risk | None, policy: Policy) -> tuple[list[Hit], str]:
    """The risk gate: below the threshold no safety guideline is kept; at or above it, safety
    candidates gain ``category_weight`` x the probability of their category, then re-rank."""
    if risk is None or policy.risk_threshold is None:
        return list(hits), "off"
    if risk.score < policy.risk_threshold:
        return [h for h in hits if h.kind != "safety"], "closed"
    boosted = [dataclasses.replace(h, score=h.score + policy.category_weight
                                   * risk.categories.get(h.category, 0.0))
               if h.kind == "safety" else h for h in hits]
    return sorted(boosted, key=lambda h: -h.score), "open"


def guide_batch(
    conversations: Sequence[Sequence[dict[str, Any]]],
    retriever: Retriever,
    policies: Sequence[Policy],
    *,
    judge: LinearHeads | None = None,
    ignored: Sequence[tuple[str, ...]] | None = None,
    queries: Sequence[Sequence[dict[str, Any]] | None] | None = None,
) -> list[Guidance]:
    """Guidance for many conversations, each under its own policy, in one encoder call.

    ``queries`` (one per conversation, None for itself) are the conversations viewed for
    retrieval and prompt risk instead: the refined ones of refinement's retrieve mode."""
    clients = [client_conversation(m) for m in conversations]
    viewed = [client_conversation(q) if q is not None else c
              for c, q in zip(clients, queries or [None] * len(clients), strict=True)]
    views = [plan_views(m, p) for (m, _), p in zip(viewed, policies, strict=True)]
    groups = [len(v) for v in views]
    vectors = retriever.encode(views)
    whole = [whole_views(m, window=p.window) if v else 0
             for (m, _), p, v in zip(viewed, policies, views, strict=True)]
    risks: list[Risk | None] = (
        list(judge.risks(vectors, groups, whole=whole, passage_margin=PASSAGE_RISK_MARGIN))
        if judge is not None else [None] * len(views))
    ranked = retriever.candidates(vectors, groups, [p.select for p in policies])
    notes = ignored if ignored is not None else [()] * len(conversations)
    out = []
    for (messages, forged), v, cands, risk, policy, note in zip(clients, views, ranked, risks,
                                                                policies, notes, strict=True):
        risk = risk if v else None
        gated, decision = gate(cands, risk, policy)
        select = policy.select
        if decision != "off":  # the gate replaces the safety-margin rule
            select = dataclasses.replace(select, safety_margin=None)
        hits = retriever.select(gated, select)
        block = render_guidelines(hits)
        if policy.sign_key is not None:
            block = sign_block(block, messages, policy.sign_key)
        if forged:
            log.warning("neutralised %d imitation(s) of the guideline block in a request",
                        forged)
        out.append(Guidance(hits=hits, messages=inject_system(messages, block), views=v,
                            ignored=tuple(note), risk=risk, gate=decision,
                            details=policy.details, forgeries=forged))
    return out


def guide(conversation: str | Sequence[dict[str, Any]], retriever: Retriever, policy: Policy,
          *, judge: LinearHeads | None = None) -> Guidance:
    """Guidance for one text or conversation."""
    return guide_batch([as_conversation(conversation)], retriever, [policy], judge=judge)[0]
