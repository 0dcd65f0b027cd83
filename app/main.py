"""Application factory: long-lived objects are built in the lifespan and kept on app.state."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
import httpx
from fastapi import FastAPI

from app.config import Settings, get_settings
from app.errors import install_handlers
from app.gateway import BatchingSearcher
from app.routes import router
from app.upstream import Upstream, build_client
from retriever.search import DenseRetriever
from retriever.service import RetrieverPaths, open_retriever
from retriever.types import SelectConfig

log = logging.getLogger("guide_align")


def select_defaults(settings: Settings) -> SelectConfig:
    """Selection defaults from settings."""
    return SelectConfig(
        k=settings.k,
        min_score=settings.min_score,
        dedup_threshold=settings.dedup_threshold,
        candidates=settings.candidates,
        safety_margin=settings.safety_margin,
    )


def retriever_paths(settings: Settings) -> RetrieverPaths:
    """Where the configured library, encoder, exports and index live."""
    return RetrieverPaths(
        library=settings.library_path,
        index=settings.index_path,
        encoder=settings.encoder_path,
        trained_encoder=settings.trained_encoder_path,
    )


def load_retriever(settings: Settings) -> DenseRetriever:
    """Open the configured library, encoder backend and index (building what is allowed)."""
    return open_retriever(
        retriever_paths(settings), config=select_defaults(settings), window=settings.window,
        build_missing=settings.build_missing_index, backend=settings.encoder_backend,
    )


def create_app(
    settings: Settings | None = None,
    *,
    retriever: DenseRetriever | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the gateway. ``retriever`` and ``transport`` are seams for tests and embedding."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if retriever is not None:
            loaded = retriever
        else:
            loaded = await anyio.to_thread.run_sync(load_retriever, settings)
        searcher = BatchingSearcher(loaded, max_batch=settings.max_batch)
        searcher.start()
        async with build_client(settings, transport) as client:
            app.state.settings = settings
            app.state.upstream = Upstream(client, settings)
            app.state.searcher = searcher
            app.state.select = select_defaults(settings)
            log.info("guide-align ready: %d guidelines, upstream %s",
                     loaded.size, settings.upstream_base_url)
            try:
                yield
            finally:
                await searcher.stop()

    app = FastAPI(title="Guide-Align gateway", version="0.1.0", lifespan=lifespan)
    install_handlers(app)
    app.include_router(router)
    return app
