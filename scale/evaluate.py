"""`eval --engine ray`: each variant's prompts asked over a Ray actor pool of clients; the
answers are the local harness's records, written as shards of the run directory."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.harness import (
    ANSWERS,
    CallPolicy,
    Collected,
    Sampling,
    Variant,
    _Asker,
    _llm_config,
    answer_key,
    check_variants,
    write_manifest,
)
from evaluation.sets import Prompt
from guideline_lib.batch import BatchStats
from guideline_lib.journal import Journal
from guideline_lib.llm import LLMClient, LLMUnreachable
from guideline_lib.shards import SHARDS, ShardStore, merge_records
from scale.ray_engine import RayConfig, RayRunError, ping, ray_cluster, run_llm_pool


@dataclass(frozen=True)
class AskTask:
    """One prompt to one variant, recorded as the local harness records it."""

    variant: Variant

    async def __call__(self, row: dict[str, Any], client: LLMClient) -> list[dict[str, Any]]:
        """The answer record of ``row``'s prompt, with its key."""
        prompt = Prompt(key=row["key"], set=row["set"],
                        messages=tuple(json.loads(row["messages"])),
                        label=row["label"], category=row["category"])
        record = await _Asker(self.variant, client)(prompt)
        record.setdefault("status", "ok")
        return [{**record, "key": answer_key(self.variant.name, prompt)}]


def collect_answers_ray(prompts: Sequence[Prompt], variants: Sequence[Variant], run_dir: Path,
                        *, sampling: Sampling, policy: CallPolicy,
                        ray_config: RayConfig) -> Collected:
    """``collect_answers`` on Ray: the same resume rule, answers as shards of ``run_dir``.

    A variant whose endpoint cannot be reached stops (nothing recorded for it) and the next
    one goes on, as locally.
    """
    import ray.data

    notes = check_variants(run_dir, variants, sampling)
    write_manifest(run_dir, variants, sampling, prompts)
    store = ShardStore(run_dir / SHARDS)
    out = Collected()
    with ray_cluster(ray_config):
        for variant in variants:  # one after the other, so latencies are not mixed
            status = {r["key"]: r.get("status", "ok") for r in merge_records(
                Journal(run_dir / ANSWERS).records(), store.records())}
            todo = [p for p in prompts if (s := status.get(answer_key(variant.name, p))) is None
                    or (s == "failed" and policy.retry_failed)]
            started = time.monotonic()
            stats = BatchStats(total=len(prompts), skipped_done=len(prompts) - len(todo), ok=0,
                               failed=0, seconds=0.0)
            if todo:
                llm = _llm_config(variant, sampling, policy)
                rows = [{"key": p.key, "set": p.set, "messages": json.dumps(list(p.messages)),
                         "label": p.label, "category": p.category} for p in todo]
                try:
                    asyncio.run(ping(llm))
                    done = run_llm_pool(ray.data.from_items(rows), AskTask(variant), llm=llm,
                                        out=store.path, config=ray_config)
                except (LLMUnreachable, RayRunError) as exc:
                    out.stopped[variant.name] = str(exc)
                    continue
                stats.ok, stats.failed = done.records - done.failed, done.failed
            stats.seconds = time.monotonic() - started
            out.stats[variant.name] = stats
    out.notes[:0] = notes
    return out
