"""The guide step for an event loop: concurrent requests share one encoder call, off the loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from guide.options import Applied
from guide.step import Guidance, guide_batch
from judge.model import LinearHeads
from retriever.search import DenseRetriever


@dataclass
class _Item:
    messages: Sequence[dict[str, Any]]
    applied: Applied
    future: asyncio.Future[Guidance]


class BatchingGuide:
    """Coalesces guide requests that arrive together into one ``guide_batch`` call.

    Encoding dominates the cost; under concurrency one batch of n conversations is far cheaper
    than n single calls, and running it in a worker thread keeps the loop free for streaming.
    """

    def __init__(self, retriever: DenseRetriever, *, judge: LinearHeads | None = None,
                 max_batch: int = 64):
        self.retriever = retriever
        self.judge = judge
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: list[_Item] = []  # taken off the queue, being guided

    def start(self) -> None:
        """Start the batching worker on the running loop (again, if it ever ended)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker, failing requests still queued."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        pending = self._in_flight + [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        self._in_flight = []
        for item in pending:
            if not item.future.done():
                item.future.set_exception(RuntimeError("retriever stopped"))

    async def guide(self, messages: Sequence[dict[str, Any]], applied: Applied) -> Guidance:
        """Guidance for one conversation under an applied policy."""
        self.start()
        future: asyncio.Future[Guidance] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(messages, applied, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [item for item in batch if not item.future.done()]
            if not live:
                continue
            self._in_flight = live  # a cancelled worker leaves them here for stop() to fail
            try:
                results = await anyio.to_thread.run_sync(self._guide_sync, live)
            except Exception as exc:  # surface to every waiter, keep the worker alive
                self._in_flight = []
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self._in_flight = []
            for item, guidance in zip(live, results, strict=True):
                if not item.future.done():
                    item.future.set_result(guidance)

    def _guide_sync(self, items: Sequence[_Item]) -> list[Guidance]:
        return guide_batch([i.messages for i in items], self.retriever,
                           [i.applied.policy for i in items], judge=self.judge,
                           ignored=[i.applied.ignored for i in items])
