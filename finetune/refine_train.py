"""Training the refiner: LoRA SFT on the project's pairs, then GRPO against the judge.

Both write a directory under the refiner root (``var/refiner/sft``, ``var/refiner/rl``) with
the adapter, the merged model, a GGUF for llama.cpp and a manifest, and point
``<root>/current.gguf`` at the newest GGUF (a symlink swapped atomically).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from finetune.export import data_hash
from finetune.grpo import REWARD_PLOT as REWARD_PLOT  # re-export
from finetune.grpo import STEP_LOG as STEP_LOG  # re-export
from finetune.grpo import (
    base_info,
    grpo_args,
    grpo_artifacts,
    grpo_metrics,
    save_grpo_run,
    step_logger,
)
from finetune.grpo import plot_rewards as plot_rewards  # re-export
from finetune.models import GGUF_FILE, MANIFEST, LoadedModel
from finetune.refine_data import RefinePair, describe, sft_splits
from finetune.refine_reward import RefineReward
from finetune.serve import check_gguf_template
from finetune.train import TrainConfig, TrainResult, train_sft
from guideline_lib.io import atomic_directory, atomic_write_text
from guideline_lib.schema import utc_now

CURRENT = "current.gguf"
# SFT defaults sized for this machine: ~80 steps of 4 short conversations.
SFT_DEFAULTS = TrainConfig(epochs=1.0, learning_rate=3e-4, batch_size=4, grad_accum=1,
                           max_length=320, max_steps=80)


@dataclass(frozen=True)
class RLConfig:
    """GRPO settings; the defaults aim at ~30 minutes on 2 CPU cores with the local target."""

    max_steps: int = 100
    prompts_per_step: int = 2
    num_generations: int = 4
    max_completion_length: int = 64
    learning_rate: float = 2e-5
    temperature: float = 0.9
    beta: float = 0.0
    seed: int = 13
    show_progress: bool = True


def point_current(root: Path, gguf: Path) -> Path:
    """Make ``root/current.gguf`` a symlink to ``gguf`` (relative, swapped atomically)."""
    link = root / CURRENT
    tmp = root / f".{CURRENT}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(gguf.resolve(), root.resolve()))
    os.replace(tmp, link)
    return link


def _update_manifest(out: Path, extra: dict[str, Any]) -> dict[str, Any]:
    manifest = {**json.loads((out / MANIFEST).read_text("utf-8")), **extra}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def train_refiner_sft(pairs: Sequence[RefinePair], root: Path, *, base: LoadedModel,
                      config: TrainConfig = SFT_DEFAULTS, dropped: dict[str, int] | None = None,
                      seed: int = 17, validation: float = 0.05,
                      gguf_template: Path | None = None) -> TrainResult:
    """LoRA SFT of ``base`` on the pairs (prompts built by the serving contract) into
    ``root/sft``; ``current.gguf`` then points at its GGUF."""
    splits = sft_splits(pairs, validation=validation, seed=seed)
    out = root / "sft"
    result = train_sft(splits, out, base=base, config=config, gguf_template=gguf_template,
                       data={"kind": "refiner pairs", **describe(pairs),
                             "dropped_by_check_refined": dict(dropped or {}), "seed": seed})
    manifest = _update_manifest(out, {"tool": "guide-align refine sft",
                                      "data_hash": data_hash(splits)})
    if (out / GGUF_FILE).is_file():
        point_current(root, out / GGUF_FILE)
    return TrainResult(output=out, manifest=manifest, seconds=result.seconds)


def rl_dataset(pairs: Sequence[RefinePair]) -> Any:
    """The GRPO prompts: the refiner's messages, the original conversation and its risk label."""
    from datasets import Dataset

    from guide.refine import refiner_messages

    return Dataset.from_list([{"prompt": refiner_messages(p.conversation),
                               "conversation": json.dumps(p.conversation, ensure_ascii=False),
                               "risky": p.risky} for p in pairs])


def train_refiner_rl(pairs: Sequence[RefinePair], root: Path, *, base: LoadedModel,
                     adapter: Path, reward: RefineReward, config: RLConfig = RLConfig(),
                     gguf_template: Path | None = None, sft_manifest: dict[str, Any] | None = None
                     ) -> TrainResult:
    """GRPO from the SFT ``adapter`` on ``base``, rewarded by ``reward``; writes ``root/rl``
    (adapter, merged model, GGUF, manifest, per-step log, reward plot)."""
    from peft import PeftModel
    from transformers import set_seed
    from trl import GRPOTrainer

    started = time.monotonic()
    template = gguf_template or base.gguf
    if template is not None:
        check_gguf_template(template, base.model.config)
    set_seed(config.seed)
    model = PeftModel.from_pretrained(base.model, str(adapter), is_trainable=True)
    batch = config.prompts_per_step * config.num_generations
    work = Path(tempfile.mkdtemp(prefix="guide-align-grpo-"))
    callback, rows = step_logger()
    try:
        trainer = GRPOTrainer(model=model, reward_funcs=[reward],
                              args=grpo_args(config, work, batch=batch),
                              train_dataset=rl_dataset(pairs), processing_class=base.tokenizer,
                              callbacks=[callback])
        fit = trainer.train()
        train_seconds = time.monotonic() - started
        steps = int(fit.global_step)
        out = root / "rl"
        with atomic_directory(out) as tmp:
            tmp.chmod(0o755)
            gguf_note = save_grpo_run(
                trainer, tmp, base=base, template=template,
                gguf_name="guide-align refiner (SFT + GRPO)", rows=rows, history=reward.history,
                title=f"refiner GRPO: {steps} steps, {config.num_generations} "
                      "generations per prompt")
            manifest = {
                "tool": "guide-align refine rl",
                "created": utc_now(),
                "base": base_info(base),
                "start_adapter": str(adapter),
                "sft": {k: (sft_manifest or {}).get(k) for k in ("data_hash", "metrics")},
                "data": {"prompts": len(pairs), **{k: v for k, v in describe(pairs).items()
                                                   if k != "pairs"}},
                "reward": {"weights": asdict(reward.weights),
                           "minimum": reward.weights.minimum,
                           "target": _target_info(reward.target)},
                "hyperparameters": {k: v for k, v in asdict(config).items()
                                    if k != "show_progress"},
                "metrics": grpo_metrics(rows, steps=steps, train_seconds=train_seconds,
                                        batch=batch),
                "artifacts": grpo_artifacts(tmp, gguf_note=gguf_note, plotted=bool(rows)),
                "seconds": round(time.monotonic() - started, 1),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if (out / GGUF_FILE).is_file():
        point_current(root, out / GGUF_FILE)
    return TrainResult(output=out, manifest=manifest, seconds=time.monotonic() - started)


def _target_info(target: Any) -> dict[str, Any]:
    return {k: getattr(target, k) for k in ("base_url", "model", "max_tokens", "temperature",
                                            "calls", "failures") if hasattr(target, k)}
