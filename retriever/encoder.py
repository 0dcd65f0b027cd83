"""Loading sentence encoders from a local path, offline."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class EncoderError(Exception):
    """An encoder could not be located or loaded."""


class Encoder(Protocol):
    """Texts -> L2-normalised float32 vectors."""

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def directory_hash(path: Path | str) -> str:
    """sha256 over the names and bytes of the files that define a model directory."""
    path = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel.endswith((".md", ".gitattributes")) or rel.startswith("checkpoint"):
            continue
        h.update(rel.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class SentenceTransformerEncoder:
    """A sentence-transformers model; the reference (torch) encoder path."""

    def __init__(self, path: Path | str, *, device: str = "cpu", backend: str = "torch"):
        from sentence_transformers import SentenceTransformer

        self.path = Path(path)
        if not self.path.exists():
            raise EncoderError(f"encoder path {self.path} does not exist")
        kwargs: dict[str, Any] = {"device": device}
        if backend != "torch":
            kwargs["backend"] = backend
        self.model = SentenceTransformer(str(self.path), local_files_only=True, **kwargs)
        get_dim = getattr(self.model, "get_embedding_dimension", None) \
            or self.model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise EncoderError(f"{self.path}: unknown embedding dimension")
        self._dim = int(dim)

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised embeddings, one row per text."""
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        vecs = self.model.encode(
            list(texts),
            batch_size=64,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)


def files_signature(path: Path | str) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of a model directory's files: a cheap cache key
    that changes when the model is rewritten in place (e.g. retrained into the same path)."""
    root = Path(path)
    if not root.is_dir():
        return ()
    return tuple(sorted((f.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns)
                        for f in root.rglob("*") if f.is_file() for st in [f.stat()]))


def load_encoder(path: str, backend: str = "torch") -> SentenceTransformerEncoder:
    """Load the encoder at ``path``, once per process while its files stay the same."""
    return _load_encoder_cached(path, backend, files_signature(path))


@lru_cache(maxsize=4)
def _load_encoder_cached(path: str, backend: str,
                         signature: tuple[tuple[str, int, int], ...]) -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(path, backend=backend)


def set_torch_threads(threads: int = 0) -> None:
    """Threads torch may use for encoding (0: up to 4, bounded by the cores); called once by
    whoever starts the process (the command line, the app factory)."""
    import torch

    torch.set_num_threads(threads or max(1, min(4, os.cpu_count() or 1)))
