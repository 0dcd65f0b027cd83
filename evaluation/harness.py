"""Asking the target directly and through each gateway variant: a resumable run directory.

A run directory holds ``run.json`` (what made the answers), ``prompts.jsonl`` (the prompts of
the latest run) and ``answers.jsonl``, a journal with one record per (variant, prompt). Every
answer is fsynced there as it arrives, so a run killed at any point (even ``kill -9``) resumes
with the same command without losing or repeating one; the journal is also the answer cache
that ``--regrade`` grades again without asking the target.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from evaluation.sets import Prompt
from guideline_lib.batch import BatchStats, run_batch
from guideline_lib.io import atomic_write_text
from guideline_lib.journal import Journal
from guideline_lib.llm import LLMClient, LLMConfig, LLMError, LLMUnreachable, public_url
from guideline_lib.schema import utc_now
from guideline_lib.shards import SHARDS, ShardStore, merge_records

RUN_MANIFEST = "run.json"
PROMPTS = "prompts.jsonl"
ANSWERS = "answers.jsonl"
DIRECT = "direct"


class RunMismatch(Exception):
    """The run directory holds answers made with other settings under the same variant name."""


@dataclass(frozen=True)
class Variant:
    """A way to reach the target: directly, or through a gateway with request options."""

    name: str
    base_url: str
    options: dict[str, Any] = field(default_factory=dict)  # sent as the `guide_align` field
    config: str = ""  # the gateway config this variant was started from, if any
    config_hash: str = ""
    api_key: str | None = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        """What the manifest and the report say about this variant (no secrets)."""
        return {"url": public_url(self.base_url), "options": self.options,
                "config": self.config, "config_hash": self.config_hash}


@dataclass(frozen=True)
class Sampling:
    """The same sampling settings for every variant."""

    model: str
    temperature: float = 0.0
    max_tokens: int = 256


@dataclass(frozen=True)
class CallPolicy:
    """How calls are made: bounded concurrency, retries with backoff, timeouts."""

    concurrency: int = 2
    max_retries: int = 3
    backoff: float = 1.0
    timeout: float = 120.0
    retry_failed: bool = False
    show_progress: bool = True


@dataclass
class Collected:
    """What asking did, per variant: batch counts, or why the variant stopped early."""

    stats: dict[str, BatchStats] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def answer_key(variant: str, prompt: Prompt) -> str:
    """The journal key of one variant's answer to one prompt."""
    return f"{variant}:{prompt.set}:{prompt.key}"


def fingerprint(variant: Variant, sampling: Sampling) -> str:
    """Short hash of what shapes a variant's answers (the URL is left out: a local server's
    port may change between sessions)."""
    payload = {"sampling": asdict(sampling), "options": variant.options,
               "config": variant.config_hash}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The run's manifest, or None for a new run directory."""
    path = run_dir / RUN_MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunMismatch(f"{path} is not valid JSON ({exc}); use a new run directory") from None
    return data if isinstance(data, dict) else None


def check_variants(run_dir: Path, variants: Sequence[Variant], sampling: Sampling) -> list[str]:
    """Refuse a variant whose settings differ from the answers already recorded under its
    name; notes about variants whose endpoint moved."""
    earlier = (read_manifest(run_dir) or {}).get("variants", {})
    notes = []
    for v in variants:
        before = earlier.get(v.name)
        if before is None:
            continue
        if before.get("fingerprint") != fingerprint(v, sampling):
            raise RunMismatch(
                f"{run_dir} holds answers of variant {v.name!r} made with other settings "
                "(model, sampling, options or gateway config); use a new run directory or "
                "another variant name")
        if before.get("url") != public_url(v.base_url):
            notes.append(f"variant {v.name!r} was started against {before.get('url')}; "
                         f"continuing against {public_url(v.base_url)}")
    return notes


def write_manifest(run_dir: Path, variants: Sequence[Variant], sampling: Sampling,
                   prompts: Sequence[Prompt]) -> None:
    """Record the sampling, every variant (earlier ones kept) and the latest prompts."""
    earlier = (read_manifest(run_dir) or {}).get("variants", {})
    described = {**earlier, **{v.name: {**v.describe(), "fingerprint": fingerprint(v, sampling)}
                               for v in variants}}
    sets: dict[str, int] = {}
    for p in prompts:
        sets[p.set] = sets.get(p.set, 0) + 1
    manifest = {"tool": "guide-align eval", "updated": utc_now(), "sampling": asdict(sampling),
                "variants": described, "order": [v.name for v in variants], "sets": sets}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RUN_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    atomic_write_text(run_dir / PROMPTS, "".join(
        json.dumps({"key": p.key, "set": p.set, "messages": list(p.messages), "label": p.label,
                    "category": p.category}, ensure_ascii=False) + "\n" for p in prompts))


def read_prompts(run_dir: Path) -> list[Prompt]:
    """The prompts of the run's latest asking (what ``--regrade`` grades)."""
    path = run_dir / PROMPTS
    if not path.is_file():
        raise RunMismatch(f"{run_dir}: no {PROMPTS}; not an eval run directory")
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    return [Prompt(key=r["key"], set=r["set"], messages=tuple(r["messages"]),
                   label=r.get("label"), category=r.get("category")) for r in rows]


def read_answers(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest answer record of each (variant, prompt) key (journal and Ray shards)."""
    return {r["key"]: r for r in merge_records(Journal(run_dir / ANSWERS).records(),
                                               ShardStore(run_dir / SHARDS).records())}


class _Asker:
    """One variant's worker: the prompt's conversation to the endpoint, a journal record back."""

    def __init__(self, variant: Variant, client: LLMClient):
        self.variant = variant
        self.client = client

    async def __call__(self, prompt: Prompt) -> dict[str, Any]:
        record: dict[str, Any] = {"variant": self.variant.name, "set": prompt.set,
                                  "prompt": prompt.key}
        params = {"guide_align": self.variant.options} if self.variant.options else {}
        try:
            answer = await self.client.chat(list(prompt.messages), **params)
        except LLMUnreachable:
            raise  # not recorded: the variant stops and a rerun asks again
        except LLMError as exc:
            return {**record, "status": "failed", "error": str(exc)[:500],
                    "http_status": exc.status}
        guided = answer.guide_align or {}
        return {**record, "answer": answer.text, "finish_reason": answer.finish_reason,
                "model": answer.model, "usage": answer.usage,
                "latency_s": round(answer.latency_s, 4),
                "guidelines": [g.get("id") for g in guided.get("guidelines", [])
                               if isinstance(g, dict)],
                "finished": utc_now()}


def _llm_config(variant: Variant, sampling: Sampling, policy: CallPolicy) -> LLMConfig:
    return LLMConfig(base_url=variant.base_url, model=sampling.model, api_key=variant.api_key,
                     temperature=sampling.temperature, max_tokens=sampling.max_tokens,
                     timeout=policy.timeout, max_retries=policy.max_retries,
                     backoff=policy.backoff, concurrency=policy.concurrency)


async def _ask_variant(prompts: Sequence[Prompt], variant: Variant, *, sampling: Sampling,
                       policy: CallPolicy, journal: Journal,
                       transport: httpx.AsyncBaseTransport | None) -> BatchStats:
    done = journal.done_keys() - (journal.failed_keys() if policy.retry_failed else set())
    async with LLMClient(_llm_config(variant, sampling, policy), transport=transport) as client:
        if any(answer_key(variant.name, p) not in done for p in prompts):
            await client.ping()
        return await run_batch(prompts, _Asker(variant, client), journal=journal,
                               key=lambda p: answer_key(variant.name, p),
                               concurrency=policy.concurrency, desc=f"ask {variant.name}",
                               show_progress=policy.show_progress,
                               retry_failed=policy.retry_failed, fatal=(LLMUnreachable,))


async def _collect(prompts: Sequence[Prompt], variants: Sequence[Variant], *,
                   sampling: Sampling, policy: CallPolicy, journal: Journal,
                   transport: httpx.AsyncBaseTransport | None) -> Collected:
    out = Collected()
    for variant in variants:  # one after the other, so latencies are not mixed
        try:
            out.stats[variant.name] = await _ask_variant(
                prompts, variant, sampling=sampling, policy=policy, journal=journal,
                transport=transport)
        except LLMUnreachable as exc:
            out.stopped[variant.name] = str(exc)
    return out


def collect_answers(prompts: Sequence[Prompt], variants: Sequence[Variant], run_dir: Path, *,
                    sampling: Sampling, policy: CallPolicy = CallPolicy(),
                    transport: httpx.AsyncBaseTransport | None = None) -> Collected:
    """Ask every variant every prompt not yet answered in ``run_dir``; safe to kill.

    A failed call (HTTP error after retries) is recorded as failed; an endpoint that cannot
    be reached stops that variant (nothing recorded for the rest) and the next one goes on.
    Raises RunMismatch when ``run_dir`` holds answers made with other settings.
    """
    notes = check_variants(run_dir, variants, sampling)
    write_manifest(run_dir, variants, sampling, prompts)
    journal = Journal(run_dir / ANSWERS)
    try:
        collected = asyncio.run(_collect(prompts, variants, sampling=sampling, policy=policy,
                                         journal=journal, transport=transport))
    finally:
        journal.close()
    collected.notes[:0] = notes
    return collected
