"""Opening a prepared retriever from paths. Opening only reads: `retriever.prepare` writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from guideline_lib.io import load_library
from retriever.backends import backend_path, load_backend_encoder, model_hash
from retriever.encoder import EncoderError
from retriever.index import IndexLoadError, load_index
from retriever.search import DenseRetriever


@dataclass(frozen=True)
class RetrieverPaths:
    """Where the library, the source encoder, its exports and the index live."""

    library: Path
    index: Path
    encoder: Path  # a sentence-transformers directory (the trained retriever by default)
    exports: Path  # derived encoders (onnx, onnx-int8, static), content-addressed


def check_encoder(path: Path) -> Path:
    """``path`` if it holds a sentence-transformers model, else a clear error naming the fix."""
    if not (Path(path) / "modules.json").is_file():
        raise EncoderError(
            f"no encoder at {path}; train the default one with `guide-align prepare` (or "
            "`guide-align retriever train -o PATH`), or point GUIDE_ALIGN_ENCODER_PATH at a "
            "sentence-transformers model")
    return Path(path)


def open_retriever(paths: RetrieverPaths, *, backend: str) -> DenseRetriever:
    """Load the library, the ``backend`` encoder and the index, all already prepared.

    Nothing is trained, exported or built here; a missing or stale artifact is an error that
    names `guide-align prepare`.
    """
    library = load_library(paths.library)
    enc_path = backend_path(check_encoder(paths.encoder), backend, paths.exports)
    try:
        loaded = load_index(paths.index, library_hash=library.content_hash(),
                            encoder_hash=model_hash(enc_path))
    except IndexLoadError as exc:
        raise IndexLoadError(f"{exc} (run `guide-align prepare` to rebuild it)") from None
    return DenseRetriever(library, load_backend_encoder(str(enc_path), backend), loaded)
