"""Run and export directories on disk: manifests, the generate journal, the SFT files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finetune.export import (
    FORMATS,
    SPLITS,
    ExportError,
    Messages,
    SFTSet,
    data_hash,
    dataset_card,
    from_row,
    to_row,
)
from guideline_lib.io import atomic_directory, atomic_write_text
from guideline_lib.journal import Journal
from guideline_lib.shards import SHARDS, ShardStore, merge_records

RUN_MANIFEST = "run.json"
JOURNAL = "journal.jsonl"
CACHE = "cache.sqlite"
EXPORT_MANIFEST = "export.json"
CARD = "README.md"


class RunError(Exception):
    """A run directory is missing, or was made with other settings."""


class OutputError(Exception):
    """An output directory would replace something that is not an earlier output of its kind."""


def check_output_dir(out: Path, *, marker: str, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse an output directory that would destroy data when it is replaced.

    Outputs are written by swapping in a new directory, so ``out`` may only be a new or empty
    directory, or an earlier output of the same kind (it holds ``marker``); it may not be or
    contain one of ``inputs``.
    """
    target = out.resolve()
    for source in inputs:
        src = source.resolve()
        if src == target or target in src.parents:
            raise OutputError(f"{out} is (or contains) the input {source}; choose another output "
                              "directory")
    if target.exists() and not target.is_dir():
        raise OutputError(f"{out} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not (target / marker).is_file():
        raise OutputError(f"{out} exists and is not an earlier output (no {marker}); it would be "
                          "replaced, so choose a new or empty directory")


def read_run_manifest(run: Path) -> dict[str, Any] | None:
    """The run's manifest, or None for a new run directory."""
    path = run / RUN_MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path} is not valid JSON ({exc}); it is written by `finetune "
                       "generate`, so restore it or use a new run directory") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} is not a run manifest (not a JSON object)")
    return data


def check_run(run: Path, fingerprint: str) -> dict[str, Any] | None:
    """Refuse to add answers made under other settings to an existing run; its manifest."""
    manifest = read_run_manifest(run)
    if manifest is not None and manifest.get("fingerprint") != fingerprint:
        raise RunError(
            f"{run} holds answers made with other settings (model, sampling, library, selection "
            f"or system message; fingerprint {manifest.get('fingerprint')} != {fingerprint}); "
            "use a new run directory")
    return manifest


def write_run_manifest(run: Path, manifest: dict[str, Any]) -> None:
    """Write (atomically) the run's manifest."""
    atomic_write_text(run / RUN_MANIFEST, json.dumps(manifest, indent=2) + "\n")


def open_journal(run: Path) -> Journal:
    """The run's journal of guided answers."""
    return Journal(run / JOURNAL)


def read_run(run: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A finished (or partial) run: its manifest and the latest record of each input."""
    manifest = read_run_manifest(run)
    shards = ShardStore(run / SHARDS)  # written by `finetune generate --engine ray`
    if manifest is None or not ((run / JOURNAL).is_file() or shards.shards()):
        raise RunError(f"{run}: not a generate run directory (no {RUN_MANIFEST} / {JOURNAL})")
    return manifest, merge_records(Journal(run / JOURNAL).records(), shards.records())


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_export(sft: SFTSet, out: Path, *, manifest: dict[str, Any]) -> None:
    """Write the split set in its format with export.json and the dataset card, atomically."""
    fmt = manifest["format"]
    with atomic_directory(out) as tmp:
        tmp.chmod(0o755)  # a scratch directory is private; the export is not
        files: dict[str, str] = {}
        if fmt == "hf":
            from datasets import Dataset, DatasetDict

            # An empty split has no columns and `load_from_disk` cannot read it back: leave it
            # out (read_export treats a missing split as empty).
            kept = {name: examples for name, examples in sft.splits().items() if examples}
            DatasetDict({name: Dataset.from_list([to_row(e, fmt) for e in examples])
                         for name, examples in kept.items()}).save_to_disk(str(tmp))
            files = {name: name for name in kept}
        else:
            for name, examples in sft.splits().items():
                (tmp / f"{name}.jsonl").write_text(_jsonl([to_row(e, fmt) for e in examples]),
                                                   encoding="utf-8")
                files[name] = f"{name}.jsonl"
        full = {**manifest, "files": files}
        (tmp / EXPORT_MANIFEST).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
        (tmp / CARD).write_text(dataset_card(full), encoding="utf-8")


def read_export(out: Path) -> tuple[dict[str, Any], dict[str, list[Messages]]]:
    """An exported set as conversations per split; the data hash must match its manifest."""
    path = out / EXPORT_MANIFEST
    if not path.is_file():
        raise ExportError(f"{out}: not an export directory (no {EXPORT_MANIFEST})")
    manifest = json.loads(path.read_text("utf-8"))
    fmt = manifest.get("format")
    if fmt not in FORMATS:
        raise ExportError(f"{out}: unknown format {fmt!r}")
    splits: dict[str, list[Messages]] = {}
    if fmt == "hf":
        from datasets import load_from_disk

        loaded = load_from_disk(str(out))
        for name in SPLITS:
            rows = loaded.get(name, [])
            splits[name] = [from_row(dict(r), fmt) for r in rows]
    else:
        for name in SPLITS:
            lines = (out / f"{name}.jsonl").read_text("utf-8").splitlines()
            splits[name] = [from_row(json.loads(line), fmt) for line in lines if line.strip()]
    if data_hash(splits) != manifest.get("data_hash"):
        raise ExportError(f"{out}: data does not match the hash in {EXPORT_MANIFEST}; "
                          "was a file edited? Export again.")
    return manifest, splits
