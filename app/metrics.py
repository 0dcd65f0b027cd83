"""Prometheus metrics: one set of collectors per app, multi-process safe (docs/operations.md).

With several uvicorn workers the launcher points ``PROMETHEUS_MULTIPROC_DIR`` at an empty
directory before they start; prometheus-client then writes every worker's values there and
``/metrics`` sums them over all workers.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from retriever.search import DenseRetriever

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Request latency buckets (seconds): guide step alone is milliseconds, a chat is seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0)
GUIDE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Model names come from clients: past this many distinct ones, further names count as "other".
MAX_MODELS = 64
MAX_LABEL_CHARS = 100


class Metrics:
    """The gateway's collectors on their own registry (so each app counts for itself)."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        # set (from PROMETHEUS_MULTIPROC_DIR) when workers share the port: /metrics sums the
        # files every worker writes there
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("guide_align_requests", "HTTP requests served",
                                ["method", "route", "status", "model"], registry=r)
        self.request_seconds = Histogram(
            "guide_align_request_duration_seconds",
            "HTTP request latency to the last body byte (streams to their end)",
            ["method", "route", "status", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_seconds = Histogram(
            "guide_align_upstream_request_duration_seconds",
            "Upstream call latency to the end of its body", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_errors = Counter(
            "guide_align_upstream_errors", "Failed upstream calls by kind "
            "(timeout, connect, 5xx, 4xx, transport)", ["endpoint", "kind"], registry=r)
        self.guide_seconds = Histogram("guide_align_guide_duration_seconds",
                                       "Guide step latency (retrieval, risk gate, selection)",
                                       buckets=GUIDE_BUCKETS, registry=r)
        self.injected = Counter("guide_align_guidelines_injected",
                                "Guidelines injected into chat requests",
                                ["category", "kind"], registry=r)
        self.gate = Counter("guide_align_risk_gate_decisions",
                            "Risk-gate decisions (open, closed, off)", ["outcome"], registry=r)
        self.retractions = Counter("guide_align_backtrack_retractions",
                                   "Answer text retracted by backtracking",
                                   ["mode", "source"], registry=r)
        self.guard = Counter("guide_align_backtrack_guard_calls",
                             "Guard model calls of backtracking by outcome (unsafe, safe, error)",
                             ["outcome"], registry=r)
        self.refinements = Counter("guide_align_refinement_events", "Refinement events",
                                   ["outcome"], registry=r)
        self.rate_limited = Counter("guide_align_rate_limited",
                                    "Requests answered 429, by error code", ["code"], registry=r)
        # One series per process; "mostrecent" shows the library most recently loaded by any
        # worker, so a reload shows at once.
        self.library = Gauge("guide_align_library_info",
                             "The loaded guideline library (1 for the current one)",
                             ["name", "version", "hash"], multiprocess_mode="mostrecent",
                             registry=r)
        self.index_size = Gauge("guide_align_index_guidelines",
                                "Guidelines in the loaded index", multiprocess_mode="mostrecent",
                                registry=r)
        self._library_labels: tuple[str, str, str] | None = None
        self._models: set[str] = set()

    def model_label(self, model: object) -> str:
        """A bounded label for a client-given model name."""
        if not isinstance(model, str) or not model:
            return ""
        model = model[:MAX_LABEL_CHARS]
        if model in self._models:
            return model
        if len(self._models) >= MAX_MODELS:
            return "other"
        self._models.add(model)
        return model

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (summed over workers in multi-process
        mode)."""
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def set_library_info(metrics: Metrics, retriever: DenseRetriever) -> None:
    """Publish the loaded library's name, version and index size (at start-up and after each
    reload)."""
    manifest = retriever.index.manifest
    labels = (str(manifest.get("library_name") or retriever.library.manifest.name),
              str(manifest.get("library_version") or retriever.library.manifest.version),
              str(manifest.get("library_hash") or "")[:12])
    if metrics._library_labels not in (None, labels):
        metrics.library.labels(*metrics._library_labels).set(0)
    metrics.library.labels(*labels).set(1)
    metrics._library_labels = labels
    metrics.index_size.set(retriever.size)


def prepare_multiprocess_dir(exported: str | None = None) -> Path:
    """An empty directory for the workers' metric files, for PROMETHEUS_MULTIPROC_DIR.

    The launcher calls it before the workers start and exports the result. An ``exported``
    directory is emptied (files of an earlier run would be summed in); otherwise a fresh
    temporary one is made, private to this server (never the shared var volume: replicas would
    mix their files) and removed at exit.
    """
    if exported:
        directory = Path(exported)
        if directory.is_dir():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        return directory
    directory = Path(tempfile.mkdtemp(prefix="guide-align-metrics-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def _error_kind(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    return "transport"


class MeteredTransport(httpx.AsyncBaseTransport):
    """Wraps the upstream transport: latency to the end of each body, and errors by kind."""

    def __init__(self, inner: httpx.AsyncBaseTransport, metrics: Metrics, base_path: str = ""):
        self.inner = inner
        self.metrics = metrics
        self.base_path = base_path.rstrip("/")

    def _endpoint(self, request: httpx.Request) -> str:
        path = request.url.path
        if self.base_path and path.startswith(self.base_path):
            path = path[len(self.base_path):]
        return path[:MAX_LABEL_CHARS] or "/"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = self._endpoint(request)
        started = time.perf_counter()
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.HTTPError as exc:
            self.metrics.upstream_errors.labels(endpoint, _error_kind(exc)).inc()
            raise
        if response.status_code >= 400:
            kind = "5xx" if response.status_code >= 500 else "4xx"
            self.metrics.upstream_errors.labels(endpoint, kind).inc()
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = _MeteredStream(stream, self.metrics, endpoint, started)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class _MeteredStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, metrics: Metrics, endpoint: str,
                 started: float):
        self.inner, self.metrics, self.endpoint, self.started = inner, metrics, endpoint, started
        self.observed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.inner:
                yield chunk
        except httpx.HTTPError as exc:
            self.metrics.upstream_errors.labels(self.endpoint, _error_kind(exc)).inc()
            raise

    async def aclose(self) -> None:
        if not self.observed:  # closed once the body is read, or when the caller gives up
            self.observed = True
            self.metrics.upstream_seconds.labels(self.endpoint).observe(
                time.perf_counter() - self.started)
        await self.inner.aclose()


def upstream_transport(settings: Any, metrics: Metrics,
                       inner: httpx.AsyncBaseTransport | None = None) -> MeteredTransport:
    """The metered transport for the upstream client; without ``inner``, httpx's own pool with
    the configured connection limits."""
    if inner is None:
        inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections))
    return MeteredTransport(inner, metrics, httpx.URL(settings.upstream_base_url).path)
