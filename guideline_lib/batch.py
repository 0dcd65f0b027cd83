"""Running an async worker over many items with bounded concurrency, a journal and progress."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tqdm.auto import tqdm

from guideline_lib.journal import Journal

T = TypeVar("T")


@dataclass
class BatchStats:
    """Counts of one batch run."""

    total: int
    skipped_done: int
    ok: int
    failed: int
    seconds: float


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_batch(
    items: Sequence[T],
    worker: Callable[[T], Awaitable[dict[str, Any]]],
    *,
    journal: Journal,
    key: Callable[[T], str],
    concurrency: int,
    desc: str,
    show_progress: bool = True,
    retry_failed: bool = False,
    fatal: tuple[type[BaseException], ...] = (),
) -> BatchStats:
    """Run ``worker`` on every item not yet in the journal; record each result as it finishes.

    A worker exception becomes ``{"status": "failed", "error": ...}``; a returned dict gets
    ``"status": "ok"`` unless it sets its own status. With ``retry_failed`` items whose last
    record failed run again. An exception of a ``fatal`` type is not recorded: it stops the
    batch and propagates, so a rerun does that item (and the rest) again.
    """
    started = time.monotonic()
    journal.open()
    done = journal.done_keys() - (journal.failed_keys() if retry_failed else set())
    todo: list[T] = []
    queued: set[str] = set()
    for item in items:
        k = key(item)
        if k not in done and k not in queued:
            queued.add(k)
            todo.append(item)
    stats = BatchStats(total=len(items), skipped_done=len(items) - len(todo), ok=0, failed=0,
                       seconds=0.0)
    bar = tqdm(total=len(items), initial=stats.skipped_done, desc=desc, unit="item",
               disable=not show_progress, dynamic_ncols=True)
    pending = iter(todo)

    async def lane() -> None:
        for item in pending:  # the shared iterator hands each item to exactly one lane
            try:
                result = await worker(item)
                record = {**result}
                record.setdefault("status", "ok")
            except fatal:
                raise
            except Exception as exc:
                record = {"status": "failed", "error": _error_text(exc)}
            journal.append(key(item), record)
            if record["status"] == "ok":
                stats.ok += 1
            else:
                stats.failed += 1
            bar.set_postfix(ok=stats.ok, failed=stats.failed, refresh=False)
            bar.update(1)

    try:
        lanes = [asyncio.create_task(lane()) for _ in range(max(1, min(concurrency, len(todo))))]
        try:
            await asyncio.gather(*lanes)
        finally:
            for task in lanes:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
    finally:
        bar.close()
        stats.seconds = time.monotonic() - started
    return stats


class RunStopped(Exception):
    """A journaled run stopped before its end; nothing is lost and the same command resumes."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def run_journaled(main: Coroutine[Any, Any, T], *, journal: Journal, cache: Any = None) -> T:
    """``asyncio.run(main)`` for a resumable job (library build, finetune generate).

    The journal and the response cache are closed whatever happens. An unreachable LLM, a
    journal error or Ctrl-C become RunStopped, whose message says how to resume.
    """
    from guideline_lib.journal import JournalError
    from guideline_lib.llm import LLMUnreachable

    try:
        return asyncio.run(main)
    except (LLMUnreachable, JournalError) as exc:
        raise RunStopped(f"{exc}\nNothing is lost: rerun the same command to resume.", 2) from None
    except KeyboardInterrupt:
        raise RunStopped("interrupted; rerun the same command to resume", 130) from None
    finally:
        journal.close()
        if cache is not None:
            cache.close()
