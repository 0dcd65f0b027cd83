"""Application factory: long-lived objects are built in the lifespan and kept on app.state."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache

import anyio.to_thread
import httpx
from fastapi import FastAPI

from app.config import Settings
from app.critic import BatchingCritic
from app.errors import install_handlers
from app.routes import router
from app.upstream import Upstream, build_client
from guide.batching import BatchingGuide
from judge.model import JudgeError, LinearHeads
from retriever.search import DenseRetriever

log = logging.getLogger("guide_align")


@lru_cache
def get_settings() -> Settings:
    """The process settings, read once: ``GUIDE_ALIGN_*`` variables, then the TOML file named
    by ``GUIDE_ALIGN_CONFIG``."""
    return Settings.load(os.environ.get("GUIDE_ALIGN_CONFIG") or None)


def create_app(
    settings: Settings | None = None,
    *,
    retriever: DenseRetriever | None = None,
    judge: LinearHeads | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the gateway over prepared artifacts (`guide-align prepare` makes them).

    ``retriever``, ``judge`` and ``transport`` are seams for tests and embedding; a given
    retriever runs without a judge unless one is given too. The judge is also the critic of
    stream backtracking; without one, backtracking reports itself unavailable.
    """
    settings = settings or get_settings()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from local paths only

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded, heads = retriever, judge
        if loaded is None:
            loaded = await anyio.to_thread.run_sync(settings.open_retriever)
            try:
                heads = await anyio.to_thread.run_sync(settings.open_judge, loaded)
            except JudgeError as exc:  # e.g. `serve --no-train` before any judge was trained
                log.warning("risk gate unavailable, the safety-margin rule decides: %s", exc)
        critic_heads = heads
        if critic_heads is None and retriever is None and settings.backtrack != "off":
            try:
                critic_heads = await anyio.to_thread.run_sync(settings.open_critic, loaded)
            except JudgeError as exc:
                log.warning("stream backtracking unavailable: %s", exc)
        guider = BatchingGuide(loaded, judge=heads, max_batch=settings.max_batch)
        guider.start()
        critic = (BatchingCritic(loaded, critic_heads, max_batch=settings.max_batch)
                  if critic_heads is not None else None)
        async with build_client(settings, transport) as client:
            app.state.settings = settings
            app.state.upstream = Upstream(client, settings)
            app.state.guide = guider
            app.state.critic = critic
            app.state.policy = settings.policy(heads)
            log.info("guide-align ready: %d guidelines, risk gate %s, upstream %s", loaded.size,
                     "off" if app.state.policy.risk_threshold is None else
                     f"at {app.state.policy.risk_threshold:.3f}", settings.upstream_base_url)
            try:
                yield
            finally:
                await guider.stop()
                if critic is not None:
                    await critic.stop()

    app = FastAPI(title="Guide-Align gateway", version="0.1.0", lifespan=lifespan)
    install_handlers(app)
    app.include_router(router)
    return app
