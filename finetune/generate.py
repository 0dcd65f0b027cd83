"""Guided answers: the gateway's guide step per input, then the LLM; a resumable run directory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from finetune.io import CACHE, check_run, open_journal, write_run_manifest
from guide.options import Policy
from guide.step import guide
from guideline_lib.batch import BatchStats, run_batch, run_journaled
from guideline_lib.inputs import InputItem
from guideline_lib.journal import Journal
from guideline_lib.llm import (
    ClientStats,
    LLMClient,
    LLMConfig,
    LLMError,
    LLMUnreachable,
    ResponseCache,
    public_url,
)
from guideline_lib.render import PREAMBLE
from guideline_lib.schema import utc_now
from judge.model import LinearHeads
from retriever.search import DenseRetriever


@dataclass(frozen=True)
class GenerateConfig:
    """How guided answers are made: the gateway's policy, and the client's system text."""

    policy: Policy = field(default_factory=Policy)
    system: str | None = None  # the client's own system message, sent (and exported) as is
    retry_failed: bool = False


@dataclass(frozen=True)
class GenerateRun:
    """What one generate call did: batch counts and LLM client counts."""

    stats: BatchStats
    calls: ClientStats


def fingerprint(config: GenerateConfig, llm: LLMConfig, *, library_hash: str,
                encoder_hash: str = "", judge_hash: str = "") -> str:
    """Short hash of everything that shapes a guided answer; a run directory keeps one."""
    payload = {
        "model": llm.model, "temperature": llm.temperature, "max_tokens": llm.max_tokens,
        "select": asdict(config.policy.select), "window": config.policy.window,
        "guidance": config.policy.enabled, "system": config.system,
        "library": library_hash, "encoder": encoder_hash, "preamble": PREAMBLE,
        **({"judge": judge_hash, "risk_threshold": config.policy.risk_threshold}
           if judge_hash else {}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def client_messages(item: InputItem, *, system: str | None) -> list[dict[str, Any]]:
    """The conversation as the client would send it: optional system message, one user turn."""
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": item.text})
    return messages


def guided_record(item: InputItem, *, retriever: DenseRetriever, config: GenerateConfig,
                  judge: LinearHeads | None = None) -> dict[str, Any]:
    """The first half of ``item``'s record: the conversation, its guidelines and what is sent."""
    messages = client_messages(item, system=config.system)
    guidance = guide(messages, retriever, config.policy, judge=judge)  # the gateway's step
    hits = guidance.hits
    return {
        "input": item.text,
        "source": f"{item.source}:{item.line}",
        "messages": messages,
        "guideline_ids": [h.id for h in hits],
        "guidelines": [{"id": h.id, "category": h.category, "kind": h.kind,
                        "score": round(h.score, 4)} for h in hits],
        "sent": guidance.messages,
    }


async def answer_record(record: dict[str, Any], *, client: LLMClient, started: float,
                        retrieval_s: float) -> dict[str, Any]:
    """The whole record: ``record`` (from ``guided_record``) with the LLM's answer to it."""
    try:
        answer = await client.chat(record["sent"])
    except LLMUnreachable:
        raise  # fatal: nothing is recorded, a rerun does this input again
    except LLMError as exc:
        return {**record, "status": "failed", "error": str(exc), "http_status": exc.status}
    return {
        **record,
        "answer": answer.text,
        "model": answer.model or client.config.model,
        "finish_reason": answer.finish_reason,
        "usage": answer.usage,
        "cached": answer.cached,
        "timings": {"retrieval_s": round(retrieval_s, 4),
                    "llm_s": round(answer.latency_s, 4),
                    "total_s": round(time.monotonic() - started, 4)},
        "finished": utc_now(),
    }


class GuidedAnswerer:
    """Retrieves, injects and asks for one input at a time; safe to share between lanes."""

    def __init__(self, retriever: DenseRetriever, client: LLMClient, config: GenerateConfig,
                 judge: LinearHeads | None = None):
        self.retriever = retriever
        self.judge = judge
        self.client = client
        self.config = config
        # The encoder is CPU-bound: one search at a time, off the event loop.
        self._search_lock = asyncio.Lock()

    async def __call__(self, item: InputItem) -> dict[str, Any]:
        """The journal record for ``item``: what was sent, what came back, and timings."""
        started = time.monotonic()
        async with self._search_lock:
            record = await asyncio.to_thread(guided_record, item, retriever=self.retriever,
                                             config=self.config, judge=self.judge)
        return await answer_record(record, client=self.client, started=started,
                                   retrieval_s=time.monotonic() - started)


async def generate_answers(
    items: Sequence[InputItem],
    *,
    retriever: DenseRetriever,
    client: LLMClient,
    journal: Journal,
    config: GenerateConfig,
    judge: LinearHeads | None = None,
    show_progress: bool = True,
) -> BatchStats:
    """Guided answers for every input not yet in the journal; each lands there as it finishes.

    Safe to kill at any point: the journal keeps finished inputs, and a rerun skips them.
    """
    answerer = GuidedAnswerer(retriever, client, config, judge)
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
    retriever: DenseRetriever,
    llm: LLMConfig,
    journal: Journal,
    config: GenerateConfig,
    cache: ResponseCache | None = None,
    judge: LinearHeads | None = None,
    show_progress: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
) -> GenerateRun:
    """Open a client on ``llm`` (checking the endpoint when work is left) and generate."""
    async with LLMClient(llm, cache=cache, transport=transport) as client:
        if pending(items, journal, retry_failed=config.retry_failed):
            await client.ping()
        stats = await generate_answers(items, retriever=retriever, client=client, judge=judge,
                                       journal=journal, config=config,
                                       show_progress=show_progress)
        return GenerateRun(stats=stats, calls=client.stats)


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
        "select": asdict(config.policy.select),
        "window": config.policy.window,
        "guidance": config.policy.enabled,
        "system": config.system,
        "preamble": PREAMBLE,
        "inputs": list(inputs),
        "read": read,
        "counts": counts or {},
    }


@dataclass(frozen=True)
class GenerateResult:
    """What ``generate_run`` did, its run directory's counts, and anything worth saying."""

    run: GenerateRun
    counts: dict[str, int]
    notes: list[str]


def open_run(run_dir: Path, *, retriever: Any, encoder_info: dict[str, Any], llm: LLMConfig,
             config: GenerateConfig, inputs: Sequence[str], read: dict[str, Any],
             judge: LinearHeads | None) -> tuple[Callable[..., dict[str, Any]], list[str]]:
    """Check ``run_dir`` belongs to this configuration; the run's manifest builder (optional
    ``counts``) and notes for the user. Shared by the local and the Ray engine."""
    lib = retriever.library
    fp = fingerprint(config, llm, library_hash=lib.content_hash(),
                     encoder_hash=str(encoder_info.get("hash", "")),
                     judge_hash=str(judge.manifest.get("data_hash", "")) if judge else "")
    earlier = check_run(run_dir, fp)
    notes = []
    endpoint = (earlier or {}).get("llm", {}).get("endpoint")
    if endpoint and endpoint != public_url(llm.base_url):
        # Not refused (a local server's port may change between sessions), but said out loud.
        notes.append(f"this run was started against {endpoint}; continuing against "
                     f"{public_url(llm.base_url)}. If that is another model, use a new run "
                     "directory.")
    lib_info = {"name": lib.manifest.name, "version": lib.manifest.version,
                "content_hash": lib.content_hash()}

    def manifest(counts: dict[str, int] | None = None) -> dict[str, Any]:
        return run_manifest(fingerprint=fp, library=lib_info, encoder=encoder_info, llm=llm,
                            config=config, inputs=inputs, read=read, counts=counts)
    return manifest, notes


def generate_run(
    items: Sequence[InputItem],
    run_dir: Path,
    *,
    retriever: DenseRetriever,
    encoder_info: dict[str, Any],
    llm: LLMConfig,
    config: GenerateConfig,
    inputs: Sequence[str] = (),
    read: dict[str, Any] | None = None,
    cache: bool = True,
    judge: LinearHeads | None = None,
    show_progress: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
) -> GenerateResult:
    """Guided answers for ``items`` into ``run_dir`` (journal, cache, run.json); resumable.

    Raises ``finetune.io.RunError`` when the directory belongs to another configuration and
    ``guideline_lib.batch.RunStopped`` when the run stopped (rerun to resume).
    """
    manifest, notes = open_run(run_dir, retriever=retriever, encoder_info=encoder_info,
                               llm=llm, config=config, inputs=inputs, read=read or {},
                               judge=judge)
    write_run_manifest(run_dir, manifest())
    journal = open_journal(run_dir)
    response_cache = ResponseCache(run_dir / CACHE) if cache else None
    result = run_journaled(execute_generate(items, retriever=retriever, llm=llm, journal=journal,
                                            config=config, cache=response_cache, judge=judge,
                                            show_progress=show_progress, transport=transport),
                           journal=journal, cache=response_cache)
    n_failed = len(journal.failed_keys())
    counts = {"inputs": len(items), "records": len(journal), "ok": len(journal) - n_failed,
              "failed": n_failed}
    write_run_manifest(run_dir, manifest(counts))
    return GenerateResult(run=result, counts=counts, notes=notes)
