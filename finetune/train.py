"""LoRA SFT of a causal LM on an exported set: assistant-only loss, the base's chat template."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from finetune.chat import Encoded, encode_conversation
from finetune.export import Messages, data_hash
from finetune.models import (
    ADAPTER,
    GGUF_FILE,
    MANIFEST,
    MERGED,
    LoadedModel,
    file_sha256,
    set_threads,
)
from finetune.serve import GGUFExportError, check_gguf_template, export_gguf
from guideline_lib.io import atomic_directory
from guideline_lib.schema import utc_now

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainConfig:
    """LoRA and optimisation settings; the defaults fit ~200 short examples on 2 CPU cores."""

    epochs: float = 2.0
    learning_rate: float = 3e-4
    batch_size: int = 4
    grad_accum: int = 2
    max_length: int = 384
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ALL_LINEAR
    # LoRA on the last n decoder layers only: backward stops below them, which halves a CPU step
    # on SmolLM2-135M (30 layers); 0 puts LoRA on every layer.
    lora_layers: int = 12
    warmup_ratio: float = 0.05
    max_steps: int = -1
    seed: int = 13
    threads: int = 0
    bf16: bool = False
    use_cpu: bool = True
    gguf: bool = True  # also write model.gguf when a GGUF template is known
    show_progress: bool = True


@dataclass(frozen=True)
class TrainResult:
    """Where the tuned model went and what training measured."""

    output: Path
    manifest: dict[str, Any]
    seconds: float


def encode_split(conversations: Sequence[Messages], tokenizer: Any, *, max_length: int
                 ) -> tuple[list[Encoded], int]:
    """Encoded conversations, and how many were dropped for having no assistant token left."""
    kept = []
    for messages in conversations:
        enc = encode_conversation(tokenizer, messages, max_length=max_length)
        if enc.trained:
            kept.append(enc)
    return kept, len(conversations) - len(kept)


def _dataset(encoded: Sequence[Encoded]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [e.input_ids for e in encoded],
                              "labels": [e.labels for e in encoded]})


def lora_config(config: TrainConfig, *, n_layers: int) -> Any:
    """The peft LoRA configuration for a model with ``n_layers`` decoder layers."""
    from peft import LoraConfig

    layers = None
    if 0 < config.lora_layers < n_layers:
        layers = list(range(n_layers - config.lora_layers, n_layers))
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=list(config.target_modules),
                      layers_to_transform=layers, bias="none", task_type="CAUSAL_LM")


def build_trainer(base: LoadedModel, splits: dict[str, list[Messages]], *, config: TrainConfig,
                  work_dir: Path) -> Any:
    """An SFTTrainer over pre-tokenized data whose labels mask everything but assistant turns."""
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(config.seed)
    tok = base.tokenizer
    train, _ = encode_split(splits["train"], tok, max_length=config.max_length)
    val, _ = encode_split(splits.get("validation", []), tok, max_length=config.max_length)
    if not train:
        raise ValueError("no training example has an assistant token within max_length")
    args = SFTConfig(
        output_dir=str(work_dir), num_train_epochs=config.epochs, max_steps=config.max_steps,
        learning_rate=config.learning_rate, per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        lr_scheduler_type="cosine", warmup_steps=config.warmup_ratio, seed=config.seed,
        data_seed=config.seed, max_length=config.max_length,
        train_sampling_strategy="group_by_length", gradient_checkpointing=False,
        bf16=config.bf16, use_cpu=config.use_cpu, save_strategy="no", eval_strategy="no",
        report_to="none", logging_steps=5, dataloader_num_workers=0,
        disable_tqdm=not config.show_progress, dataset_num_proc=None,
    )
    n_layers = int(base.model.config.num_hidden_layers)
    return SFTTrainer(model=base.model, args=args, train_dataset=_dataset(train),
                      eval_dataset=_dataset(val) if val else None, processing_class=tok,
                      peft_config=lora_config(config, n_layers=n_layers))


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("torch", "transformers", "peft", "trl"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "?"
    return out


def train_sft(
    splits: dict[str, list[Messages]],
    output: Path,
    *,
    base: LoadedModel,
    config: TrainConfig,
    data: dict[str, Any] | None = None,
    gguf_template: Path | None = None,
) -> TrainResult:
    """Fine-tune ``base`` with LoRA on ``splits``; write adapter, merged model, GGUF and manifest.

    ``data`` is the export manifest (recorded in ours); ``gguf_template`` defaults to the base's
    own GGUF file when it was loaded from one. ``base.model`` is adapted and merged in place.
    """
    started = time.monotonic()
    if config.gguf and gguf_template is not None:
        # An explicit template must fit before hours of training, not after.
        check_gguf_template(gguf_template, base.model.config)
    if config.threads:
        set_threads(config.threads)
    n_train, n_val = len(splits["train"]), len(splits.get("validation", []))
    work = Path(tempfile.mkdtemp(prefix="guide-align-train-"))
    try:
        # 1. model, data, LoRA and trainer
        trainer = build_trainer(base, splits, config=config, work_dir=work)
        n_tokens = sum(sum(x != -100 for x in row) for row in trainer.train_dataset["labels"])
        # 2. held-out loss of the base (LoRA starts as the identity)
        before = trainer.evaluate() if trainer.eval_dataset is not None else {}
        # 3. train
        fit = trainer.train()
        train_seconds = time.monotonic() - started
        # 4. held-out loss of the tuned model
        after = trainer.evaluate() if trainer.eval_dataset is not None else {}
        metrics = {
            "train_loss": round(float(fit.training_loss), 4),
            "eval_loss_before": _round(before.get("eval_loss")),
            "eval_loss_after": _round(after.get("eval_loss")),
            "steps": int(fit.global_step),
            "train_seconds": round(float(fit.metrics.get("train_runtime", 0.0)), 1),
            "train_examples": len(trainer.train_dataset),
            "train_assistant_tokens": int(n_tokens),
            "dropped_no_assistant_tokens": n_train - len(trainer.train_dataset),
            "validation_examples": n_val,
        }
        template = gguf_template or base.gguf
        # 5. save: adapter, merged model, GGUF for llama.cpp, manifest
        with atomic_directory(output) as tmp:
            tmp.chmod(0o755)  # a scratch directory is private; the model is not
            trainer.model.save_pretrained(str(tmp / ADAPTER))
            merged = trainer.model.merge_and_unload()
            merged.save_pretrained(str(tmp / MERGED))
            base.tokenizer.save_pretrained(str(tmp / MERGED))
            gguf_note: str | None = None
            if config.gguf and template is not None:
                try:
                    export_gguf(merged, tmp / GGUF_FILE, template=template,
                                name=f"{output.name} (guide-align LoRA SFT)")
                except GGUFExportError as exc:
                    gguf_note = str(exc)
            manifest = {
                "tool": "guide-align finetune train",
                "created": utc_now(),
                "base": {"path": str(base.source),
                         "sha256": file_sha256(base.source) if base.source.is_file() else None},
                "data": {"hash": data_hash(splits), "train": n_train, "validation": n_val,
                         "export": data or {}},
                "hyperparameters": {k: (list(v) if isinstance(v, tuple) else v)
                                    for k, v in asdict(config).items() if k != "show_progress"},
                "metrics": metrics,
                "artifacts": {"adapter": ADAPTER, "merged": MERGED,
                              "gguf": GGUF_FILE if (tmp / GGUF_FILE).exists() else None,
                              "gguf_template": str(template) if template else None,
                              "gguf_note": gguf_note},
                "versions": _versions(),
                "seconds": round(time.monotonic() - started, 1),
                "train_wall_seconds": round(train_seconds, 1),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return TrainResult(output=output, manifest=manifest, seconds=time.monotonic() - started)


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


def with_overrides(config: TrainConfig, **changes: Any) -> TrainConfig:
    """A copy of ``config`` with the non-None ``changes`` applied."""
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
