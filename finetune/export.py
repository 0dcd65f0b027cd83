"""Guided answers -> SFT set: the client's prompt (guidelines stripped) paired with the answer."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

from guideline_lib.schema import normalise_text

Format = Literal["openai", "sharegpt", "alpaca", "hf"]
FORMATS: tuple[str, ...] = ("openai", "sharegpt", "alpaca", "hf")
SPLITS = ("train", "validation")
Messages = list[dict[str, Any]]

_SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt"}
_ROLE_FROM_SHAREGPT = {v: k for k, v in _SHAREGPT_ROLE.items()}


class ExportError(Exception):
    """An exported set cannot be read back (unknown format, malformed row)."""


@dataclass(frozen=True)
class ExportConfig:
    """Output format, filters and the train/validation split."""

    format: Format = "openai"
    dedup: bool = False  # drop records whose normalised input or answer repeats an earlier one
    min_answer_chars: int = 1
    max_answer_chars: int = 0  # 0: no limit
    max_input_chars: int = 0  # 0: no limit
    validation: float = 0.1
    seed: int = 13


@dataclass(frozen=True)
class SFTExample:
    """One training conversation: the client's messages, then the guided answer."""

    key: str
    messages: Messages


@dataclass
class ExportStats:
    """Records read, dropped by each filter, and kept per split."""

    records: int = 0
    failed: int = 0
    empty: int = 0
    truncated: int = 0
    too_short: int = 0
    too_long: int = 0
    duplicate: int = 0
    kept: int = 0
    train: int = 0
    validation: int = 0


@dataclass(frozen=True)
class SFTSet:
    """The split SFT set and how it was filtered."""

    train: list[SFTExample]
    validation: list[SFTExample]
    stats: ExportStats = field(default_factory=ExportStats)

    def splits(self) -> dict[str, list[SFTExample]]:
        """Split name -> examples."""
        return {"train": self.train, "validation": self.validation}


def _prompt(record: dict[str, Any]) -> Messages:
    """The conversation as the client sent it, before guidelines were injected."""
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        messages = [{"role": "user", "content": str(record.get("input", ""))}]
    return [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in messages]


def filter_records(
    records: Iterable[dict[str, Any]], *, config: ExportConfig
) -> tuple[list[SFTExample], ExportStats]:
    """Usable examples in journal order: failed, empty, truncated and out-of-limit ones dropped."""
    stats = ExportStats()
    seen_inputs: set[str] = set()
    seen_answers: set[str] = set()
    kept: list[SFTExample] = []
    for record in records:
        stats.records += 1
        answer = record.get("answer")
        if record.get("status", "ok") != "ok" or not isinstance(answer, str):
            stats.failed += 1
            continue
        answer = answer.strip()
        if not answer:
            stats.empty += 1
            continue
        if record.get("finish_reason") == "length":
            stats.truncated += 1
            continue
        prompt = _prompt(record)
        prompt_chars = sum(len(m["content"]) for m in prompt)
        if len(answer) < config.min_answer_chars:
            stats.too_short += 1
            continue
        if (config.max_answer_chars and len(answer) > config.max_answer_chars) or (
            config.max_input_chars and prompt_chars > config.max_input_chars
        ):
            stats.too_long += 1
            continue
        if config.dedup:
            norm_in = normalise_text(" ".join(m["content"] for m in prompt))
            norm_out = normalise_text(answer)
            if norm_in in seen_inputs or norm_out in seen_answers:
                stats.duplicate += 1
                continue
            seen_inputs.add(norm_in)
            seen_answers.add(norm_out)
        kept.append(SFTExample(key=str(record["key"]),
                               messages=[*prompt, {"role": "assistant", "content": answer}]))
    stats.kept = len(kept)
    return kept, stats


def split_examples(
    examples: Sequence[SFTExample], *, validation: float, seed: int
) -> tuple[list[SFTExample], list[SFTExample]]:
    """A seeded train/validation split that does not depend on the order records came in."""
    ordered = sorted(examples, key=lambda e: e.key)
    random.Random(seed).shuffle(ordered)
    n_val = round(len(ordered) * validation)
    if validation > 0 and len(ordered) >= 2:
        n_val = min(max(1, n_val), len(ordered) - 1)
    return ordered[n_val:], ordered[:n_val]


def build_sft(records: Iterable[dict[str, Any]], *, config: ExportConfig) -> SFTSet:
    """Filter the generate records and split them into train and validation.

    Records are taken in key order, not journal (completion) order, so which of two duplicates
    ``--dedup`` keeps does not depend on the timing of the run.
    """
    ordered = sorted(records, key=lambda r: str(r.get("key", "")))
    examples, stats = filter_records(ordered, config=config)
    train, val = split_examples(examples, validation=config.validation, seed=config.seed)
    stats.train, stats.validation = len(train), len(val)
    return SFTSet(train=train, validation=val, stats=stats)


def to_row(example: SFTExample, fmt: Format) -> dict[str, Any]:
    """One example in an output format (``hf`` rows are OpenAI-style messages)."""
    if fmt in ("openai", "hf"):
        return {"messages": example.messages}
    if fmt == "sharegpt":
        return {"conversations": [{"from": _SHAREGPT_ROLE[m["role"]], "value": m["content"]}
                                  for m in example.messages]}
    if fmt == "alpaca":
        system = "\n\n".join(m["content"] for m in example.messages if m["role"] == "system")
        users = [m["content"] for m in example.messages if m["role"] == "user"]
        return {"instruction": "\n".join(users), "input": "",
                "output": example.messages[-1]["content"], "system": system}
    raise ExportError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")


def from_row(row: dict[str, Any], fmt: str) -> Messages:
    """An exported row back to OpenAI-style messages (the inverse of :func:`to_row`)."""
    try:
        if fmt in ("openai", "hf"):
            # ``masked``: character spans of the content that carry no loss (backtracking data)
            return [{"role": m["role"], "content": m["content"],
                     **({"masked": m["masked"]} if m.get("masked") else {})}
                    for m in row["messages"]]
        if fmt == "sharegpt":
            return [{"role": _ROLE_FROM_SHAREGPT[t["from"]], "content": t["value"]}
                    for t in row["conversations"]]
        if fmt == "alpaca":
            messages: Messages = []
            if row.get("system"):
                messages.append({"role": "system", "content": row["system"]})
            user = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
            return [*messages, {"role": "user", "content": user},
                    {"role": "assistant", "content": row["output"]}]
    except (KeyError, TypeError) as exc:
        raise ExportError(f"malformed {fmt} row ({exc!r})") from exc
    raise ExportError(f"unknown format {fmt!r}")


def data_hash(splits: dict[str, list[Messages]]) -> str:
    """sha256 over the conversations of every split, format-independent."""
    h = hashlib.sha256()
    for name in SPLITS:
        h.update(f"--{name}--\n".encode())
        for messages in splits.get(name, []):
            h.update(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS) + b"\n")
    return h.hexdigest()


def export_manifest(sft: SFTSet, *, config: ExportConfig, run: dict[str, Any],
                    served_models: Sequence[str] = ()) -> dict[str, Any]:
    """The machine-readable record of an export: format, counts, filters, sources, data hash."""
    splits = {k: [e.messages for e in v] for k, v in sft.splits().items()}
    return {
        "tool": "guide-align finetune export",
        "format": config.format,
        "counts": asdict(sft.stats),
        "filters": {k: v for k, v in asdict(config).items() if k != "format"},
        "data_hash": data_hash(splits),
        "library": run.get("library", {}),
        "model": run.get("llm", {}).get("model"),
        "served_model": ", ".join(served_models) or None,
        "run_fingerprint": run.get("fingerprint"),
    }


def dataset_card(manifest: dict[str, Any]) -> str:
    """README.md written beside the data: what it is, counts, filters and sources."""
    c, f, lib = manifest["counts"], manifest["filters"], manifest["library"] or {}
    dropped = [(k, c[k]) for k in ("failed", "empty", "truncated", "too_short", "too_long",
                                   "duplicate")]
    lines = [
        "# Guide-Align SFT set",
        "",
        "Guided answers from `guide-align finetune generate`: each input was answered with the "
        "guidelines the gateway retrieves for it in the system message. Here each input is paired "
        "with its answer **without the guidelines** (the client's own system message, if any, is "
        "kept), so a model fine-tuned on it learns to behave well without the gateway.",
        "",
        f"- format: `{manifest['format']}`",
        f"- source library: {lib.get('name', '?')} {lib.get('version', '?')} "
        f"(content hash `{lib.get('content_hash', '?')}`)",
        f"- answering model: `{manifest.get('model')}`"
        + (f" (served as `{manifest['served_model']}`)" if manifest.get("served_model") else ""),
        f"- data hash (sha256 of the conversations): `{manifest['data_hash']}`",
        "",
        "## Counts",
        "",
        "| | examples |",
        "|---|---:|",
        f"| records in the run | {c['records']} |",
        *(f"| dropped: {k.replace('_', ' ')} | {n} |" for k, n in dropped),
        f"| kept | {c['kept']} |",
        f"| train | {c['train']} |",
        f"| validation | {c['validation']} |",
        "",
        "## Filters",
        "",
        "- failed calls, empty answers and truncated answers (`finish_reason: length`) dropped",
        f"- answer length: at least {f['min_answer_chars']} characters"
        + (f", at most {f['max_answer_chars']}" if f["max_answer_chars"] else ""),
        "- input length: " + (f"at most {f['max_input_chars']} characters"
                               if f["max_input_chars"] else "no limit"),
        "- de-duplication by normalised input and answer: " + ("on" if f["dedup"] else "off"),
        f"- split: {f['validation']:.0%} validation, seed {f['seed']} "
        "(records sorted by key, then shuffled: the same run gives the same split)",
        "",
    ]
    return "\n".join(lines)
