"""The critic for stream backtracking: the judge's stream critic (judge/critic.py; the response
judge for a judge trained without one), batched across streams, off the loop.

Every open stream asks for a verdict every few words; asked one by one, n streams would run n
encoder calls. Requests that arrive while a batch runs are judged together in the next one, in
a worker thread (``guide.batching.BatchWorker``), so the event loop keeps relaying.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from guide.batching import BatchWorker
from guide.judging import judge_batch
from guide.step import latest_user_text
from judge.model import LABELS, LinearHeads, Verdict, answer_views, response_features
from retriever.types import Retriever

Ask = tuple[Sequence[dict[str, Any]], str]


class BatchingCritic(BatchWorker[Ask, Verdict]):
    """``await critic.judge(messages, answer)`` -> the response judge's Verdict on the answer
    so far, or on its latest ``segment`` words when that is the more unsafe reading."""

    def __init__(self, retriever: Retriever, judge: LinearHeads, *, max_batch: int = 64,
                 segment: int = 16):
        super().__init__(max_batch=max_batch, name="critic")
        self.retriever = retriever
        self.judge_heads = judge
        self.segment = segment
        self.calls = 0  # encoder calls made (for the benchmark and the metrics)
        self.seconds = 0.0

    async def judge(self, messages: Sequence[dict[str, Any]], answer: str) -> Verdict:
        """The verdict on ``answer`` (whole or cut short) to the conversation ``messages``."""
        return await self.submit((messages, answer))

    def _batch_sync(self, payloads: list[Ask]) -> list[Verdict]:
        start = time.perf_counter()
        if self.judge_heads.critic is not None:
            verdicts = self._critic_sync(payloads)
            self.calls += 1
            self.seconds += time.perf_counter() - start
            return verdicts
        # Each answer is judged whole and by its latest ``segment`` words: an unsafe paragraph
        # after a long benign opening is diluted in the whole but plain in the segment.
        convs, answers, owner = [], [], []
        for n, (messages, answer) in enumerate(payloads):
            words = answer.split()
            views = [answer] + ([" ".join(words[-self.segment:])]
                                if self.segment and len(words) > self.segment else [])
            for view in views:
                convs.append(messages)
                answers.append(view)
                owner.append(n)
        verdicts = judge_batch(convs, answers, self.retriever, self.judge_heads)
        best: dict[int, Verdict] = {}
        for n, v in zip(owner, verdicts, strict=True):
            if n not in best or v.scores["unsafe"] > best[n].scores["unsafe"]:
                best[n] = v
        self.calls += 1
        self.seconds += time.perf_counter() - start
        return [best[n] for n in range(len(payloads))]

    def _critic_sync(self, payloads: list[Ask]) -> list[Verdict]:
        """The stream critic's P(unsafe) (the more unsafe of the whole answer and its latest
        ``segment`` words), stacked with the response judge's reading of each as the answer
        to the latest request where the critic was trained so; the categories and the
        refusal/useful split are the response judge's on the whole answer."""
        critic = self.judge_heads.critic
        assert critic is not None
        prompts = [latest_user_text(messages) for messages, _ in payloads]
        # what the critic reads: each answer whole, then its latest words; for the response
        # head each view is the answer to the latest request, with its tail (a latest-words
        # view is short enough to be its own tail)
        views: list[str] = []
        tails: list[str] = []
        owner: list[int] = []
        whole: list[int] = []  # each answer's whole view
        for n, (_, answer) in enumerate(payloads):
            whole.append(len(views))
            views.append(answer)
            tails.append(answer_views(answer)[1])
            owner.append(n)
            words = answer.split()
            if self.segment and len(words) > self.segment:
                views.append(" ".join(words[-self.segment:]))
                tails.append(views[-1])
                owner.append(n)
        unique = list(dict.fromkeys([*views, *tails, *prompts]))
        vecs = self.retriever.encode([(t,) for t in unique])
        at = {t: i for i, t in enumerate(unique)}

        def rows(group: Sequence[str]) -> np.ndarray:
            return vecs[[at[t] for t in group]]

        features = response_features(rows([prompts[n] for n in owner]), rows(views), rows(tails))
        base = self.judge_heads.verdicts(features[whole])
        judged = self.judge_heads.unsafe_logits(features) if critic.reads_response else None
        probs = critic.unsafe(rows(views), views, judged)
        unsafe = [0.0] * len(payloads)
        for n, p in zip(owner, probs.tolist(), strict=True):
            unsafe[n] = max(unsafe[n], p)
        out = []
        for p, verdict in zip(unsafe, base, strict=True):
            rest = {k: verdict.scores[k] for k in ("refusal", "useful")}
            norm = sum(rest.values()) or 1.0
            scores = {"unsafe": p} | {k: (1.0 - p) * v / norm for k, v in rest.items()}
            label = max(LABELS, key=lambda k: scores[k])
            out.append(Verdict(label, scores, verdict.categories))
        return out
