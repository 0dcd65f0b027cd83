"""Training the judge when it is missing, or stale for the serving encoder or the seed data."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from guideline_lib.io import MANIFEST
from judge.data import SEEDS, answer_rows, load_families, prompt_rows
from judge.model import save_heads
from judge.train import JudgeTrainConfig, train_heads
from retriever.backends import load_backend_encoder, model_hash

Log = Callable[[str], None]


def seeds_hash(seeds: Path = SEEDS) -> str:
    """sha256 over the seed files and the expansion code: what the training data is made of."""
    h = hashlib.sha256()
    for path in [*sorted(seeds.glob("*.json")), Path(__file__).with_name("data.py")]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def judge_is_current(path: Path, encoder_hash: str, data: str) -> bool:
    """True when ``path`` holds a judge trained on this encoder and these seeds."""
    try:
        manifest = json.loads((path / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return manifest.get("encoder_hash") == encoder_hash and manifest.get("seeds_hash") == data


def ensure_judge(path: Path, encoder_dir: Path, backend: str, *,
                 config: JudgeTrainConfig | None = None, seeds: Path = SEEDS,
                 log: Log = print) -> bool:
    """Train and save the judge for the encoder at ``encoder_dir`` unless a current one is at
    ``path``; True when it trained."""
    enc_hash, data = model_hash(encoder_dir), seeds_hash(seeds)
    if judge_is_current(path, enc_hash, data):
        return False
    families = load_families(seeds)
    prompts, answers = prompt_rows(families), answer_rows(families)
    log(f"training the judge on {len(prompts)} prompts and {len(answers)} answers "
        f"({len(families)} families) -> {path}")
    heads, metrics = train_heads(prompts, answers, load_backend_encoder(str(encoder_dir), backend),
                                 encoder_hash=enc_hash, config=config, progress=log)
    heads.manifest["seeds_hash"] = data
    heads.manifest["backend"] = backend
    save_heads(heads, path)
    risk = metrics.get("prompt_risk", {})
    log(f"judge trained in {heads.manifest['seconds']:.0f}s; test AUROC "
        f"{risk.get('auroc', float('nan')):.3f}, threshold {heads.threshold:.3f}")
    return True
