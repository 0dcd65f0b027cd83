"""Background training of the quick start: a child `guide-align prepare` at the lowest CPU
priority while the gateway serves the base encoder, then a hot swap to the trained artifacts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from app.config import Settings
from guide.quickstart import read_progress

log = logging.getLogger("guide_align")

Reload = Callable[[FastAPI, Settings], Awaitable[dict[str, Any]]]


def prepare_command(progress_file: Path) -> list[str]:
    """The normal `guide-align prepare`, reporting its progress to ``progress_file``."""
    return [sys.executable, "-m", "cli.main", "prepare", "--progress-file", str(progress_file)]


def _lowest_priority() -> None:
    os.nice(19)  # the gateway and the LLM keep the cores they need


async def _reload(app: FastAPI, settings: Settings) -> dict[str, Any]:
    from app.reload import reload_artifacts

    return await reload_artifacts(app, settings)


class BackgroundTraining:
    """Runs ``command`` (by default the full prepare) in a child process with its output in
    ``log_file``; when it succeeds, swaps the app to ``trained`` with ``reload``."""

    def __init__(self, trained: Settings, *, progress_file: Path, log_file: Path,
                 command: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
                 reload: Reload = _reload):
        self.trained, self.progress_file, self.log_file = trained, progress_file, log_file
        self.command = list(command or prepare_command(progress_file))
        self.env = dict(env) if env is not None else None
        self.reload = reload
        self.state = "starting"  # training | swapping | trained | failed
        self.error: str | None = None
        self.swapped = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None

    def describe(self) -> str:
        """Which artifacts serve, as ``/readyz`` and the log say it."""
        if self.state == "trained":
            return "trained"
        if self.state == "failed":
            return f"base-encoder (background training failed: {self.error}; see {self.log_file})"
        if self.state == "swapping":
            return "base-encoder (training done, switching to the trained artifacts)"
        progress = read_progress(self.progress_file)
        where = "starting" if progress is None else \
            "finishing" if progress.done else progress.describe()
        return f"base-encoder (training in background: {where})"

    async def run(self, app: FastAPI) -> None:
        """Train, then swap; failures are logged and leave the base encoder serving."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.progress_file.unlink(missing_ok=True)
        with open(self.log_file, "ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command, stdout=out, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, env=self.env, start_new_session=True,
                preexec_fn=_lowest_priority)
        self.state = "training"
        log.info("artifacts: base encoder serving; full training started in the background "
                 "(pid %d, log %s)", self._proc.pid, self.log_file)
        code = await self._proc.wait()
        if code != 0:
            self._fail(f"prepare exited with code {code}")
            return
        self.state = "swapping"
        try:
            status = await self.reload(app, self.trained)
        except Exception as exc:  # the served generation stays
            status = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if not status.get("ok"):
            self._fail(f"swap failed: {status.get('error')}")
            return
        self.state = "trained"
        self.swapped.set()
        log.info("artifacts: trained (background training done, gateway switched)")

    def _fail(self, error: str) -> None:
        self.state, self.error = "failed", error
        log.warning("artifacts: still the base encoder; background training failed (%s), "
                    "see %s; `guide-align prepare` retries it", error, self.log_file)

    async def stop(self) -> None:
        """End the child (and its own children) if it still runs."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def with_background_training(app: FastAPI, training: BackgroundTraining, *,
                             on_ready: Callable[[], None] | None = None) -> FastAPI:
    """Start ``training`` once the app has started (and call ``on_ready``); stop it when the
    app stops. ``/readyz`` reports ``training.describe()``."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with inner(a) as state:
            a.state.artifacts = training
            task = asyncio.get_running_loop().create_task(training.run(a))
            if on_ready is not None:
                on_ready()
            try:
                yield state
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await training.stop()

    app.router.lifespan_context = lifespan
    return app


def artifacts_mode(app: FastAPI, settings: Settings) -> str:
    """``trained``, ``base-encoder (...)`` in a quick start, or the encoder the user named."""
    training: BackgroundTraining | None = getattr(app.state, "artifacts", None)
    if training is not None:
        return training.describe()
    if settings.encoder_path is not None:
        return f"encoder {settings.encoder_path}"
    return "trained"
