"""Opening a ready retriever from paths: the one entry point the gateway and finetune use."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from guideline_lib.io import load_library
from retriever.backends import (
    DEFAULT_BACKEND,
    ensure_backend_encoder,
    load_backend_encoder,
    model_hash,
)
from retriever.encoder import base_model_path
from retriever.index import (
    MANIFEST_FILE,
    IndexConfig,
    IndexError_,
    build_index,
    load_index,
    save_index,
)
from retriever.search import DenseRetriever
from retriever.types import SelectConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrieverPaths:
    """Where the library, the encoder and the index live."""

    library: Path
    index: Path
    encoder: Path | None = None  # None: the trained encoder if present, else base MiniLM
    trained_encoder: Path | None = None
    exports: Path | None = None  # derived encoders (onnx, static); None: <index parent>/encoders

    @property
    def exports_dir(self) -> Path:
        """Where exported encoder variants are cached."""
        return self.exports if self.exports is not None else self.index.parent / "encoders"


def resolve_encoder(paths: RetrieverPaths) -> Path:
    """The encoder to use: explicit, else a trained one beside the index, else base MiniLM."""
    if paths.encoder is not None:
        return paths.encoder
    if paths.trained_encoder is not None and (paths.trained_encoder / "modules.json").exists():
        return paths.trained_encoder
    return base_model_path()


def encoder_hash(path: Path) -> str:
    """Content hash of an encoder, read from its manifest when it has one."""
    return model_hash(path)


def backend_encoder(paths: RetrieverPaths, backend: str = DEFAULT_BACKEND, *,
                    build: bool = True) -> Path:
    """The encoder directory ``backend`` loads: the resolved encoder or its cached export."""
    return ensure_backend_encoder(resolve_encoder(paths), backend, paths.exports_dir, build=build)


def previous_index_config(path: Path) -> IndexConfig | None:
    """The kind and parameters a stale index was built with, so a rebuild keeps them."""
    import dataclasses
    import json

    try:
        params = json.loads((path / MANIFEST_FILE).read_text("utf-8"))["index_params"]
        known = {f.name for f in dataclasses.fields(IndexConfig)}
        return IndexConfig(**{k: v for k, v in params.items() if k in known})
    except Exception:  # no index, or an unreadable one: the default (flat) index
        return None


def open_retriever(
    paths: RetrieverPaths,
    *,
    config: SelectConfig | None = None,
    window: int = 3,
    build_missing: bool = True,
    index_config: IndexConfig | None = None,
    backend: str = DEFAULT_BACKEND,
) -> DenseRetriever:
    """Load library, encoder (via ``backend``) and index; (re)build what is missing or stale.

    The index manifest records the hash of the model the backend actually runs (the ONNX or
    static export, not its source), so an index built for one backend is rebuilt for another.
    """
    library = load_library(paths.library)
    enc_path = backend_encoder(paths, backend, build=build_missing)
    enc_hash = encoder_hash(enc_path)
    encoder = load_backend_encoder(str(enc_path), backend)
    try:
        loaded = load_index(
            paths.index, library_hash=library.content_hash(), encoder_hash=enc_hash
        )
    except IndexError_ as exc:
        if not build_missing:
            raise
        log.info("building index: %s", exc)
        loaded = build_index(
            library, encoder, encoder_path=str(enc_path), encoder_hash=enc_hash,
            config=index_config or previous_index_config(paths.index),
        )
        loaded.manifest["encoder_backend"] = backend
        save_index(loaded, paths.index)
    return DenseRetriever(library, encoder, loaded, config=config, window=window)
