"""Loading causal LMs from a GGUF file, a transformers directory or a tuned-model directory."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guideline_lib.io import MANIFEST

MERGED = "merged"
ADAPTER = "adapter"
GGUF_FILE = "model.gguf"


class ModelError(Exception):
    """A model could not be located or loaded."""


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and where it came from."""

    model: Any
    tokenizer: Any
    source: Path
    gguf: Path | None  # the GGUF file it was read from, if any


def is_tuned_dir(path: Path) -> bool:
    """True for a directory written by `finetune train` (manifest + merged model)."""
    return (path / MANIFEST).is_file() and (path / MERGED).is_dir()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def set_threads(threads: int) -> None:
    """Use ``threads`` torch threads (0: every core this process may run on)."""
    import torch

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))


def load_model(path: Path | str, *, dtype: str = "float32") -> LoadedModel:
    """Load a causal LM: ``*.gguf`` (llama-architecture), an HF directory, or a tuned directory.

    A tuned directory loads its merged model. The tokenizer must carry a chat template.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = Path(path)
    if is_tuned_dir(path):
        path = path / MERGED
    if not path.exists():
        raise ModelError(f"{path}: no such model file or directory")
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype)}
    gguf: Path | None = None
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"{path}: a model file must be .gguf (or pass a directory)")
        from transformers import GgufConfig

        gguf = path
        where, kwargs["gguf_file"] = str(path.parent), path.name
        # Unpack to a plain dense model: trainable, and saved without a quantization config.
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    else:
        where = str(path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # GGUF de-quantisation draws a bar per load
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **({"gguf_file": path.name}
                                                            if gguf else {}))
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load model ({exc})") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"{path}: the tokenizer has no chat template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, source=path, gguf=gguf)

