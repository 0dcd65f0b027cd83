"""The critic for stream backtracking: the response judge, batched across streams, off the loop.

Every open stream asks for a verdict every few words; asked one by one, n streams would run n
encoder calls. Requests that arrive while a batch runs are judged together in the next one, in
a worker thread (``guide.batching.BatchWorker``), so the event loop keeps relaying.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from guide.batching import BatchWorker
from guide.judging import judge_batch
from judge.model import LinearHeads, Verdict
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
