"""Application factory: long-lived objects are built in the lifespan and kept on app.state."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from opentelemetry.sdk.trace.export import SpanExporter

from app.admin import router as admin_router
from app.config import Settings
from app.console import router as console_router
from app.errors import install_handlers
from app.guard import Guard
from app.limits import GatewayGuard, close_limits, open_limits
from app.metrics import MULTIPROC_ENV, Metrics, upstream_transport
from app.observability import ObservabilityMiddleware
from app.observability import router as metrics_router
from app.refiner import Refiner
from app.reload import PinGeneration, install, open_generation, shutdown, watching
from app.reload import router as reload_router
from app.routes import router
from app.scrub import install_scrub_filter, redact_url, settings_secrets
from app.server import RequestDeadline
from app.tracing import build_provider, tracer_of
from app.upstream import Upstream, build_client
from judge.model import LinearHeads
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
    span_exporter: SpanExporter | None = None,
) -> FastAPI:
    """Build the gateway over prepared artifacts (`guide-align prepare` makes them).

    ``retriever``, ``judge``, ``transport`` and ``span_exporter`` (tracing on, spans to it)
    are seams for tests and embedding; a given retriever runs without a judge unless one is
    given too. The judge is also the critic of stream backtracking; without one, backtracking
    reports itself unavailable.
    """
    settings = settings or get_settings()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from local paths only
    install_scrub_filter(settings_secrets(settings))  # no credential in any log line

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        open_limits(app, settings)  # keys, rate limits; refuses an open public host first
        # docs/operations.md; several workers sum their metrics through this directory
        metrics = app.state.metrics = Metrics(os.environ.get(MULTIPROC_ENV) or None)
        generation = await open_generation(settings, retriever=retriever, judge=judge)
        tracing = build_provider(settings, span_exporter)  # None unless OTLP_ENDPOINT is set
        app.state.tracer = tracer_of(tracing)
        async with build_client(settings, upstream_transport(settings, metrics, transport)) \
                as client:
            app.state.settings = settings
            app.state.upstream = Upstream(client, settings)
            app.state.refiner = Refiner.from_settings(settings)  # None: unavailable
            app.state.guard = Guard.from_settings(settings)  # None: the critic alone decides
            install(app, generation)  # app/reload.py swaps it on a reload
            log.info("guide-align ready: %d guidelines, risk gate %s, upstream %s",
                     generation.retriever.size, "off" if generation.policy.risk_threshold is None
                     else f"at {generation.policy.risk_threshold:.3f}",
                     redact_url(settings.upstream_base_url))
            try:
                async with watching(app, settings):
                    yield
            finally:
                await shutdown(app)
                if app.state.refiner is not None:
                    await app.state.refiner.aclose()
                if app.state.guard is not None:
                    await app.state.guard.aclose()
                close_limits(app)
                if tracing is not None:
                    tracing.shutdown()  # flushes the spans still batched

    docs = settings.expose_docs  # off: the schema stays in-process only (app.openapi())
    app = FastAPI(title="Guide-Align gateway", version="0.1.0", lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)
    install_handlers(app)
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(reload_router)
    app.include_router(console_router)
    app.include_router(metrics_router)
    app.add_middleware(PinGeneration)
    app.add_middleware(GatewayGuard)  # auth and limits on /v1/* (app/limits.py)
    app.add_middleware(RequestDeadline, seconds=settings.request_timeout)  # docs/faults.md
    if settings.cors_origins:  # outermost: preflights carry no key (docs/api.md)
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_credentials=settings.cors_allow_credentials,
                           allow_methods=["GET", "POST"], allow_headers=["*"],
                           expose_headers=["x-guide-align-guidelines", "x-guide-align-categories",
                                           "x-guide-align-ignored", "x-guide-align-backtrack",
                                           "x-guide-align-refine", "retry-after"], max_age=600)
    app.add_middleware(ObservabilityMiddleware)  # outermost: request id, timing, metrics, logs
    return app
