"""A small judge trained on part of the project's own seed data, with the base MiniLM encoder
(the same one the small test retriever uses)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from judge.data import SEEDS

CATEGORIES = ("cybercrime", "violence", "quality_coding", "quality_knowledge")


@pytest.fixture(scope="session")
def seed_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight families of each of a few categories, as a seeds directory."""
    out = tmp_path_factory.mktemp("seeds")
    for cat in CATEGORIES:
        data = json.loads((SEEDS / f"{cat}.json").read_text("utf-8"))
        data["families"] = data["families"][:8]
        (out / f"{cat}.json").write_text(json.dumps(data), "utf-8")
    return out


@pytest.fixture(scope="session")
def small_judge(seed_subset: Path, encoder: Any) -> Any:
    """Heads trained on the subset; returns (heads, metrics, prompts, answers)."""
    from judge.data import answer_rows, load_families, prompt_rows
    from judge.train import train_heads

    families = load_families(seed_subset)
    prompts, answers = prompt_rows(families), answer_rows(families)
    heads, metrics = train_heads(prompts, answers, encoder, encoder_hash="test-hash",
                                 progress=lambda _: None)
    return heads, metrics, prompts, answers
