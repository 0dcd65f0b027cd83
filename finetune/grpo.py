"""What the GRPO trainings (the query refiner, the red-team attacker) share: TRL arguments, a
per-step log, the saved outputs (adapter, merged model, GGUF, step log, reward plot) and the
manifest parts that describe them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from finetune.models import ADAPTER, GGUF_FILE, MERGED, LoadedModel, file_sha256

STEP_LOG = "steps.json"
REWARD_PLOT = "reward.png"


class GRPOSettings(Protocol):
    """The fields of a training config that go into TRL's ``GRPOConfig``."""

    @property
    def max_steps(self) -> int: ...
    @property
    def num_generations(self) -> int: ...
    @property
    def max_completion_length(self) -> int: ...
    @property
    def learning_rate(self) -> float: ...
    @property
    def temperature(self) -> float: ...
    @property
    def beta(self) -> float: ...
    @property
    def seed(self) -> int: ...
    @property
    def show_progress(self) -> bool: ...


def grpo_args(config: GRPOSettings, work: Path, *, batch: int) -> Any:
    """TRL's ``GRPOConfig`` for a CPU run: log every step, save nothing into ``work``."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(work), max_steps=config.max_steps, learning_rate=config.learning_rate,
        per_device_train_batch_size=batch, num_generations=config.num_generations,
        max_completion_length=config.max_completion_length, temperature=config.temperature,
        beta=config.beta, seed=config.seed, data_seed=config.seed, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, bf16=False,
        dataloader_num_workers=0, disable_tqdm=not config.show_progress,
        gradient_checkpointing=False, shuffle_dataset=True)


def step_logger() -> tuple[Any, list[dict[str, Any]]]:
    """A trainer callback and the list it fills: one row of numeric logs per GRPO step."""
    from transformers import TrainerCallback

    rows: list[dict[str, Any]] = []

    class Log(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kw: Any) -> None:
            if logs and "reward" in logs:
                rows.append({"step": int(state.global_step),
                             **{k: v for k, v in logs.items() if isinstance(v, int | float)}})

    return Log(), rows


def plot_rewards(rows: Sequence[dict[str, Any]], out: Path, *, title: str,
                 history: Sequence[dict[str, Any]] = (), terms: Sequence[str] = ()) -> Path:
    """The mean reward per step as a PNG: with its running mean, or, given ``terms``, with
    the per-step means of those reward terms from ``history``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    rewards = [r["reward"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    if terms:
        ax.plot(steps, rewards, marker="o", label="mean reward")
        for key in terms:
            values = [h.get(key) for h in history[:len(steps)]]
            if any(v is not None for v in values):
                ax.plot(steps[:len(values)], [np.nan if v is None else v for v in values],
                        alpha=0.6, label=key)
    else:
        window = max(1, len(rewards) // 10)
        running = [float(np.mean(rewards[max(0, i - window + 1):i + 1]))
                   for i in range(len(rewards))]
        ax.plot(steps, rewards, alpha=0.4, label="mean reward of the step's completions")
        ax.plot(steps, running, label=f"running mean ({window} steps)")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("value" if terms else "reward")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def rounded_mean(values: Sequence[float]) -> float | None:
    """The mean to 4 places (None for no values)."""
    return round(float(np.mean(values)), 4) if len(values) else None


def save_grpo_run(trainer: Any, tmp: Path, *, base: LoadedModel, template: Path | None,
                  gguf_name: str, rows: Sequence[dict[str, Any]],
                  history: Sequence[dict[str, Any]], title: str,
                  terms: Sequence[str] = ()) -> str | None:
    """Write the trained adapter, the merged model (with the tokenizer), a GGUF when there is
    a ``template``, the step log (each row with its reward terms from ``history``) and, when
    a step was logged, the reward plot into ``tmp``. Returns why the GGUF export failed (None:
    it did not)."""
    from finetune.serve import GGUFExportError, export_gguf

    tuned: Any = trainer.model
    tuned.save_pretrained(str(tmp / ADAPTER))
    merged = tuned.merge_and_unload()
    merged.save_pretrained(str(tmp / MERGED))
    base.tokenizer.save_pretrained(str(tmp / MERGED))
    gguf_note = None
    if template is not None:
        try:
            export_gguf(merged, tmp / GGUF_FILE, template=template, name=gguf_name)
        except GGUFExportError as exc:
            gguf_note = str(exc)
    log = [{**row, "terms": history[i] if i < len(history) else None}
           for i, row in enumerate(rows)]
    (tmp / STEP_LOG).write_text(json.dumps(log, indent=2) + "\n", "utf-8")
    if rows:
        plot_rewards(rows, tmp / REWARD_PLOT, title=title, history=history, terms=terms)
    return gguf_note


def base_info(base: LoadedModel) -> dict[str, Any]:
    """The manifest's ``base``: the model's path and, for a file, its SHA-256."""
    return {"path": str(base.source),
            "sha256": file_sha256(base.source) if base.source.is_file() else None}


def grpo_metrics(rows: Sequence[dict[str, Any]], *, steps: int, train_seconds: float,
                 batch: int, rate_digits: int = 2) -> dict[str, Any]:
    """The manifest's ``metrics``: steps, time, completions and the mean reward of the first
    and the last quarter of the logged steps."""
    rewards = [r["reward"] for r in rows]
    quarter = max(1, len(rewards) // 4)
    return {
        "steps": steps,
        "train_seconds": round(train_seconds, 1),
        "steps_per_minute": round(steps / max(train_seconds, 1e-9) * 60, rate_digits),
        "completions": steps * batch,
        "reward_first_quarter": rounded_mean(rewards[:quarter]),
        "reward_last_quarter": rounded_mean(rewards[-quarter:]),
    }


def grpo_artifacts(tmp: Path, *, gguf_note: str | None, plotted: bool) -> dict[str, Any]:
    """The manifest's ``artifacts``: the file names written by ``save_grpo_run``."""
    return {"adapter": ADAPTER, "merged": MERGED,
            "gguf": GGUF_FILE if (tmp / GGUF_FILE).exists() else None,
            "gguf_note": gguf_note, "steps": STEP_LOG,
            "reward_plot": REWARD_PLOT if plotted else None}
