"""Repair: the attacks that got through become a new library version, a retriever fine-tuned
from its current weights and a prompt-risk judge whose example memory holds the new inputs.

1. the builder (``guideline_lib.pipeline.build_library``, any OpenAI-compatible LLM) writes
   guidelines for each input, extending the served library; the new guidelines carry the
   provenance ``redteam/round-N``, and a known-harmful input the builder took for benign gets
   its goal's safety category;
2. the retriever is fine-tuned from the served encoder's weights on the new pairs plus a
   replay sample of the old ones (``retriever.train.train_retriever``), exported and indexed
   (``retriever.prepare.prepare_retriever``);
3. the judge keeps its heads and re-embeds its kNN memory (``judge.train.library_memory``) with
   the new encoder, new examples included: the memory carries the risk vote, so the inputs
   that slipped by now sit next to risky neighbours.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from guideline_lib.build import BuildConfig, calls_per_input
from guideline_lib.inputs import InputItem, input_key
from guideline_lib.io import load_library, save_library
from guideline_lib.llm import LLMConfig
from guideline_lib.pipeline import build_library, next_version
from guideline_lib.schema import Example, Guideline, Library
from guideline_lib.taxonomy import SAFETY_IDS
from redteam.evaluator import Artifacts

Log = Callable[[str], None]


@dataclass(frozen=True)
class RepairInput:
    """One attack that got through, as a builder input."""

    text: str
    category: str  # the goal's safety category
    attack_id: str


@dataclass(frozen=True)
class RepairConfig:
    """Settings of one repair; the retriever fine-tune is kept tiny on purpose."""

    backend: str = "onnx-int8"  # the serving encoder runtime (exported after the fine-tune)
    replay: int = 64  # old training pairs mixed into the fine-tune
    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 2e-5
    seed: int = 13
    build: BuildConfig = field(default_factory=lambda: BuildConfig(test_percent=0))


@dataclass(frozen=True)
class RepairResult:
    """The artifacts of the new version and what the repair did."""

    artifacts: Artifacts
    summary: dict[str, Any]


def provenance_tag(round_no: int) -> str:
    """The provenance of what round ``round_no``'s repair adds."""
    return f"redteam/round-{round_no}"


def builder_calls(inputs: int, config: BuildConfig) -> int:
    """First-try LLM calls the builder makes for ``inputs`` inputs."""
    return inputs * calls_per_input(config)


def mark_new(library: Library, base: Library, inputs: Sequence[RepairInput], round_no: int
             ) -> tuple[Library, list[str]]:
    """The library with its new guidelines tagged ``redteam/round-N`` (their provenance note
    too), and a quality guideline written for a known-harmful input moved to the goal's
    category; returns it and the new ids."""
    tag = provenance_tag(round_no)
    old = base.by_id()
    category = {i.text: i.category for i in inputs}
    by_input: dict[str, set[str]] = {}
    for ex in library.examples:
        if ex.input in category:
            by_input.setdefault(ex.input, set()).update(ex.guideline_ids)
    harmful_cat: dict[str, str] = {}
    for text, ids in by_input.items():
        for gid in ids:
            harmful_cat.setdefault(gid, category[text])
    new_ids: list[str] = []
    guidelines: list[Guideline] = []
    for g in library.guidelines:
        if g.id in old:
            guidelines.append(g)
            continue
        new_ids.append(g.id)
        cat = g.category
        if g.kind != "safety" and g.id in harmful_cat and harmful_cat[g.id] in SAFETY_IDS:
            cat = harmful_cat[g.id]
        prov = g.provenance.model_copy(update={"note": tag})
        guidelines.append(Guideline.create(g.text, cat, source=g.source, provenance=prov,
                                           tags=sorted({*g.tags, tag})))
    manifest = library.manifest.model_copy(deep=True)
    manifest.producer = {**manifest.producer, "provenance": tag, "redteam_inputs": len(inputs)}
    return Library(manifest=manifest, guidelines=guidelines,
                   examples=library.examples), new_ids


def fine_tune_library(library: Library, base: Library, *, replay: int, seed: int) -> Library:
    """The pairs the fine-tune sees: every new train example and a replay sample of old ones."""
    old_inputs = {e.input for e in base.examples}
    new = [e for e in library.examples if e.split == "train" and e.input not in old_inputs]
    old = [e for e in base.examples if e.split == "train"]
    sample = random.Random(seed).sample(old, min(replay, len(old)))
    examples = [Example(input=e.input, guideline_ids=e.guideline_ids) for e in [*new, *sample]]
    return Library(manifest=library.manifest, guidelines=library.guidelines, examples=examples)


def update_judge(judge_dir: Path, out: Path, library: Library, encoder: Any, *,
                 encoder_hash: str, note: dict[str, Any], batch: int = 256) -> dict[str, Any]:
    """Save at ``out`` the judge of ``judge_dir`` with its kNN memory re-embedded by
    ``encoder`` from ``library``'s linked examples; its heads are kept."""
    from judge.model import ExampleMemory, LinearHeads, load_heads, save_heads
    from judge.train import library_memory

    heads = load_heads(judge_dir)
    rows = [r for r in library_memory(library) if r.split == "train"]
    texts = [r.text for r in rows]
    vecs = np.vstack([encoder.encode(texts[i:i + batch]) for i in range(0, len(texts), batch)])
    memory = ExampleMemory(
        vecs.astype(np.float32), np.array([r.risky for r in rows], np.float32),
        np.array([[c in r.categories for c in SAFETY_IDS] for r in rows], np.float32),
        heads.memory.k if heads.memory is not None else 15)
    manifest = {**heads.manifest, "encoder_hash": encoder_hash,
                "library_hash": library.content_hash(),
                "memory": {**heads.manifest.get("memory", {}), "rows": len(rows),
                           "kept": len(rows)},
                "redteam": note}
    values = {f.name: getattr(heads, f.name) for f in dataclasses.fields(heads)}
    save_heads(LinearHeads(**{**values, "memory": memory, "manifest": manifest}), out)
    return {"memory_rows": len(rows), "risky": int(sum(r.risky for r in rows))}


def repair(current: Artifacts, inputs: Sequence[RepairInput], round_no: int, out: Path, *,
           llm: LLMConfig, config: RepairConfig = RepairConfig(), exports: Path | None = None,
           show_progress: bool = True, log: Log = print,
           transport: httpx.AsyncBaseTransport | None = None) -> RepairResult:
    """Build, fine-tune and update from ``current`` into ``out`` (library, encoder, index,
    judge). The build is journaled under ``out/build``, so a rerun after a kill resumes it;
    the later steps write atomically and simply run again."""
    from retriever.backends import load_backend_encoder, model_hash
    from retriever.prepare import prepare_retriever
    from retriever.service import RetrieverPaths
    from retriever.train import TrainConfig, train_retriever

    started = time.monotonic()
    tag = provenance_tag(round_no)
    base = load_library(current.library)
    items = [InputItem(key=input_key(i.text), text=i.text, source=tag, line=n)
             for n, i in enumerate(inputs, 1)]
    target = Artifacts(library=out / "library", encoder=out / "encoder", index=out / "index",
                       judge=out / "judge")
    log(f"{tag}: building guidelines for {len(items)} inputs with {llm.model}")
    built = build_library(items, target.library, llm=llm, config=config.build, base=base,
                          version=next_version(base.manifest.version), work_dir=out / "build",
                          inputs=[tag], show_progress=show_progress, transport=transport)
    library, new_ids = mark_new(built.library, base, inputs, round_no)
    library = save_library(library, target.library)

    log(f"{tag}: fine-tuning the retriever from {current.encoder}")
    tune = fine_tune_library(library, base, replay=config.replay, seed=config.seed + round_no)
    trained = train_retriever(tune, target.encoder, config=TrainConfig(
        base_model=str(current.encoder), epochs=config.epochs, batch_size=config.batch_size,
        learning_rate=config.learning_rate, hard_negatives=0, max_pairs=0,
        seed=config.seed + round_no), show_progress=show_progress)
    prepared = prepare_retriever(
        RetrieverPaths(library=target.library, index=target.index, encoder=target.encoder,
                       exports=exports or out / "exports"),
        backend=config.backend, train=False, log=log)

    log(f"{tag}: updating the judge's example memory")
    enc_hash = model_hash(prepared.backend_encoder)
    judged = update_judge(current.judge, target.judge, library,
                          load_backend_encoder(str(prepared.backend_encoder), config.backend),
                          encoder_hash=enc_hash, note={"round": round_no, "provenance": tag})
    summary = {
        "provenance": tag, "inputs": len(items), "library_version": library.manifest.version,
        "base_version": base.manifest.version, "new_guidelines": len(new_ids),
        "new_guideline_ids": new_ids, "guidelines": len(library.guidelines),
        "build": {"ok": built.stats.ok, "failed": built.stats.failed,
                  "llm_requests": built.calls.requests, "cache_hits": built.calls.cache_hits},
        "fine_tune": {"pairs": trained.counts["pairs"], "seconds": round(trained.seconds, 1)},
        "judge": judged, "seconds": round(time.monotonic() - started, 1),
    }
    return RepairResult(artifacts=target, summary=summary)


class BuilderRepair:
    """The loop's repairer: :func:`repair` into ``root/round-N`` with one builder LLM."""

    def __init__(self, root: Path, *, llm: LLMConfig, config: RepairConfig = RepairConfig(),
                 show_progress: bool = True, log: Log = print,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.root = root
        self.llm = llm
        self.config = config
        self.show_progress = show_progress
        self.log = log
        self.transport = transport

    def __call__(self, current: Artifacts, inputs: Sequence[RepairInput], round_no: int
                 ) -> RepairResult:
        return repair(current, inputs, round_no, self.root / f"round-{round_no}", llm=self.llm,
                      config=self.config, exports=self.root / "exports",
                      show_progress=self.show_progress, log=self.log, transport=self.transport)
