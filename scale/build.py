"""`library build --engine ray`: the builder's per-input stages on a Ray actor pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson

from guideline_lib.build import (
    BuildConfig,
    BuildRun,
    Keys,
    categorise_record,
    detect_record,
    generate_record,
    input_records,
    stage_keys,
)
from guideline_lib.dedup import Embedder
from guideline_lib.inputs import InputItem
from guideline_lib.journal import Journal
from guideline_lib.llm import ClientStats, LLMClient, LLMConfig
from guideline_lib.pipeline import BuildResult, open_build_journal, save_build, work_dir_for
from guideline_lib.schema import Library
from guideline_lib.shards import SHARDS, ShardStore, merge_records
from scale.ray_engine import (
    RayConfig,
    RayRunError,
    dumps,
    ping,
    ray_cluster,
    read_items,
    run_llm_pool,
    stopped_as_run_stopped,
)


def stages(config: BuildConfig) -> tuple[str, ...]:
    """The per-input stages of a build, in order."""
    return ("detect", "generate") + (("categorise",) if config.categorise.mode == "llm" else ())


def item_done(key: str, status: dict[str, str], *, keys: Keys, config: BuildConfig) -> bool:
    """The local engine's resume rule for one input: every stage recorded, or one failed."""
    for stage in stages(config):
        st = status.get(keys.of(stage, key))
        if st is None:
            return False
        if st == "failed":
            return not config.retry_failed
    return True


@dataclass(frozen=True)
class BuildTask:
    """One input through detect, generate (and categorise): the local engine's record functions.

    Stages already recorded ok (the row's ``prior``) are reused; a failed one is redone with the
    next retry round, as ``--retry-failed`` does locally.
    """

    config: BuildConfig
    keys: Keys

    async def __call__(self, row: dict[str, Any], client: LLMClient) -> list[dict[str, Any]]:
        """The new journal records of ``row``'s input, each with its stage key."""
        item = InputItem(key=row["key"], text=row["text"], source=row["source"],
                         line=int(row["line"]))
        prior: dict[str, dict[str, Any]] = orjson.loads(row["prior"]) if row["prior"] else {}
        out: list[dict[str, Any]] = []
        done: dict[str, dict[str, Any]] = {}
        for stage in stages(self.config):
            key = self.keys.of(stage, item.key)
            before = prior.get(key)
            if before is not None and before.get("status", "ok") == "ok":
                done[stage] = before
                continue
            salt = int(before.get("retry_round") or 0) + 1 if before is not None else 0
            if stage == "detect":
                record = await detect_record(item, client=client, config=self.config, salt=salt)
            elif stage == "generate":
                record = await generate_record(item, done["detect"], client=client,
                                               config=self.config, salt=salt)
            else:
                record = await categorise_record(item, done["detect"], done["generate"],
                                                 client=client, config=self.config, salt=salt)
            record.setdefault("status", "ok")
            out.append({**record, "key": key})
            if record["status"] != "ok":
                break
            done[stage] = record
        return out


class _Records:
    """The latest record per key of a build's local journal and its Ray shards together."""

    def __init__(self, journal: Journal, store: ShardStore):
        self.latest = {r["key"]: r for r in merge_records(journal.records(), store.records())}

    def records(self) -> list[dict[str, Any]]:
        """The merged records (``input_records`` reads only this)."""
        return list(self.latest.values())

    def status(self) -> dict[str, str]:
        """Each key's status."""
        return {k: str(r.get("status", "ok")) for k, r in self.latest.items()}


def build_library_ray(
    inputs: Sequence[str],
    output: Path,
    *,
    llm: LLMConfig,
    config: BuildConfig,
    ray_config: RayConfig,
    text_field: str = "text",
    max_chars: int = 8000,
    base: Library | None = None,
    encoder: Embedder | None = None,
    name: str | None = None,
    version: str | None = None,
    work_dir: Path | None = None,
) -> BuildResult:
    """``build_library`` on Ray: same per-input records, as shards under ``work_dir/shards``.

    Records the local journal already holds count as done, so a build may switch engines.
    Augmentation is a whole-input step and stays on the local engine.
    """
    if config.augment.rounds:
        raise RayRunError("--augment runs on the local engine only; build without it on Ray")
    work = work_dir or work_dir_for(output)
    store = ShardStore(work / SHARDS)
    keys = stage_keys(config, llm)
    with stopped_as_run_stopped(), ray_cluster(ray_config):
        items = _unique(_in_order(lambda: read_items(list(inputs), text_field=text_field,
                                                     max_chars=max_chars)))
        seen = _Records(open_build_journal(work), store)
        status = seen.status()
        todo = [i for i in items if not item_done(i.key, status, keys=keys, config=config)]
        calls = _run(todo, seen, llm=llm, config=config, keys=keys, store=store,
                     ray_config=ray_config)
    seen = _Records(open_build_journal(work), store)
    run = BuildRun(items=items)
    # input_records only reads records(); the merged view has the journal's shape.
    records = input_records(items, cast(Journal, seen), config=config, llm=llm)
    return save_build(run, records, output, llm=llm, config=config, calls=calls,
                      journal=store.path, base=base, encoder=encoder, name=name,
                      version=version, inputs=list(inputs), text_field=text_field)


def _in_order(dataset: Callable[[], Any]) -> list[dict[str, Any]]:
    """All rows of ``dataset()`` in input order, as the local reader gives them (assembly
    follows that order)."""
    import ray.data

    options = ray.data.DataContext.get_current().execution_options
    before, options.preserve_order = options.preserve_order, True
    try:
        return list(dataset().take_all())
    finally:
        options.preserve_order = before


def _unique(rows: list[dict[str, Any]]) -> list[InputItem]:
    items: dict[str, InputItem] = {}
    for r in rows:
        items.setdefault(r["key"], InputItem(key=r["key"], text=r["text"], source=r["source"],
                                             line=int(r["line"])))
    return list(items.values())


def _run(todo: list[InputItem], seen: _Records, *, llm: LLMConfig, config: BuildConfig,
         keys: Keys, store: ShardStore, ray_config: RayConfig) -> ClientStats:
    if not todo:
        return ClientStats()
    asyncio.run(ping(llm))
    import ray.data

    rows = [{"key": i.key, "text": i.text, "source": i.source, "line": i.line,
             "prior": dumps({k: seen.latest[k] for s in stages(config)
                             if (k := keys.of(s, i.key)) in seen.latest})}
            for i in todo]
    return run_llm_pool(ray.data.from_items(rows), BuildTask(config, keys), llm=llm,
                        out=store.path, config=ray_config).calls
