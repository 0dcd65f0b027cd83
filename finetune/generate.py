"""Guided answers: retrieve guidelines per input, inject them as the gateway does, ask the LLM."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from guideline_lib.batch import BatchStats, run_batch
from guideline_lib.inputs import InputItem
from guideline_lib.journal import Journal
from guideline_lib.llm import (
    ClientStats,
    LLMClient,
    LLMConfig,
    LLMError,
    LLMUnreachable,
    ResponseCache,
)
from guideline_lib.render import PREAMBLE, inject_system, render_guidelines
from guideline_lib.schema import utc_now
from retriever.query import query_views
from retriever.types import Retriever, SelectConfig


@dataclass(frozen=True)
class GenerateConfig:
    """How guided answers are made: selection as in the gateway, and the client's system text."""

    select: SelectConfig = field(default_factory=SelectConfig)
    window: int = 3
    system: str | None = None  # the client's own system message, sent (and exported) as is
    retry_failed: bool = False


@dataclass(frozen=True)
class GenerateRun:
    """What one generate call did: batch counts and LLM client counts."""

    stats: BatchStats
    calls: ClientStats


def fingerprint(config: GenerateConfig, llm: LLMConfig, *, library_hash: str,
                encoder_hash: str = "") -> str:
    """Short hash of everything that shapes a guided answer; a run directory keeps one."""
    payload = {
        "model": llm.model, "temperature": llm.temperature, "max_tokens": llm.max_tokens,
        "select": asdict(config.select), "window": config.window, "system": config.system,
        "library": library_hash, "encoder": encoder_hash, "preamble": PREAMBLE,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def client_messages(item: InputItem, *, system: str | None) -> list[dict[str, Any]]:
    """The conversation as the client would send it: optional system message, one user turn."""
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": item.text})
    return messages


class GuidedAnswerer:
    """Retrieves, injects and asks for one input at a time; safe to share between lanes."""

    def __init__(self, retriever: Retriever, client: LLMClient, config: GenerateConfig):
        self.retriever = retriever
        self.client = client
        self.config = config
        # The encoder is CPU-bound: one search at a time, off the event loop.
        self._search_lock = asyncio.Lock()

    async def __call__(self, item: InputItem) -> dict[str, Any]:
        """The journal record for ``item``: what was sent, what came back, and timings."""
        started = time.monotonic()
        messages = client_messages(item, system=self.config.system)
        # The gateway's query: the same views, the same selection (app.gateway.guide).
        views = query_views(messages, window=self.config.window)
        async with self._search_lock:
            hits = (await asyncio.to_thread(self.retriever.search_views, [views],
                                            config=self.config.select))[0]
        retrieval_s = time.monotonic() - started
        sent = inject_system(messages, render_guidelines(hits))
        record: dict[str, Any] = {
            "input": item.text,
            "source": f"{item.source}:{item.line}",
            "messages": messages,
            "guideline_ids": [h.id for h in hits],
            "guidelines": [{"id": h.id, "category": h.category, "kind": h.kind,
                            "score": round(h.score, 4)} for h in hits],
            "sent": sent,
        }
        try:
            answer = await self.client.chat(sent)
        except LLMUnreachable:
            raise  # fatal: nothing is recorded, a rerun does this input again
        except LLMError as exc:
            return {**record, "status": "failed", "error": str(exc), "http_status": exc.status}
        return {
            **record,
            "answer": answer.text,
            "model": answer.model or self.client.config.model,
            "finish_reason": answer.finish_reason,
            "usage": answer.usage,
            "cached": answer.cached,
            "timings": {"retrieval_s": round(retrieval_s, 4),
                        "llm_s": round(answer.latency_s, 4),
                        "total_s": round(time.monotonic() - started, 4)},
            "finished": utc_now(),
        }


async def generate_answers(
    items: Sequence[InputItem],
    *,
    retriever: Retriever,
    client: LLMClient,
    journal: Journal,
    config: GenerateConfig,
    show_progress: bool = True,
) -> BatchStats:
    """Guided answers for every input not yet in the journal; each lands there as it finishes.

    Safe to kill at any point: the journal keeps finished inputs, and a rerun skips them.
    """
    answerer = GuidedAnswerer(retriever, client, config)
    return await run_batch(items, answerer, journal=journal, key=lambda i: i.key,
                           concurrency=client.config.concurrency, desc="generate",
                           show_progress=show_progress, retry_failed=config.retry_failed,
                           fatal=(LLMUnreachable,))


def pending(items: Sequence[InputItem], journal: Journal, *, retry_failed: bool) -> int:
    """How many inputs still need an LLM call."""
    done = journal.done_keys() - (journal.failed_keys() if retry_failed else set())
    return sum(i.key not in done for i in items)


async def execute_generate(
    items: Sequence[InputItem],
    *,
    retriever: Retriever,
    llm: LLMConfig,
    journal: Journal,
    config: GenerateConfig,
    cache: ResponseCache | None = None,
    show_progress: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
) -> GenerateRun:
    """Open a client on ``llm`` (checking the endpoint when work is left) and generate."""
    async with LLMClient(llm, cache=cache, transport=transport) as client:
        if pending(items, journal, retry_failed=config.retry_failed):
            await client.ping()
        stats = await generate_answers(items, retriever=retriever, client=client,
                                       journal=journal, config=config,
                                       show_progress=show_progress)
        return GenerateRun(stats=stats, calls=client.stats)


def public_url(url: str) -> str:
    """The endpoint without credentials or query, for manifests."""
    parts = urlsplit(url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def run_manifest(
    *, fingerprint: str, library: dict[str, Any], encoder: dict[str, Any], llm: LLMConfig,
    config: GenerateConfig, inputs: Sequence[str], read: dict[str, Any],
    counts: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The run directory's manifest: what made the answers, from what, and how many."""
    return {
        "tool": "guide-align finetune generate",
        "fingerprint": fingerprint,
        "updated": utc_now(),
        "library": library,
        "encoder": encoder,
        "llm": {"model": llm.model, "endpoint": public_url(llm.base_url),
                "temperature": llm.temperature, "max_tokens": llm.max_tokens},
        "select": asdict(config.select),
        "window": config.window,
        "system": config.system,
        "preamble": PREAMBLE,
        "inputs": list(inputs),
        "read": read,
        "counts": counts or {},
    }
