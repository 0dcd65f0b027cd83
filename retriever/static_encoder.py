"""Static-embedding encoder: per-token vectors distilled from a transformer with model2vec."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retriever.encoder import EncoderError

MODEL_FILE = "model.safetensors"


@dataclass(frozen=True)
class StaticExportConfig:
    """model2vec distillation options (defaults are model2vec's)."""

    pca_dims: int | None = 256
    sif_coefficient: float | None = 1e-4
    # tokens matching this regex are dropped from the vocabulary (model2vec's default: [unused*])
    token_remove_pattern: str | None = r"\[unused\d+\]"
    vocabulary: tuple[str, ...] = ()  # extra whole words to add to the vocabulary


class StaticEncoder:
    """A model2vec StaticModel: tokenise, average token vectors, L2-normalise."""

    def __init__(self, path: Path | str, *, batch_size: int = 1024):
        try:
            from model2vec import StaticModel
        except ImportError as exc:  # the `serve` extra brings it
            raise EncoderError(f"the static backend needs model2vec: {exc}") from exc
        self.path = Path(path)
        if not (self.path / MODEL_FILE).is_file():
            raise EncoderError(f"{self.path}: not a static encoder (run "
                               "`guide-align retriever export-encoder --backend static`)")
        self.model = StaticModel.from_pretrained(str(self.path), normalize=True)
        self._dim = int(self.model.dim)
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised embeddings, one row per text."""
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        vecs = np.asarray(self.model.encode(list(texts), batch_size=self.batch_size,
                                            show_progress_bar=False, use_multiprocessing=False),
                          dtype=np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return np.ascontiguousarray(vecs / np.maximum(norms, 1e-12), dtype=np.float32)


def distill_static(source: Path | str, out_dir: Path, *,
                   config: StaticExportConfig | None = None) -> dict[str, Any]:
    """Distil the transformer at ``source`` into a static model saved in ``out_dir``."""
    config = config or StaticExportConfig()
    try:
        from model2vec.distill import distill
    except ImportError as exc:
        raise EncoderError(f"distilling a static encoder needs model2vec and skeletoken: {exc}")\
            from exc
    # model2vec logs one line per regex-removed token; keep the export quiet
    logging.getLogger("model2vec").setLevel(logging.ERROR)
    model = distill(
        model_name=str(source), vocabulary=list(config.vocabulary) or None, device="cpu",
        pca_dims=config.pca_dims, sif_coefficient=config.sif_coefficient,
        token_remove_pattern=config.token_remove_pattern,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    return {"dim": int(model.dim), "vocabulary_size": int(model.embedding.shape[0]),
            "pca_dims": config.pca_dims, "sif_coefficient": config.sif_coefficient,
            "token_remove_pattern": config.token_remove_pattern,
            "extra_vocabulary": len(config.vocabulary)}
