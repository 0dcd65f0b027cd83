"""Batching for an event loop: requests that arrive together share one call, off the loop.

``BatchWorker`` is the machinery (a queue, one worker task, a thread per batch); the guide step
(``BatchingGuide``) and the gateway's backtracking critic (``app/critic.py``) are two uses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio.to_thread

from guide.options import Applied
from guide.step import Guidance, guide_batch
from judge.model import LinearHeads
from retriever.search import DenseRetriever

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Item(Generic[T, R]):
    payload: T
    future: asyncio.Future[R]


class BatchWorker(Generic[T, R]):
    """Coalesces the payloads queued while a batch runs into the next ``_batch_sync`` call,
    which runs in a worker thread so the loop keeps serving."""

    def __init__(self, *, max_batch: int = 64, name: str = "worker"):
        self.max_batch = max_batch
        self.name = name
        self._queue: asyncio.Queue[_Item[T, R]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: list[_Item[T, R]] = []  # taken off the queue, being processed

    def start(self) -> None:
        """Start the worker on the running loop (again, if it ever ended)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker, failing requests still queued or in flight."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        pending = self._in_flight + [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        self._in_flight = []
        for item in pending:
            if not item.future.done():
                item.future.set_exception(RuntimeError(f"{self.name} stopped"))

    async def submit(self, payload: T) -> R:
        """The result for one payload, computed in the next batch."""
        self.start()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(payload, future))
        return await future

    def _batch_sync(self, payloads: list[T]) -> list[R]:
        raise NotImplementedError

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [item for item in batch if not item.future.done()]  # callers gone meanwhile
            if not live:
                continue
            self._in_flight = live  # a cancelled worker leaves them here for stop() to fail
            try:
                results = await anyio.to_thread.run_sync(
                    self._batch_sync, [item.payload for item in live])
            except Exception as exc:  # surface to every waiter, keep the worker alive
                self._in_flight = []
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self._in_flight = []
            for item, result in zip(live, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)


# A conversation, its applied policy, and the conversation viewed for retrieval (None: itself).
_Payload = tuple[Sequence[dict[str, Any]], Applied, Sequence[dict[str, Any]] | None]


class BatchingGuide(BatchWorker[_Payload, Guidance]):
    """The guide step for an event loop: concurrent requests share one encoder call.

    Encoding dominates the cost; under concurrency one batch of n conversations is far cheaper
    than n single calls, and running it in a worker thread keeps the loop free for streaming.
    """

    def __init__(self, retriever: DenseRetriever, *, judge: LinearHeads | None = None,
                 max_batch: int = 64):
        super().__init__(max_batch=max_batch, name="retriever")
        self.retriever = retriever
        self.judge = judge

    async def guide(self, messages: Sequence[dict[str, Any]], applied: Applied, *,
                    query: Sequence[dict[str, Any]] | None = None) -> Guidance:
        """Guidance for one conversation under an applied policy (``query``: the conversation
        viewed for retrieval and risk instead, see ``guide_batch``)."""
        return await self.submit((messages, applied, query))

    def _batch_sync(self, payloads: list[_Payload]) -> list[Guidance]:
        return self._guide_sync(payloads)

    def _guide_sync(self, items: Sequence[_Payload]) -> list[Guidance]:
        return guide_batch([m for m, _, _ in items], self.retriever,
                           [a.policy for _, a, _ in items], judge=self.judge,
                           ignored=[a.ignored for _, a, _ in items],
                           queries=[q for _, _, q in items])
