"""The async wrapper: requests caught by a shutdown get an error instead of hanging."""

from __future__ import annotations

import asyncio
import threading

import pytest

from guide.batching import BatchingGuide
from guide.options import Applied
from tests.guiding import TEST_POLICY


def test_stopping_fails_the_requests_being_guided(small_retriever):
    entered, release = threading.Event(), threading.Event()

    class Slow(BatchingGuide):
        def _guide_sync(self, items):  # type: ignore[no-untyped-def]
            entered.set()
            release.wait(1)  # a worker thread cannot be interrupted; stop() waits for it
            return super()._guide_sync(items)

    async def run() -> None:
        guider = Slow(small_retriever)
        task = asyncio.create_task(guider.guide([{"role": "user", "content": "hi"}],
                                                Applied(TEST_POLICY)))
        while not entered.is_set():
            await asyncio.sleep(0.01)
        await guider.stop()
        release.set()
        with pytest.raises(RuntimeError, match="stopped"):
            await asyncio.wait_for(task, 5)

    asyncio.run(run())
