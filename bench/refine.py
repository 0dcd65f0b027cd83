"""Query refinement on the embedded default: refinement off / SFT refiner / RL refiner, one run.

Runs `guide-align refine evaluate` (benign and harmful test halves of ../shared/data, plus
jailbreak-wrapped harmful prompts written for the project; the target is SmolLM2 on llama.cpp,
the judge and retriever are the workspace's) and adds the training mechanics from the refiner
manifests: SFT loss, GRPO steps per minute and the reward's first and last quarter. The reward
plot of the RL run is copied next to the results.

    .venv/bin/python bench/refine.py [--n 40] [--root var/refiner] [--variants off,sft,rl]
        [--out [PATH]]

Alignment figures on a 135M target are small and noisy at this n: read them with the
mechanics (reward rising, intent kept, retrieval change), not as a headline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import add_out_argument, machine, results_path, save_results  # noqa: E402
from finetune.refine_eval import table  # noqa: E402

console = Console(width=160)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def mechanics(root: Path) -> dict[str, Any]:
    """What the SFT and RL manifests recorded about training."""
    out: dict[str, Any] = {}
    for stage in ("sft", "rl"):
        path = root / stage / "manifest.json"
        if path.is_file():
            m = json.loads(path.read_text("utf-8"))
            out[stage] = {"metrics": m.get("metrics"), "hyperparameters":
                          m.get("hyperparameters"), "reward": m.get("reward"),
                          "created": m.get("created")}
    return out


def without_examples(figures: dict[str, Any]) -> dict[str, Any]:
    """The figures less the example rewrites: their originals are evaluation prompts, which
    stay out of the repository (`refine evaluate --json` keeps them, under var/)."""
    for variant in figures.get("variants", {}).values():
        for per_set in variant.values():
            if isinstance(per_set, dict):
                per_set.pop("examples", None)
    return figures


def main() -> None:
    """Evaluate, print the table, save the figures (and the reward plot)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=40, help="prompts per set")
    ap.add_argument("--root", type=Path, default=ROOT / "var" / "refiner")
    ap.add_argument("--variants", default="off,sft,rl")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--threads", type=int, default=1)
    add_out_argument(ap)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "refine.json"
        started = time.monotonic()
        code = subprocess.call(
            [sys.executable, "-m", "cli.main", "refine", "evaluate", "--root", str(args.root),
             "--data", str(args.data), "--n", str(args.n), "--variants", args.variants,
             "--threads", str(args.threads), "--json", str(report)], cwd=ROOT, env=ENV)
        if code:
            raise SystemExit(f"`refine evaluate` failed ({code})")
        figures = without_examples(json.loads(report.read_text("utf-8")))
    results = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
               "seconds": round(time.monotonic() - started, 1),
               "mechanics": mechanics(args.root), **figures}
    console.print(table(figures))
    rl = results["mechanics"].get("rl", {}).get("metrics") or {}
    if rl:
        console.print(f"GRPO: {rl['steps']} steps at {rl['steps_per_minute']} steps/min; mean "
                      f"reward {rl['reward_first_quarter']} (first quarter) -> "
                      f"{rl['reward_last_quarter']} (last quarter)")
    saved = save_results("refine", results, args.out)
    plot = args.root / "rl" / "reward.png"
    if plot.is_file():
        dest = results_path("refine", args.out).with_name("refine_reward.png")
        shutil.copyfile(plot, dest)
        console.print(f"reward plot: {dest}")
    console.print(f"saved {saved}")


if __name__ == "__main__":
    main()
