"""The red-team report: per-round figures as JSON, a rich table and a plot across rounds."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guideline_lib.io import atomic_write_text
from guideline_lib.journal import Journal
from guideline_lib.schema import utc_now
from redteam.loop import JOURNAL, summarise_journal

# (metric key, label) of the columns and the plotted lines
COLUMNS = (("asr_repair", "ASR repair goals"), ("asr_holdout_goals", "ASR held-out goals"),
           ("asr_holdout_tactics", "ASR held-out tactics"),
           ("detection_miss_rate", "detection miss"), ("unsafe_rate", "unsafe answers"),
           ("over_trigger", "benign over-trigger"), ("self_bleu", "Self-BLEU"),
           ("pairwise_similarity", "pairwise sim."), ("intent_similarity", "intent sim."))


def collect(run_dir: Path) -> dict[str, Any]:
    """The report data of a run directory, read from its journal."""
    records = list(Journal(run_dir / JOURNAL).records())
    rounds = sorted((r for r in records if r["key"].startswith("round:")),
                    key=lambda r: r["round"])
    repairs = {r["round"]: r for r in records if r["key"].startswith("repair:")}
    manifest_path = run_dir / "run.json"
    manifest = json.loads(manifest_path.read_text("utf-8")) if manifest_path.is_file() else {}
    rows = []
    for r in rounds:
        rep = repairs.get(r["round"], {})
        summary = rep.get("summary", {})
        rows.append({"round": r["round"], "library_version": _version(r["artifacts"]),
                     "attacks": r["metrics"].get("attacks"), "n": r["metrics"].get("n"),
                     **{k: r["metrics"].get(k) for k, _ in COLUMNS},
                     "metrics": r["metrics"], "budget": r["budget"], "seconds": r["seconds"],
                     "repair": {"skipped": rep.get("skipped"),
                                "inputs": summary.get("inputs"),
                                "new_guidelines": summary.get("new_guidelines"),
                                "library_version": summary.get("library_version"),
                                "retrieved_new": rep.get("retrieved_new"),
                                "seconds": summary.get("seconds")} if rep else None})
    return {"tool": "guide-align redteam run", "created": utc_now(), "run": manifest,
            "rounds": rows, "journal": summarise_journal(run_dir / JOURNAL)}


def _version(artifacts: dict[str, str]) -> str | None:
    try:
        data = json.loads((Path(artifacts["library"]) / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError, KeyError):
        return None
    return str(data.get("version"))


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def terminal_table(data: dict[str, Any]) -> Any:
    """A rich table: one row per round."""
    from rich.table import Table

    table = Table(title="red-team rounds")
    table.add_column("round", justify="right")
    table.add_column("library")
    table.add_column("attacks", justify="right")
    for _, label in COLUMNS:
        table.add_column(label, justify="right")
    table.add_column("repaired (new guidelines)", justify="right")
    for row in data["rounds"]:
        rep = row.get("repair") or {}
        table.add_row(str(row["round"]), str(row.get("library_version") or "-"),
                      _fmt(row.get("attacks")),
                      *[_fmt(row.get(k)) for k, _ in COLUMNS],
                      "-" if not rep or rep.get("skipped") else
                      f"{rep.get('inputs')} ({rep.get('new_guidelines')})")
    return table


def plot(data: dict[str, Any], path: Path) -> Path:
    """Attack success, detection misses, over-triggering and diversity across rounds (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["rounds"]
    xs = [r["round"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in COLUMNS[:6]:
        ys = [r.get(key) for r in rows]
        if any(y is not None for y in ys):
            left.plot(xs, [float("nan") if y is None else y for y in ys], marker="o",
                      label=label)
    left.set(title="attack success and over-triggering", xlabel="round", ylabel="rate",
             ylim=(-0.02, 1.02))
    left.legend(fontsize=8)
    for key, label in COLUMNS[6:]:
        ys = [r.get(key) for r in rows]
        if any(y is not None for y in ys):
            right.plot(xs, [float("nan") if y is None else y for y in ys], marker="s",
                       label=label)
    right.set(title="attack diversity and intent (lower similarity: more diverse)",
              xlabel="round", ylabel="score", ylim=(-0.02, 1.02))
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xticks(xs, [f"{r['round']}\n({r.get('attacks')} attacks)" for r in rows])
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(run_dir: Path, out: Path | None = None) -> tuple[dict[str, Any], list[Path]]:
    """``report.json``, ``report.png`` and ``journal_summary.json`` in ``out`` (default: the
    run directory); returns the data and the paths."""
    out = out or run_dir
    data = collect(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json", out / "journal_summary.json"]
    atomic_write_text(paths[0], json.dumps(data, indent=2) + "\n")
    atomic_write_text(paths[1], json.dumps(data["journal"], indent=2) + "\n")
    if data["rounds"]:
        paths.append(plot(data, out / "report.png"))
    return data, paths


def headline(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per round: the figures the closing note quotes."""
    return [f"round {r['round']}: ASR repair {_fmt(r.get('asr_repair'))}, held-out "
            f"{_fmt(r.get('asr_holdout_goals'))}, detection miss "
            f"{_fmt(r.get('detection_miss_rate'))}, over-trigger {_fmt(r.get('over_trigger'))}"
            for r in rows]
