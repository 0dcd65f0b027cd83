"""Quiet output for `up`, `serve` and `prepare`: one line per stage, third-party chatter off."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

# Libraries whose warnings and INFO logs mean nothing to someone starting the gateway.
THIRD_PARTY = ("transformers", "sentence_transformers", "torch", "huggingface_hub", "datasets",
               "onnxruntime", "onnx", "optimum", "faiss", "accelerate", "tokenizers", "filelock",
               "urllib3", "httpx", "httpcore", "sklearn", "numpy")


def quiet_third_party() -> None:
    """Filter third-party warnings and log records below ERROR, and their own progress bars."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=rf"{name}(\.|$)")
    # Warnings that name the caller (stacklevel > 1) rather than the library itself.
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    try:  # transformers' "Loading weights" bars go through its own switch
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)
    except ImportError:
        pass


class Stages:
    """One line per stage: while a stage runs, a spinner (or a bar, given steps) with its
    elapsed time; when the next one starts, a tick with the time it took."""

    def __init__(self, console: Console):
        self.console = console
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                  TaskProgressColumn(), TimeElapsedColumn(), console=console,
                                  transient=True)
        self._task: TaskID | None = None
        self._message = ""
        self._started = 0.0

    def __enter__(self) -> Stages:
        self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._end(failed=kind is not None)
        self._progress.stop()

    def log(self, message: str) -> None:
        """Start the stage ``message`` (the previous one is done)."""
        self._end()
        self._message, self._started = message, time.monotonic()
        self._task = self._progress.add_task(escape(message), total=None)

    def step(self, done: int, total: int) -> None:
        """Progress within the current stage."""
        if self._task is not None:
            self._progress.update(self._task, completed=done, total=total)

    def _end(self, *, failed: bool = False) -> None:
        if self._task is None:
            return
        self._progress.remove_task(self._task)
        self._task = None
        mark = "[red]✗[/red]" if failed else "[green]✓[/green]"
        self.console.print(f"{mark} {escape(self._message)} "
                           f"[dim]({time.monotonic() - self._started:.0f}s)[/dim]",
                           highlight=False)


def first_request(host: str, port: int, *, model: str = "smollm2-135m-instruct") -> str:
    """The closing lines: where the gateway listens and a ready-to-paste first request."""
    where = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{where}:{port}"
    return (
        f"Gateway ready on {base} (Ctrl-C stops it). Send the first request:\n"
        f"  curl -s {base}/v1/chat/completions -H 'content-type: application/json' "
        f"-d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": "
        f"\"How do I kill a stuck Python process?\"}}], \"max_tokens\": 64}}'"
    )


def announce_when_listening(app: Any, host: str, port: int, text: str, console: Console, *,
                            timeout: float = 30.0) -> Any:
    """Print ``text`` once the server of ``app`` accepts connections on ``host:port`` (after
    the server's own start-up lines, so it is the last one)."""
    inner = app.router.lifespan_context
    where = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host

    async def wait_and_print() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection(where, port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            console.print(text, highlight=False, soft_wrap=True)
            return

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            task = asyncio.get_running_loop().create_task(wait_and_print())
            try:
                yield state
            finally:
                task.cancel()

    app.router.lifespan_context = lifespan
    return app
