"""Opening a ready retriever from paths: the one entry point the gateway and finetune use."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from guideline_lib.io import load_library
from retriever.encoder import base_model_path, directory_hash, load_encoder
from retriever.index import IndexConfig, IndexError_, build_index, load_index, save_index
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


def resolve_encoder(paths: RetrieverPaths) -> Path:
    """The encoder to use: explicit, else a trained one beside the index, else base MiniLM."""
    if paths.encoder is not None:
        return paths.encoder
    if paths.trained_encoder is not None and (paths.trained_encoder / "modules.json").exists():
        return paths.trained_encoder
    return base_model_path()


def encoder_hash(path: Path) -> str:
    """Content hash of an encoder, read from its manifest when it has one."""
    manifest = path / "guide_align_manifest.json"
    if manifest.exists():
        recorded = json.loads(manifest.read_text("utf-8")).get("encoder_hash")
        if recorded:
            return str(recorded)
    return directory_hash(path)


def open_retriever(
    paths: RetrieverPaths,
    *,
    config: SelectConfig | None = None,
    window: int = 3,
    build_missing: bool = True,
    index_config: IndexConfig | None = None,
) -> DenseRetriever:
    """Load library, encoder and index; (re)build the index when missing or stale."""
    library = load_library(paths.library)
    enc_path = resolve_encoder(paths)
    enc_hash = encoder_hash(enc_path)
    encoder = load_encoder(str(enc_path))
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
            config=index_config,
        )
        save_index(loaded, paths.index)
    return DenseRetriever(library, encoder, loaded, config=config, window=window)
