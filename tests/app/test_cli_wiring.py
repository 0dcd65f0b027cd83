"""The architecture rules of docs/architecture.md, checked on the source: imports go one way,
nothing below the command line and the app factory reads the environment or a hard-coded
`var`, and every package is installed and copied into the image."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "cli", "guide", "guideline_lib", "judge", "retriever", "finetune",
            "evaluation", "redteam", "scale")
# Where the process starts: these may read the environment.
EDGES = {"cli", "app/main.py"}


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imported_packages(package: str) -> set[str]:
    found: set[str] = set()
    for path in _sources(package):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
    return found


def test_imports_go_one_way():
    # cli -> app, finetune -> guide -> judge -> retriever -> guideline_lib; nothing imports
    # app or cli.
    assert not {"app", "cli", "guide", "judge", "retriever", "finetune"} & _imported_packages(
        "guideline_lib")
    assert not {"app", "cli", "guide", "judge", "finetune"} & _imported_packages("retriever")
    assert not {"app", "cli", "guide", "finetune"} & _imported_packages("judge")
    assert not {"app", "cli", "finetune"} & _imported_packages("guide")
    assert not {"app", "cli"} & _imported_packages("finetune")
    # the eval harness talks to gateways over HTTP and sits beside finetune
    assert not {"app", "cli", "finetune"} & _imported_packages("evaluation")
    assert "cli" not in _imported_packages("app")
    # the Ray engine sits above the stages it runs; only the command line imports it
    assert not {"app", "cli"} & _imported_packages("scale")
    assert not any("scale" in _imported_packages(p) for p in PACKAGES if p not in ("cli", "scale"))


def test_nothing_below_the_edges_reads_the_environment_or_a_var_literal():
    offenders = []
    for package in PACKAGES:
        for path in _sources(package):
            rel = path.relative_to(ROOT).as_posix()
            if rel.split("/")[0] in EDGES or rel in EDGES:
                continue
            text = path.read_text("utf-8")
            patterns = [r"os\.environ", r"getenv"]
            if rel != "guide/workspace.py":  # the one owner of the default artifact paths
                patterns += [r"Path\(\s*[\"']var", r"[\"']var[\"']\s*/"]
            for pattern in patterns:
                if re.search(pattern, text):
                    offenders.append(f"{rel}: {pattern}")
    assert offenders == []


def test_every_package_is_installed_and_copied_into_the_image():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    installed = set(project["tool"]["setuptools"]["packages"])
    assert installed == set(PACKAGES)
    assert set(project["tool"]["mypy"]["packages"]) == set(PACKAGES)
    copied = set(re.findall(r"^COPY (\w+) ", (ROOT / "Dockerfile").read_text(), re.M))
    assert set(PACKAGES) <= copied


def test_library_build_merges_with_the_retrievers_encoder():
    from cli.library import merge_encoder

    encoder = merge_encoder(None)
    assert encoder is not None
    vectors = encoder.encode(["kill a stuck process", "terminate a hung process"])
    assert vectors.shape[0] == 2
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
