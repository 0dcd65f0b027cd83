"""Prompt risk and answer verdicts through the guide step's own views and encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from guide.options import Policy
from guide.step import PASSAGE_RISK_MARGIN, latest_user_text, plan_views, plan_whole
from judge.model import LinearHeads, Risk, Verdict, answer_views, response_features
from retriever.types import Retriever


def assess_batch(conversations: Sequence[Sequence[dict[str, Any]]], retriever: Retriever,
                 judge: LinearHeads, *, window: int = 3) -> list[Risk]:
    """Prompt risk per conversation, from the same views the guide step embeds."""
    policy = Policy(window=window)
    views = [plan_views(m, policy) for m in conversations]
    return judge.risks(retriever.encode(views), [len(v) for v in views],
                       whole=[plan_whole(m, policy) for m in conversations],
                       passage_margin=PASSAGE_RISK_MARGIN)


def judge_batch(conversations: Sequence[Sequence[dict[str, Any]]], answers: Sequence[str],
                retriever: Retriever, judge: LinearHeads) -> list[Verdict]:
    """The response judge's verdict on each (conversation, answer) pair."""
    prompts = [(latest_user_text(m),) for m in conversations]
    heads, tails = zip(*(answer_views(a) for a in answers), strict=True)
    n = len(answers)
    vecs = retriever.encode([*prompts, *[(h,) for h in heads], *[(t,) for t in tails]])
    return judge.verdicts(response_features(vecs[:n], vecs[n:2 * n], vecs[2 * n:]))
