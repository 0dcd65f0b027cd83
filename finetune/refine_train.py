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
from finetune.models import ADAPTER, GGUF_FILE, MANIFEST, MERGED, LoadedModel, file_sha256
from finetune.refine_data import RefinePair, describe, sft_splits
from finetune.refine_reward import RefineReward
from finetune.serve import GGUFExportError, check_gguf_template, export_gguf
from finetune.train import TrainConfig, TrainResult, train_sft
from guideline_lib.io import atomic_directory, atomic_write_text
from guideline_lib.schema import utc_now

CURRENT = "current.gguf"
STEP_LOG = "steps.json"
REWARD_PLOT = "reward.png"
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


def _step_logger() -> tuple[Any, list[dict[str, Any]]]:
    from transformers import TrainerCallback

    rows: list[dict[str, Any]] = []

    class Log(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kw: Any) -> None:
            if logs and "reward" in logs:
                rows.append({"step": int(state.global_step),
                             **{k: v for k, v in logs.items()
                                if isinstance(v, int | float)}})

    return Log(), rows


def plot_rewards(rows: Sequence[dict[str, Any]], out: Path, *, title: str) -> Path:
    """The mean reward per step (and its running mean) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    rewards = [r["reward"] for r in rows]
    window = max(1, len(rewards) // 10)
    running = [sum(rewards[max(0, i - window + 1):i + 1]) / len(rewards[max(0, i - window + 1):
                                                                          i + 1])
               for i in range(len(rewards))]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, rewards, alpha=0.4, label="mean reward of the step's completions")
    ax.plot(steps, running, label=f"running mean ({window} steps)")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def train_refiner_rl(pairs: Sequence[RefinePair], root: Path, *, base: LoadedModel,
                     adapter: Path, reward: RefineReward, config: RLConfig = RLConfig(),
                     gguf_template: Path | None = None, sft_manifest: dict[str, Any] | None = None
                     ) -> TrainResult:
    """GRPO from the SFT ``adapter`` on ``base``, rewarded by ``reward``; writes ``root/rl``
    (adapter, merged model, GGUF, manifest, per-step log, reward plot)."""
    from peft import PeftModel
    from transformers import set_seed
    from trl import GRPOConfig, GRPOTrainer

    started = time.monotonic()
    template = gguf_template or base.gguf
    if template is not None:
        check_gguf_template(template, base.model.config)
    set_seed(config.seed)
    model = PeftModel.from_pretrained(base.model, str(adapter), is_trainable=True)
    batch = config.prompts_per_step * config.num_generations
    work = Path(tempfile.mkdtemp(prefix="guide-align-grpo-"))
    callback, rows = _step_logger()
    try:
        args = GRPOConfig(
            output_dir=str(work), max_steps=config.max_steps, learning_rate=config.learning_rate,
            per_device_train_batch_size=batch, num_generations=config.num_generations,
            max_completion_length=config.max_completion_length, temperature=config.temperature,
            beta=config.beta, seed=config.seed, data_seed=config.seed, logging_steps=1,
            save_strategy="no", report_to="none", use_cpu=True, bf16=False,
            dataloader_num_workers=0, disable_tqdm=not config.show_progress,
            gradient_checkpointing=False, shuffle_dataset=True)
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args,
                              train_dataset=rl_dataset(pairs), processing_class=base.tokenizer,
                              callbacks=[callback])
        fit = trainer.train()
        train_seconds = time.monotonic() - started
        steps = int(fit.global_step)
        out = root / "rl"
        with atomic_directory(out) as tmp:
            tmp.chmod(0o755)
            tuned: Any = trainer.model
            tuned.save_pretrained(str(tmp / ADAPTER))
            merged = tuned.merge_and_unload()
            merged.save_pretrained(str(tmp / MERGED))
            base.tokenizer.save_pretrained(str(tmp / MERGED))
            gguf_note = None
            if template is not None:
                try:
                    export_gguf(merged, tmp / GGUF_FILE, template=template,
                                name="guide-align refiner (SFT + GRPO)")
                except GGUFExportError as exc:
                    gguf_note = str(exc)
            log = [{**row, "terms": reward.history[i] if i < len(reward.history) else None}
                   for i, row in enumerate(rows)]
            (tmp / STEP_LOG).write_text(json.dumps(log, indent=2) + "\n", "utf-8")
            if rows:
                plot_rewards(rows, tmp / REWARD_PLOT,
                             title=f"refiner GRPO: {steps} steps, {config.num_generations} "
                                   "generations per prompt")
            first = [r["reward"] for r in rows[:max(1, len(rows) // 4)]]
            last = [r["reward"] for r in rows[-max(1, len(rows) // 4):]]
            manifest = {
                "tool": "guide-align refine rl",
                "created": utc_now(),
                "base": {"path": str(base.source),
                         "sha256": file_sha256(base.source) if base.source.is_file() else None},
                "start_adapter": str(adapter),
                "sft": {k: (sft_manifest or {}).get(k) for k in ("data_hash", "metrics")},
                "data": {"prompts": len(pairs), **{k: v for k, v in describe(pairs).items()
                                                   if k != "pairs"}},
                "reward": {"weights": asdict(reward.weights),
                           "minimum": reward.weights.minimum,
                           "target": _target_info(reward.target)},
                "hyperparameters": {k: v for k, v in asdict(config).items()
                                    if k != "show_progress"},
                "metrics": {
                    "steps": steps,
                    "train_seconds": round(train_seconds, 1),
                    "steps_per_minute": round(steps / max(train_seconds, 1e-9) * 60, 2),
                    "completions": steps * batch,
                    "reward_first_quarter": _mean(first),
                    "reward_last_quarter": _mean(last),
                },
                "artifacts": {"adapter": ADAPTER, "merged": MERGED,
                              "gguf": GGUF_FILE if (tmp / GGUF_FILE).exists() else None,
                              "gguf_note": gguf_note, "steps": STEP_LOG,
                              "reward_plot": REWARD_PLOT if rows else None},
                "seconds": round(time.monotonic() - started, 1),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if (out / GGUF_FILE).is_file():
        point_current(root, out / GGUF_FILE)
    return TrainResult(output=out, manifest=manifest, seconds=time.monotonic() - started)


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _target_info(target: Any) -> dict[str, Any]:
    return {k: getattr(target, k) for k in ("base_url", "model", "max_tokens", "temperature",
                                            "calls", "failures") if hasattr(target, k)}
