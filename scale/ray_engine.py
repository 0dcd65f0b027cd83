"""The Ray side of a batch stage: inputs as a Ray dataset, LLM calls over an actor pool, shards.

Ray does the scheduling, the actor pool and the retries; this module only says what each batch
computes (the pipeline's own per-record functions) and where its records go.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pandas as pd

from guideline_lib.inputs import InputError, _text_of, input_key
from guideline_lib.llm import ClientStats, LLMClient, LLMConfig, LLMUnreachable
from guideline_lib.shards import ShardStore

if TYPE_CHECKING:
    import ray.data

ITEM_COLUMNS = ["key", "text", "source", "line"]
JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)


class RayRunError(Exception):
    """A Ray run stopped (unreachable LLM, lost cluster, bad input); a rerun resumes it."""


@dataclass(frozen=True)
class RayConfig:
    """Where the cluster is and how wide each pool runs."""

    address: str | None = None  # None: a local cluster started for the run (or the current one)
    workers: int = 2  # actors in the LLM client pool
    batch_size: int = 16  # inputs per map_batches call (and per shard)
    guide_workers: int = 1  # actors holding the encoder + index, where a stage searches
    guide_cpus: float = 0.5  # CPU reserved per encoder actor (reads take 1; 2 CPUs fit all)
    num_cpus: int | None = None  # CPUs of a local cluster (None: all)
    worker_cpus: float = 0.25  # CPU reserved per LLM actor: its work is waiting on HTTP
    show_progress: bool = True
    runtime_env: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def ray_cluster(config: RayConfig) -> Iterator[None]:
    """Connect to ``config.address`` or start a local cluster; an open session is reused."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(address=config.address, num_cpus=None if config.address else config.num_cpus,
             include_dashboard=False, log_to_driver=False,
             runtime_env=config.runtime_env or None)
    try:
        yield
    finally:
        ray.shutdown()


def _is_url(path: str) -> bool:
    return "://" in path


def read_items(paths: Sequence[str], *, text_field: str = "text",
               max_chars: int = 8000) -> ray.data.Dataset:
    """Input rows (JSONL or Parquet; local paths or any URL Ray Data reads) as item rows.

    Rows get the local reader's key (``input_key`` of the cleaned text); empty and over-long
    rows are dropped. Ray Data gives no line numbers, so ``source`` is the file and ``line`` 0.
    Raises InputError for another format or a missing local file.
    """
    import ray.data

    json_paths = [p for p in paths if p.lower().endswith(JSON_SUFFIXES)]
    parquet_paths = [p for p in paths if p.lower().endswith(PARQUET_SUFFIXES)]
    other = [p for p in paths if p not in json_paths and p not in parquet_paths]
    if other:
        raise InputError(f"{other[0]}: --engine ray reads .jsonl, .json and .parquet inputs")
    for p in paths:
        if not _is_url(p) and not Path(p).exists():
            raise InputError(f"{p}: no such file or directory")
    parts: list[ray.data.Dataset] = []
    if json_paths:
        parts.append(ray.data.read_json(json_paths, lines=True, include_paths=True))
    if parquet_paths:
        parts.append(ray.data.read_parquet(parquet_paths, include_paths=True))
    ds = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    return ds.map_batches(partial(_to_items, text_field=text_field, max_chars=max_chars),
                          batch_format="pandas")


def _to_items(batch: pd.DataFrame, *, text_field: str, max_chars: int) -> pd.DataFrame:
    rows = []
    values = batch[text_field] if text_field in batch else [None] * len(batch)
    for value, path in zip(values, batch["path"], strict=True):
        text = _text_of(value.tolist() if hasattr(value, "tolist") else value)
        if text is None:
            continue
        text = text.replace("\x00", "").strip()
        if text and len(text) <= max_chars:
            rows.append({"key": input_key(text), "text": text, "source": str(path), "line": 0})
    return pd.DataFrame(rows, columns=ITEM_COLUMNS)


def drop_done(ds: ray.data.Dataset, done: set[str]) -> ray.data.Dataset:
    """``ds`` without the rows whose key is in ``done`` (the resume rule)."""
    if not done:
        return ds
    return ds.map_batches(partial(_drop, done=frozenset(done)), batch_format="pandas")


def _drop(batch: pd.DataFrame, *, done: frozenset[str]) -> pd.DataFrame:
    return batch[~batch["key"].map(done.__contains__).astype(bool)] if len(batch) else batch


# What an LLM actor runs per row: (row, client) -> journal-shaped records with their keys.
RowTask = Callable[[dict[str, Any], LLMClient], Awaitable[list[dict[str, Any]]]]


class LLMWorker:
    """One actor of the LLM pool: an OpenAI-compatible client and its own event loop.

    Each call runs a batch of rows (up to ``llm.concurrency`` requests in flight), writes
    their records as one shard and returns per-row counts for the driver.
    """

    def __init__(self, llm: LLMConfig, task: RowTask, out: str):
        self.loop = asyncio.new_event_loop()
        self.client = LLMClient(llm)
        self.limit = max(1, llm.concurrency)
        self.task = task
        self.store = ShardStore(out)

    async def _run(self, rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        gate = asyncio.Semaphore(self.limit)

        async def one(row: dict[str, Any]) -> list[dict[str, Any]]:
            async with gate:
                return await self.task(row, self.client)

        return await asyncio.gather(*(one(r) for r in rows))

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        before = ClientStats(**vars(self.client.stats))
        results = self.loop.run_until_complete(self._run(batch.to_dict("records")))
        records = [r for rs in results for r in rs]
        self.store.write(records)
        after = self.client.stats
        return pd.DataFrame([{
            "records": len(records),
            "failed": sum(r.get("status") == "failed" for r in records),
            "requests": after.requests - before.requests,
            "cache_hits": after.cache_hits - before.cache_hits,
            "retries": after.retries - before.retries,
        }])


@dataclass
class RayStats:
    """What the LLM pool did, summed over its batches."""

    records: int = 0
    failed: int = 0
    calls: ClientStats = field(default_factory=ClientStats)


def run_llm_pool(ds: ray.data.Dataset, task: RowTask, *, llm: LLMConfig, out: Path,
                 config: RayConfig) -> RayStats:
    """Run ``task`` on every row of ``ds`` over an actor pool; records land in ``out`` shards."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = config.show_progress
    counts = ds.map_batches(
        LLMWorker, fn_constructor_args=(llm, task, str(out.resolve())),
        batch_size=config.batch_size,
        batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=config.workers),
        num_cpus=config.worker_cpus)
    stats = RayStats()
    try:
        for batch in counts.iter_batches(batch_size=None, batch_format="pandas"):
            stats.records += int(batch["records"].sum())
            stats.failed += int(batch["failed"].sum())
            stats.calls.requests += int(batch["requests"].sum())
            stats.calls.cache_hits += int(batch["cache_hits"].sum())
            stats.calls.retries += int(batch["retries"].sum())
    except Exception as exc:
        unreachable = "LLMUnreachable" in str(exc) or isinstance(exc, LLMUnreachable)
        reason = "the LLM endpoint is unreachable" if unreachable else f"{type(exc).__name__}"
        raise RayRunError(f"the Ray run stopped: {reason}; finished shards are kept") from exc
    return stats


async def ping(llm: LLMConfig) -> None:
    """Check the endpoint once before starting the pool (LLMUnreachable when nobody answers)."""
    async with LLMClient(llm) as client:
        await client.ping()


@contextlib.contextmanager
def stopped_as_run_stopped() -> Iterator[None]:
    """Turn a stopped Ray run into the local engine's RunStopped (same message, same exit)."""
    from guideline_lib.batch import RunStopped

    try:
        yield
    except (RayRunError, LLMUnreachable) as exc:
        raise RunStopped(f"{exc}\nNothing is lost: rerun the same command to resume.", 2) \
            from None
    except KeyboardInterrupt:
        raise RunStopped("interrupted; rerun the same command to resume", 130) from None


def dumps(value: Any) -> str:
    """JSON text of ``value`` for a dataset column (nested records travel as strings)."""
    return orjson.dumps(value).decode()
