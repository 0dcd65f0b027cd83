"""Gateway logic: retrieval for a request, guideline injection, and concurrent-query batching."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio.to_thread

from app.protocol import GuideAlignOptions
from guideline_lib.render import inject_system, render_guidelines
from retriever.query import query_views
from retriever.search import DenseRetriever
from retriever.types import Hit, SelectConfig


def header_token(text: str) -> str:
    """``text`` safe for a comma-separated header value: anything but [A-Za-z0-9_.-] is
    percent-encoded (a hand-edited library may hold non-Latin-1 category names)."""
    return quote(text, safe="_.-")


@dataclass(frozen=True)
class Guidance:
    """What retrieval decided for one request."""

    hits: list[Hit]
    messages: list[dict[str, Any]]

    def headers(self) -> dict[str, str]:
        """Response headers naming the guidelines used."""
        cats = list(dict.fromkeys(h.category for h in self.hits))
        return {
            "x-guide-align-guidelines": ",".join(header_token(h.id) for h in self.hits),
            "x-guide-align-categories": ",".join(header_token(c) for c in cats),
        }

    def body_field(self) -> dict[str, Any]:
        """The ``guide_align`` field added to non-streaming answers."""
        return {
            "guidelines": [
                {"id": h.id, "category": h.category, "kind": h.kind, "score": round(h.score, 4)}
                for h in self.hits
            ]
        }


# A queued search: the query's views, its selection, and the future that gets the hits.
Item = tuple[tuple[str, ...], SelectConfig, "asyncio.Future[list[Hit]]"]


class BatchingSearcher:
    """Coalesces queries that arrive together into one encoder call off the event loop.

    Encoding dominates retrieval cost; under concurrency one batch of n texts is far cheaper
    than n single calls, and running it in a worker thread keeps the loop free for streaming.
    """

    def __init__(self, retriever: DenseRetriever, *, max_batch: int = 64):
        self.retriever = retriever
        self.max_batch = max_batch
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the batching worker on the running loop (again, if it ever ended)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker, failing queries still queued."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            _, _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("retriever stopped"))

    async def search(self, views: str | tuple[str, ...], config: SelectConfig) -> list[Hit]:
        """Selected hits for one query: a text, or its views (retriever.query.query_views)."""
        views = (views,) if isinstance(views, str) else views
        views = tuple(v for v in views if v)
        if not views:
            return []
        self.start()
        fut: asyncio.Future[list[Hit]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((views, config, fut))
        return await fut

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [item for item in batch if not item[2].done()]
            if not live:
                continue
            try:
                results = await anyio.to_thread.run_sync(self._search_sync, live)
            except Exception as exc:  # surface to every waiter, keep the worker alive
                for _, _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, _, fut), hits in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(hits)

    def _search_sync(self, items: Sequence[Item]) -> list[list[Hit]]:
        return self.retriever.search_views([views for views, _, _ in items],
                                           configs=[config for _, config, _ in items])


def select_config(base: SelectConfig, options: GuideAlignOptions) -> SelectConfig:
    """The per-request selection: defaults overridden by the ``guide_align`` field."""
    changes: dict[str, Any] = {}
    if options.k is not None:
        changes["k"] = options.k
    if options.min_score is not None:
        changes["min_score"] = options.min_score
    if options.safety_margin is not None:
        changes["safety_margin"] = options.safety_margin
    return dataclasses.replace(base, **changes) if changes else base


async def guide(
    searcher: BatchingSearcher,
    messages: list[dict[str, Any]],
    *,
    options: GuideAlignOptions,
    base: SelectConfig,
    window: int,
) -> Guidance:
    """Retrieve guidelines for a conversation and inject them as a system message."""
    if not options.enabled:
        return Guidance(hits=[], messages=messages)
    config = select_config(base, options)
    if config.k == 0:
        return Guidance(hits=[], messages=messages)
    hits = await searcher.search(query_views(messages, window=window), config)
    return Guidance(hits=hits, messages=inject_system(messages, render_guidelines(hits)))
