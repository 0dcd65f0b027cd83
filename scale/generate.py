"""`finetune generate --engine ray`: retrieval on an encoder + index actor pool, answers on an
LLM client pool; the same records as the local engine, as shards of the run directory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from finetune.generate import (
    GenerateConfig,
    GenerateResult,
    GenerateRun,
    answer_record,
    guided_record,
    open_run,
)
from finetune.io import open_journal, write_run_manifest
from guide.workspace import Workspace
from guideline_lib.batch import BatchStats
from guideline_lib.inputs import InputItem
from guideline_lib.llm import LLMClient, LLMConfig
from guideline_lib.shards import SHARDS, ShardStore, merge_records
from judge.model import LinearHeads
from retriever.search import DenseRetriever
from scale.ray_engine import (
    RayConfig,
    RayStats,
    drop_done,
    dumps,
    ping,
    ray_cluster,
    read_items,
    run_llm_pool,
    stopped_as_run_stopped,
)


class GuideWorker:
    """One actor of the retrieval pool: the workspace's encoder, index (and judge) loaded once."""

    def __init__(self, workspace: Workspace, config: GenerateConfig):
        self.retriever = workspace.open_retriever()
        self.judge = workspace.open_judge(self.retriever)
        self.config = config

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = []
        for row in batch.to_dict("records"):
            started = time.monotonic()
            item = InputItem(key=row["key"], text=row["text"], source=row["source"],
                             line=int(row["line"]))
            record = guided_record(item, retriever=self.retriever, config=self.config,
                                   judge=self.judge)
            rows.append({"key": item.key, "record": dumps(record),
                         "retrieval_s": time.monotonic() - started})
        return pd.DataFrame(rows, columns=["key", "record", "retrieval_s"])


@dataclass(frozen=True)
class AnswerTask:
    """The LLM half of a guided answer (``answer_record``), as the local engine records it."""

    async def __call__(self, row: dict[str, Any], client: LLMClient) -> list[dict[str, Any]]:
        """The journal record of ``row``'s input, with its key."""
        retrieval_s = float(row["retrieval_s"])
        record = await answer_record(orjson.loads(row["record"]), client=client,
                                     started=time.monotonic() - retrieval_s,
                                     retrieval_s=retrieval_s)
        record.setdefault("status", "ok")
        return [{**record, "key": row["key"]}]


def generate_run_ray(
    inputs: Sequence[str],
    run_dir: Path,
    *,
    workspace: Workspace,
    retriever: DenseRetriever,
    encoder_info: dict[str, Any],
    llm: LLMConfig,
    config: GenerateConfig,
    ray_config: RayConfig,
    judge: LinearHeads | None = None,
    text_field: str = "text",
    max_chars: int = 8000,
) -> GenerateResult:
    """``generate_run`` on Ray: the records land as shards under ``run_dir/shards``.

    ``retriever`` and ``judge`` are the driver's copies (for the fingerprint); every retrieval
    actor opens its own from ``workspace``. Inputs the run's journal or shards already hold
    (failed ones too, unless ``config.retry_failed``) are skipped.
    """
    manifest, notes = open_run(run_dir, retriever=retriever, encoder_info=encoder_info,
                               llm=llm, config=config, inputs=inputs,
                               read={"engine": "ray"}, judge=judge)
    write_run_manifest(run_dir, manifest())
    store = ShardStore(run_dir / SHARDS)
    started = time.monotonic()
    with stopped_as_run_stopped(), ray_cluster(ray_config):
        import ray.data

        status = _status(run_dir, store)
        done = {k for k, s in status.items() if s == "ok" or not config.retry_failed}
        todo = drop_done(read_items(list(inputs), text_field=text_field, max_chars=max_chars),
                         done)
        if todo.limit(1).count():
            ray.data.DataContext.get_current().enable_progress_bars = ray_config.show_progress
            asyncio.run(ping(llm))
            guided = todo.map_batches(
                GuideWorker, fn_constructor_args=(absolute_paths(workspace), config),
                batch_size=ray_config.batch_size, batch_format="pandas",
                compute=ray.data.ActorPoolStrategy(size=ray_config.guide_workers),
                num_cpus=ray_config.guide_cpus)
            stats = run_llm_pool(guided, AnswerTask(), llm=llm, out=store.path,
                                 config=ray_config)
        else:
            stats = RayStats()
    status = _status(run_dir, store)
    n_failed = sum(s == "failed" for s in status.values())
    counts = {"inputs": len(status), "records": len(status), "ok": len(status) - n_failed,
              "failed": n_failed}
    write_run_manifest(run_dir, manifest(counts))
    batch = BatchStats(total=len(status), skipped_done=len(done), ok=stats.records - stats.failed,
                       failed=stats.failed, seconds=time.monotonic() - started)
    return GenerateResult(run=GenerateRun(stats=batch, calls=stats.calls), counts=counts,
                          notes=notes)


def _status(run_dir: Path, store: ShardStore) -> dict[str, str]:
    journal = open_journal(run_dir)
    return {r["key"]: str(r.get("status", "ok"))
            for r in merge_records(journal.records(), store.records())}


def absolute_paths(workspace: Workspace) -> Workspace:
    """``workspace`` with absolute artifact paths: actors need not share the driver's cwd."""
    return workspace.model_copy(update={name: Path(value).resolve() for name, value in workspace
                                        if isinstance(value, Path)})
