"""Training the judge when it is missing, or stale for the serving encoder or the seed data."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guideline_lib.io import MANIFEST, load_library
from guideline_lib.schema import Library
from judge.critic import critic_hash, train_critic
from judge.data import SEEDS, AnswerRow, answer_rows, load_families, prompt_rows
from judge.model import LinearHeads, load_heads, response_logits, save_heads
from judge.train import JudgeTrainConfig, library_memory, train_heads
from retriever.backends import load_backend_encoder, model_hash

Log = Callable[[str], None]


def seeds_hash(seeds: Path = SEEDS) -> str:
    """sha256 over the seed files and the expansion code: what the training data is made of."""
    h = hashlib.sha256()
    for path in [*sorted(seeds.glob("*.json")), Path(__file__).with_name("data.py")]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def judge_is_current(path: Path, encoder_hash: str, data: str,
                     library_hash: str | None = None) -> bool:
    """True when ``path`` holds a judge trained on this encoder, these seeds and this
    library's examples."""
    try:
        manifest = json.loads((path / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return (manifest.get("encoder_hash") == encoder_hash and manifest.get("seeds_hash") == data
            and manifest.get("library_hash") == library_hash)


def ensure_judge(path: Path, encoder_dir: Path, backend: str, *,
                 config: JudgeTrainConfig | None = None, seeds: Path = SEEDS,
                 library: Path | None = None, log: Log = print) -> bool:
    """Train and save the judge for the encoder at ``encoder_dir`` (with the linked examples
    of the ``library`` as its kNN memory) unless a current one is at ``path``; True when it
    trained."""
    enc_hash, data = model_hash(encoder_dir), seeds_hash(seeds)
    lib = load_library(library) if library is not None else None
    # loading checked the manifest's hash against the content; reuse it rather than rehash
    lib_hash = (lib.manifest.content_hash or lib.content_hash()) if lib is not None else None
    if judge_is_current(path, enc_hash, data, lib_hash):
        return attach_critic(path, encoder_dir, backend, seeds=seeds, log=log)
    train_judge(path, encoder_dir, backend, config=config, seeds=seeds, library=lib, log=log)
    return True


def train_judge(path: Path, encoder_dir: Path, backend: str, *,
                config: JudgeTrainConfig | None = None, seeds: Path = SEEDS,
                library: Library | None = None, log: Log = print) -> dict[str, Any]:
    """Train the judge on the seed families (and ``library``'s examples as its memory) with
    the encoder at ``encoder_dir``, save it at ``path``; returns its test metrics."""
    families = load_families(seeds)
    seed = config.seed if config is not None else JudgeTrainConfig().seed
    prompts, answers = prompt_rows(families, seed=seed), answer_rows(families, seed=seed)
    log(f"training the judge on {len(prompts)} prompts and {len(answers)} answers "
        f"({len(families)} families) -> {path}")
    heads, metrics = train_heads(prompts, answers, load_backend_encoder(str(encoder_dir), backend),
                                 encoder_hash=model_hash(encoder_dir), config=config,
                                 memory=library_memory(library) if library is not None else (),
                                 progress=log)
    heads.manifest.update(seeds_hash=seeds_hash(seeds), backend=backend,
                          library_hash=library.content_hash() if library is not None else None)
    heads = _with_critic(heads, answers, encoder_dir, backend, log=log)
    save_heads(heads, path)
    risk = metrics.get("prompt_risk", {})
    log(f"judge trained in {heads.manifest['seconds']:.0f}s; test AUROC "
        f"{risk.get('auroc', float('nan')):.3f}, threshold {heads.threshold:.3f}")
    return metrics


def _with_critic(heads: LinearHeads, answers: list[AnswerRow], encoder_dir: Path, backend: str,
                 *, log: Log) -> LinearHeads:
    critic = train_critic(answers, load_backend_encoder(str(encoder_dir), backend),
                          response=functools.partial(response_logits, heads), progress=log)
    manifest = {**heads.manifest, "critic": critic.manifest}
    return dataclasses.replace(heads, critic=critic, manifest=manifest)


def attach_critic(path: Path, encoder_dir: Path, backend: str, *, seeds: Path = SEEDS,
                  log: Log = print) -> bool:
    """Train the stream critic into the current judge at ``path`` when it has none or its
    critic data changed (the judge's heads are kept); True when it trained."""
    heads = load_heads(path)
    if heads.critic is not None and heads.critic.manifest.get("critic_hash") == critic_hash():
        return False
    seed = int(heads.manifest.get("config", {}).get("seed", 13))
    answers = answer_rows(load_families(seeds), seed=seed)
    log(f"training the stream critic into {path}")
    save_heads(_with_critic(heads, answers, encoder_dir, backend, log=log), path)
    return True
