"""The `guide-align` command wires the packages together without breaking DESIGN's import order."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def test_library_build_merges_with_the_retrievers_encoder():
    import app.cli  # noqa: F401  (installs the loader)
    from guideline_lib import build_cli

    encoder = build_cli._load_encoder(None)
    assert encoder is not None
    vectors = encoder.encode(["kill a stuck process", "terminate a hung process"])
    assert vectors.shape[0] == 2
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def _imported_packages(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
    return found


def test_imports_go_one_way():
    # DESIGN: app -> retriever -> guideline_lib; finetune -> retriever, guideline_lib;
    # nothing imports app.
    assert not {"app", "retriever", "finetune"} & _imported_packages("guideline_lib")
    assert not {"app", "finetune"} & _imported_packages("retriever")
    assert "app" not in _imported_packages("finetune")
