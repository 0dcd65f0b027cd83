"""Hot reload: load a library version with its index, encoder and judge in the background,
then swap the serving objects atomically.

Everything a request needs from the loaded artifacts is one immutable ``Generation`` on
``app.state.generation``. ``PinGeneration`` pins the current one for the whole of each request
(a stream included), so requests in flight finish on the generation they started on; a
replaced generation stops its batch workers only once its last request is done (or after
``reload_grace`` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth import require_admin
from app.config import Settings
from app.critic import BatchingCritic
from app.errors import NotReady
from guide.batching import BatchingGuide
from guide.options import Policy
from guideline_lib.io import MANIFEST
from guideline_lib.schema import Library
from judge.model import JudgeError, LinearHeads
from retriever.search import DenseRetriever

log = logging.getLogger("guide_align")

HISTORY = 8  # library versions remembered for the console's diff


class _Pins:
    """How many requests hold a generation; ``idle`` is set when none does."""

    def __init__(self) -> None:
        self.count = 0
        self.served = 0  # requests that have held it
        self.idle = asyncio.Event()
        self.idle.set()

    def acquire(self) -> None:
        self.count += 1
        self.served += 1
        self.idle.clear()

    def release(self) -> None:
        self.count -= 1
        if self.count <= 0:
            self.count = 0
            self.idle.set()


@dataclass(frozen=True, eq=False)
class Generation:
    """The serving objects of one loaded library version; replaced whole, never mutated."""

    number: int
    settings: Settings
    guide: BatchingGuide
    critic: BatchingCritic | None
    policy: Policy
    loaded_at: float = field(default_factory=time.time)
    pins: _Pins = field(default_factory=_Pins, compare=False, repr=False)

    @property
    def retriever(self) -> DenseRetriever:
        return self.guide.retriever

    @property
    def library(self) -> Library:
        return self.guide.retriever.library

    def info(self) -> dict[str, Any]:
        """What the console and the reload status show about this generation."""
        m = self.library.manifest
        return {"generation": self.number, "library": m.name, "library_version": m.version,
                "content_hash": m.content_hash, "guidelines": self.retriever.size,
                "risk_gate": self.policy.risk_threshold is not None,
                "backtrack": "unavailable" if self.critic is None and
                self.policy.backtrack != "off" else self.policy.backtrack,
                "loaded_at": self.loaded_at}

    @contextlib.contextmanager
    def pinned(self) -> Iterator[Generation]:
        """Hold this generation for one request."""
        self.pins.acquire()
        try:
            yield self
        finally:
            self.pins.release()

    async def stop(self) -> None:
        """Stop the batch workers (requests still queued fail)."""
        await self.guide.stop()
        if self.critic is not None:
            await self.critic.stop()

    async def retire(self, grace: float) -> None:
        """Stop once no request holds this generation, or after ``grace`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pins.idle.wait(), timeout=grace)
        if self.pins.count:
            log.warning("generation %d stopped with %d requests still on it", self.number,
                        self.pins.count)
        await self.stop()


class PinGeneration:
    """ASGI middleware: each HTTP request pins the current generation from start to last byte
    and finds it as ``request.state.generation``."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gen = getattr(scope["app"].state, "generation", None) if scope["type"] == "http" \
            else None
        if gen is None:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["generation"] = gen
        with gen.pinned():
            await self.app(scope, receive, send)


def current(request: Request) -> Generation:
    """The generation this request pinned (the app's current one outside the middleware)."""
    gen: Generation | None = request.scope.get("state", {}).get("generation") \
        or getattr(request.app.state, "generation", None)
    if gen is None:
        raise NotReady("the retriever is not loaded")
    return gen


def _reusable_judge(previous: Generation | None, settings: Settings,
                    retriever: DenseRetriever) -> LinearHeads | None:
    """The previous generation's judge when the one on disk is the same, for the same encoder
    (loading builds its kNN graph, which takes seconds; a new library does not change it)."""
    heads = previous.guide.judge if previous is not None else None
    if heads is None or previous is None or previous.settings.judge_path != settings.judge_path:
        return None
    try:
        on_disk = json.loads((Path(settings.judge_path) / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    same_encoder = heads.manifest.get("encoder_hash") == retriever.index.manifest.get(
        "encoder_hash")
    return heads if on_disk == heads.manifest and same_encoder else None


def _open_sync(settings: Settings, retriever: DenseRetriever | None, judge: LinearHeads | None,
               strict_judge: bool, previous: Generation | None = None
               ) -> tuple[DenseRetriever, LinearHeads | None, LinearHeads | None]:
    """The retriever, the gate's judge and the critic for ``settings`` (given ones kept: a
    given retriever runs without a judge unless one is given too)."""
    loaded, heads = retriever, judge
    if loaded is None:
        loaded = settings.open_retriever()
        try:
            heads = (_reusable_judge(previous, settings, loaded) if settings.risk_gate
                     else None) or settings.open_judge(loaded)
        except JudgeError as exc:  # e.g. `serve --no-train` before any judge was trained
            if strict_judge:
                raise
            log.warning("risk gate unavailable, the safety-margin rule decides: %s", exc)
    critic_heads = heads
    if critic_heads is None and retriever is None and settings.backtrack != "off":
        try:
            critic_heads = settings.open_critic(loaded)
        except JudgeError as exc:
            if strict_judge:
                raise
            log.warning("stream backtracking unavailable: %s", exc)
    return loaded, heads, critic_heads


async def open_generation(settings: Settings, *, retriever: DenseRetriever | None = None,
                          judge: LinearHeads | None = None, number: int = 1,
                          strict_judge: bool = False, previous: Generation | None = None
                          ) -> Generation:
    """Load a generation off the event loop and start its batch workers (``previous``: the
    served one, whose judge is reused when unchanged)."""
    loaded, heads, critic_heads = await anyio.to_thread.run_sync(
        _open_sync, settings, retriever, judge, strict_judge, previous)
    guider = BatchingGuide(loaded, judge=heads, max_batch=settings.max_batch)
    guider.start()
    critic = (BatchingCritic(loaded, critic_heads, max_batch=settings.max_batch)
              if critic_heads is not None else None)
    return Generation(number=number, settings=settings, guide=guider, critic=critic,
                      policy=settings.policy(heads))


def _prepare_sync(settings: Settings) -> list[str]:
    """(Re)build what is stale for the settings' library (the index, an encoder export; with
    ``reload_train`` also the encoder and the judge); returns what it made."""
    made: list[str] = settings.prepare(train=settings.reload_train, log=log.info).made
    return made


def library_history(app: FastAPI) -> list[dict[str, Any]]:
    """The library versions served since start, oldest first (``_library``: the Library)."""
    if getattr(app.state, "library_history", None) is None:
        app.state.library_history = []
    history: list[dict[str, Any]] = app.state.library_history
    return history


def remember(app: FastAPI, gen: Generation) -> None:
    """Record a served library version (the console lists them and diffs the last two)."""
    history = library_history(app)
    entry = {**gen.info(), "library_path": str(gen.settings.library_path), "_library":
             gen.library}
    if history and history[-1]["content_hash"] == entry["content_hash"]:
        history[-1] = entry
    else:
        history.append(entry)
    del history[:-HISTORY]


def _lock(app: FastAPI) -> asyncio.Lock:
    if getattr(app.state, "reload_lock", None) is None:
        app.state.reload_lock = asyncio.Lock()
    lock: asyncio.Lock = app.state.reload_lock
    return lock


def _publish_metrics(app: FastAPI, gen: Generation) -> None:
    """Tell ``app.metrics`` (when it and ``app.state.metrics`` exist) which library is served."""
    registry = getattr(app.state, "metrics", None)
    if registry is None:
        return
    try:
        metrics = importlib.import_module("app.metrics")
    except ImportError:
        return
    hook = getattr(metrics, "set_library_info", None)
    if hook is not None:
        hook(registry, gen.retriever)


def install(app: FastAPI, gen: Generation) -> None:
    """Make ``gen`` the serving generation (the first one, at start-up)."""
    app.state.generation = gen
    remember(app, gen)
    _publish_metrics(app, gen)


async def reload_artifacts(app: FastAPI, settings: Settings | None = None) -> dict[str, Any]:
    """Load the library, index, encoder and judge that ``settings`` (default: the app's) name,
    rebuilding what is stale, and swap them in; on failure the served generation stays.

    Returns the status: ``ok``, ``error``, the library version and guideline count served
    afterwards, and the seconds taken. Reloads run one at a time.
    """
    async with _lock(app):
        start = time.perf_counter()
        target = settings or app.state.settings
        old: Generation | None = getattr(app.state, "generation", None)
        status: dict[str, Any] = {"ok": False, "error": None, "started_at": time.time(),
                                  "library_path": str(target.library_path)}
        try:
            status["made"] = await anyio.to_thread.run_sync(_prepare_sync, target)
            gen = await open_generation(
                target, number=(old.number + 1) if old is not None else 1,
                strict_judge=old is not None and old.guide.judge is not None, previous=old)
        except Exception as exc:  # any failure to load keeps the served generation
            status["error"] = f"{type(exc).__name__}: {exc}"
            log.warning("reload failed, still serving the previous library: %s",
                        status["error"])
            gen = None
        if gen is not None:
            app.state.generation = gen
            if settings is not None:
                app.state.settings = settings
            remember(app, gen)
            _publish_metrics(app, gen)
            status["ok"] = True
            app.state.reloads = getattr(app.state, "reloads", 0) + 1
            if old is not None:
                retiring = _retiring(app)
                retiring.add(old)
                task = asyncio.get_running_loop().create_task(old.retire(target.reload_grace))
                tasks = _tasks(app)
                tasks.add(task)  # the loop keeps only a weak reference
                task.add_done_callback(tasks.discard)
                task.add_done_callback(lambda _: retiring.discard(old))
        served = gen or old
        status["reloads"] = getattr(app.state, "reloads", 0)
        if served is not None:
            status |= {k: v for k, v in served.info().items() if k != "loaded_at"}
        status["seconds"] = round(time.perf_counter() - start, 3)
        app.state.reload_status = status
        if gen is not None:
            log.info("reloaded: library %s %s, %d guidelines, in %.1fs",
                     status["library"], status["library_version"], status["guidelines"],
                     status["seconds"])
        return status


def _retiring(app: FastAPI) -> set[Generation]:
    """Replaced generations waiting for their last requests (the retire tasks hold them)."""
    if getattr(app.state, "retiring", None) is None:
        app.state.retiring = set()
    gens: set[Generation] = app.state.retiring
    return gens


def _tasks(app: FastAPI) -> set[asyncio.Task[None]]:
    if getattr(app.state, "retire_tasks", None) is None:
        app.state.retire_tasks = set()
    tasks: set[asyncio.Task[None]] = app.state.retire_tasks
    return tasks


async def shutdown(app: FastAPI) -> None:
    """Stop the serving generation and any retiring ones (the app is closing)."""
    for task in list(_tasks(app)):
        task.cancel()
    gens = [*_retiring(app), getattr(app.state, "generation", None)]
    for gen in gens:
        if gen is not None:
            await gen.stop()


def _in_library(library: Path) -> Any:
    """A watchfiles filter for the library directory (watched from its parent: a library save
    replaces the whole directory)."""
    root = os.path.abspath(library)

    def keep(_change: Any, path: str) -> bool:
        path = os.path.abspath(path)
        return path == root or path.startswith(root + os.sep)

    return keep


async def watch_library(app: FastAPI, library: Path, *, debounce: float) -> None:
    """Reload whenever files of the library directory change (changes within ``debounce``
    seconds are one reload)."""
    from watchfiles import awatch

    parent = Path(library).resolve().parent
    async for _ in awatch(parent, watch_filter=_in_library(Path(library).resolve()),
                          debounce=int(debounce * 1000), step=50, recursive=True):
        status = await reload_artifacts(app)
        log.info("library changed on disk: reload %s", "done" if status["ok"] else "failed")


@contextlib.asynccontextmanager
async def watching(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """Run the library watcher for the block when ``watch_library`` is on."""
    if not settings.watch_library:
        yield
        return
    task = asyncio.get_running_loop().create_task(
        watch_library(app, settings.library_path, debounce=settings.watch_debounce))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


router = APIRouter(dependencies=[Depends(require_admin)])


@router.post("/admin/reload")
async def reload_endpoint(request: Request) -> dict[str, Any]:
    """Reload the library and its artifacts now; the status says whether it was swapped."""
    return await reload_artifacts(request.app)


@router.get("/admin/reload")
async def reload_status(request: Request) -> dict[str, Any]:
    """The last reload's status (none yet: the serving generation)."""
    last = getattr(request.app.state, "reload_status", None)
    if last is not None:
        return dict(last)
    gen = current(request)
    return {"ok": True, "error": None, **gen.info()}
