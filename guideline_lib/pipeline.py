"""`build_library`: inputs -> a guideline library with any OpenAI-compatible LLM, resumable.

The plain function behind `guide-align library build`; notebooks and other stages call it too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from guideline_lib.assemble import AssembleStats, assemble_library
from guideline_lib.batch import run_journaled
from guideline_lib.build import BuildConfig, BuildRun, execute_build, input_records
from guideline_lib.dedup import Embedder
from guideline_lib.inputs import InputItem, ReadStats
from guideline_lib.io import save_library
from guideline_lib.journal import Journal
from guideline_lib.llm import ClientStats, LLMConfig, ResponseCache, public_url
from guideline_lib.prompting import prompt_version
from guideline_lib.schema import Library, Manifest, utc_now

JOURNAL = "journal.jsonl"
CACHE = "cache.sqlite"


@dataclass(frozen=True)
class BuildResult:
    """The library written, and what the build did."""

    library: Library
    run: BuildRun
    calls: ClientStats
    stats: AssembleStats
    journal: Path


def next_version(version: str) -> str:
    """The patch version after ``version`` ('1.2.3' -> '1.2.4')."""
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version)
    return f"{match[1]}.{match[2]}.{int(match[3]) + 1}" if match else f"{version}.1"


def work_dir_for(output: Path) -> Path:
    """Where a build into ``output`` keeps its journal and cache by default."""
    return output.with_name(output.name + ".build")


def open_build_journal(work_dir: Path) -> Journal:
    """The journal of a build's work directory."""
    return Journal(work_dir / JOURNAL)


def build_library(
    items: Sequence[InputItem],
    output: Path,
    *,
    llm: LLMConfig,
    config: BuildConfig,
    base: Library | None = None,
    encoder: Embedder | None = None,
    name: str | None = None,
    version: str | None = None,
    work_dir: Path | None = None,
    cache: bool = True,
    read: ReadStats | None = None,
    inputs: Sequence[str] = (),
    text_field: str = "text",
    show_progress: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
) -> BuildResult:
    """Run the build stages over ``items`` (extending ``base`` if given) and write the library.

    Every LLM result lands in a journal under ``work_dir`` first, so a build killed at any
    point resumes with the same call. ``encoder`` merges near-duplicates by cosine as well as by
    fuzzy ratio. Raises ``guideline_lib.batch.RunStopped`` when the run stopped.
    """
    work = work_dir or work_dir_for(output)
    journal = open_build_journal(work)
    response_cache = ResponseCache(work / CACHE) if cache else None
    run, calls = run_journaled(execute_build(items, llm=llm, config=config, journal=journal,
                                             cache=response_cache, show_progress=show_progress,
                                             transport=transport),
                               journal=journal, cache=response_cache)
    records = input_records(run.items, journal, config=config, llm=llm)
    return save_build(run, records, output, llm=llm, config=config, calls=calls,
                      journal=journal.path, base=base, encoder=encoder, name=name,
                      version=version, read=read, inputs=inputs, text_field=text_field)


def save_build(
    run: BuildRun,
    records: dict[str, dict[str, Any]],
    output: Path,
    *,
    llm: LLMConfig,
    config: BuildConfig,
    calls: ClientStats,
    journal: Path,
    base: Library | None = None,
    encoder: Embedder | None = None,
    name: str | None = None,
    version: str | None = None,
    read: ReadStats | None = None,
    inputs: Sequence[str] = (),
    text_field: str = "text",
) -> BuildResult:
    """Assemble the library from a run's per-input records (``input_records``) and write it."""
    manifest = (base.manifest.model_copy(update={"created": utc_now()}) if base
                else Manifest(name=name or output.name))
    manifest.name = name or manifest.name
    manifest.version = version or (next_version(base.manifest.version) if base else "0.1.0")
    library, st = assemble_library(
        run.items, records, base=base, encoder=encoder, dedup=config.dedup, manifest=manifest,
        model=llm.model, prompt_version=prompt_version(), test_percent=config.test_percent)
    library.manifest.producer = _producer(inputs, text_field, llm, base, read, run, calls, st)
    saved = save_library(library, output)
    return BuildResult(library=saved, run=run, calls=calls, stats=st, journal=journal)


def _producer(inputs: Sequence[str], text_field: str, llm: LLMConfig, base: Library | None,
              read: ReadStats | None, run: BuildRun, calls: ClientStats, st: AssembleStats
              ) -> dict[str, Any]:
    return {
        "tool": "guide-align library build",
        "inputs": list(inputs),
        "text_field": text_field,
        "model": llm.model,
        "endpoint": public_url(llm.base_url),
        "temperature": llm.temperature,
        "prompt_version": prompt_version(),
        "extends": ({"name": base.manifest.name, "version": base.manifest.version,
                     "content_hash": base.manifest.content_hash} if base else None),
        "read": ({"rows": read.read, "kept": read.kept, "skipped": read.skipped}
                 if read else None),
        "build": {"inputs": len(run.items), "augmented": run.augmented, "ok": st.ok,
                  "failed": st.failed, "candidates": st.candidates,
                  "new_guidelines": st.new_guidelines, "merged": st.merged,
                  "new_examples": st.new_examples, "llm_requests": calls.requests,
                  "cache_hits": calls.cache_hits},
        "finished": utc_now(),
    }
