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
from app.errors import install_handlers
from app.routes import router
from app.upstream import Upstream, build_client
from guide.batching import BatchingGuide
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
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the gateway over prepared artifacts (`guide-align prepare` makes them).

    ``retriever`` and ``transport`` are seams for tests and embedding.
    """
    settings = settings or get_settings()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from local paths only

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = (retriever if retriever is not None
                  else await anyio.to_thread.run_sync(settings.open_retriever))
        guider = BatchingGuide(loaded, max_batch=settings.max_batch)
        guider.start()
        async with build_client(settings, transport) as client:
            app.state.settings = settings
            app.state.upstream = Upstream(client, settings)
            app.state.guide = guider
            app.state.policy = settings.policy()
            log.info("guide-align ready: %d guidelines, upstream %s",
                     loaded.size, settings.upstream_base_url)
            try:
                yield
            finally:
                await guider.stop()

    app = FastAPI(title="Guide-Align gateway", version="0.1.0", lifespan=lifespan)
    install_handlers(app)
    app.include_router(router)
    return app
