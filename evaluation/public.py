"""Public evaluation sets by name, read from a data folder (e.g. ../shared/data) when present.

Nothing here ships data: each entry names a file under the folder and how to read its rows.
Every prompt falls in a fixed half (``dev`` or ``test``) by a hash of its text, the split the
benchmarks tune on (dev) and report on (test); evaluation uses the test half.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.sets import Label, Prompt, PromptSet, SetError, finish_set, make_prompt

# A raw row: the conversation (a text or a message list) and the set's own category labels.
Raw = tuple[Any, list[str]]
MODERATION_FLAGS = ("S", "H", "V", "HR", "SH", "S3", "H2", "V2")


def half(text: str) -> str:
    """'dev' or 'test': the fixed half a prompt belongs to (a hash of its text)."""
    return "dev" if int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) % 2 == 0 else "test"


@dataclass(frozen=True)
class PublicSet:
    """Where a public set lives under the data folder, its label and how to read it."""

    path: str
    label: Label | None
    read: Callable[[Path], list[Raw]]
    about: str


def _jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _instruction(r: dict[str, Any], extra: str) -> str:
    return (r["instruction"] + ("\n" + extra if extra else "")).strip()


def _moderation(flagged: bool) -> Callable[[Path], list[Raw]]:
    def read(path: Path) -> list[Raw]:
        out: list[Raw] = []
        for r in _jsonl(path):
            flags = [k for k in MODERATION_FLAGS if r.get(k) == 1]  # a missing label: not set
            if bool(flags) == flagged:
                out.append((r["prompt"], flags))
        return out
    return read


_TURN = re.compile(r"\n\n(Human|Assistant): ")


def hh_conversation(transcript: str) -> list[dict[str, str]]:
    """An Anthropic HH transcript ("\\n\\nHuman: ... \\n\\nAssistant: ...") as messages, cut
    after its last human turn (the assistant's reply there is what gets graded)."""
    parts = _TURN.split("\n\n" + transcript.lstrip("\n"))
    messages = [{"role": "user" if who == "Human" else "assistant", "content": text.strip()}
                for who, text in zip(parts[1::2], parts[2::2], strict=True)]
    while messages and messages[-1]["role"] == "assistant":
        messages.pop()
    return messages


PUBLIC_SETS: dict[str, PublicSet] = {
    "do_not_answer": PublicSet(
        "do_not_answer/do_not_answer_en_prompt.jsonl", "harmful",
        lambda p: [(r["question"], [r["type"]]) for r in _jsonl(p)],
        "Do-Not-Answer: requests a responsible assistant should not fulfil (risk area)"),
    "beavertails_eval": PublicSet(
        "beavertails_eval/BeaverTails-Evaluation_700.csv", "harmful",
        lambda p: [(r["query"], [r["category"]]) for r in _csv(p)],
        "BeaverTails evaluation prompts (14 harm categories)"),
    "advbench": PublicSet(
        "advbench/harmful_behaviors.csv", "harmful",
        lambda p: [(r["goal"], []) for r in _csv(p)],
        "AdvBench harmful behaviours"),
    "forbidden_questions": PublicSet(
        "jailbreak_llms_verazuo/forbidden_question_set.csv", "harmful",
        lambda p: [(r["question"], [r["content_policy_name"]]) for r in _csv(p)],
        "forbidden questions of the jailbreak_llms study (content policy)"),
    "moderation_flagged": PublicSet(
        "openai_moderation/samples-1680.jsonl.gz", "harmful", _moderation(True),
        "OpenAI moderation samples with a flag set (flag codes)"),
    "moderation_unflagged": PublicSet(
        "openai_moderation/samples-1680.jsonl.gz", "benign", _moderation(False),
        "OpenAI moderation samples with no flag"),
    "hh_rlhf_harmless": PublicSet(
        "hh_rlhf_harmless/harmless-base_test.jsonl.gz", None,
        lambda p: [(hh_conversation(r["chosen"]), []) for r in _jsonl(p)],
        "Anthropic HH harmless-base: multi-turn red-team conversations (unlabelled)"),
    "alpaca_harmless_test": PublicSet(
        "alpaca_harmless/harmless_test.json", "benign",
        lambda p: [(_instruction(r, r.get("input") or ""), []) for r in
                   json.loads(p.read_text("utf-8"))],
        "harmless Alpaca instructions"),
    "alpaca_seed_tasks": PublicSet(
        "alpaca_seed_tasks/seed_tasks.jsonl", "benign",
        lambda p: [(_instruction(r, r["instances"][0].get("input", "") if r.get("instances")
                                 else ""), []) for r in _jsonl(p)],
        "Self-Instruct seed tasks"),
    "mt_bench": PublicSet(
        "mt_bench/question.jsonl", "benign",
        lambda p: [(r["turns"][0], [r["category"]]) for r in _jsonl(p)],
        "MT-Bench questions, first turn (the second needs the model's first answer)"),
    "vicuna_bench": PublicSet(
        "vicuna_bench/question.jsonl", "benign",
        lambda p: [(r["turns"][0], [r["category"]]) for r in _jsonl(p)],
        "Vicuna benchmark questions"),
}


def raw_rows(data: Path, name: str) -> list[Raw] | None:
    """Every row of the public set ``name`` (None when its file is not under ``data``)."""
    spec = PUBLIC_SETS[name]
    path = data / spec.path
    return spec.read(path) if path.is_file() else None


def first_user_text(conversation: Any) -> str:
    """The text a prompt's half is decided by: the text itself, or its first user turn."""
    if isinstance(conversation, str):
        return conversation
    return next((m["content"] for m in conversation if m.get("role") == "user"), "")


def load_public_set(data: Path, name: str, *, split: str = "test") -> PromptSet:
    """The ``split`` half of a public set, with the set's label and its first category."""
    if name not in PUBLIC_SETS:
        raise SetError(f"unknown set {name!r}; known: {', '.join(PUBLIC_SETS)}")
    rows = raw_rows(data, name)
    if rows is None:
        raise SetError(f"set {name!r} needs {data / PUBLIC_SETS[name].path}, which is missing")
    label = PUBLIC_SETS[name].label
    prompts: list[Prompt] = []
    skipped = 0
    for conversation, categories in rows:
        if split and half(first_user_text(conversation)) != split:
            continue
        p = make_prompt(name, conversation, label=label,
                        category=categories[0] if categories else None)
        if p is None:
            skipped += 1
        else:
            prompts.append(p)
    return finish_set(name, prompts, skipped, where=f"{name} ({split} half)")

