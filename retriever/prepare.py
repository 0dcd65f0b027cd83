"""Preparing a retriever's artifacts: train the encoder, export its backend, build the index.

The only place that writes them; `retriever.service.open_retriever` then only reads.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guideline_lib.io import load_library
from retriever.backends import (
    MANIFEST,
    derived_path,
    export_encoder,
    get_backend,
    is_current,
    load_backend_encoder,
    model_hash,
)
from retriever.index import (
    MANIFEST_FILE as INDEX_MANIFEST,
)
from retriever.index import IndexConfig, IndexLoadError, build_index, load_index, save_index
from retriever.service import RetrieverPaths, check_encoder
from retriever.train import TrainConfig, train_retriever

Log = Callable[[str], None]


@dataclass
class Prepared:
    """What ``prepare_retriever`` found ready and what it made."""

    encoder: Path
    backend_encoder: Path
    index: Path
    made: list[str] = field(default_factory=list)  # one line per artifact it wrote


def trained_encoder_is_current(encoder: Path, library_hash: str) -> bool:
    """True when ``encoder`` holds a model trained on the library with ``library_hash``."""
    manifest = encoder / MANIFEST
    if not manifest.is_file():
        return False
    return json.loads(manifest.read_text("utf-8")).get("library_hash") == library_hash


def ensure_trained_encoder(library_path: Path, encoder: Path,
                           config: TrainConfig | None = None, *, log: Log = print,
                           callbacks: Sequence[Any] = ()) -> bool:
    """Train the retriever for the library into ``encoder`` unless a current one is there;
    True when it trained.

    A lock file beside ``encoder`` makes a second process (another `up`, a test run) wait for
    the first one's training and reuse it instead of training the same model again.
    """
    from filelock import FileLock

    library = load_library(library_path)
    if trained_encoder_is_current(encoder, library.content_hash()):
        return False
    encoder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(encoder.parent / f".{encoder.name}.lock"))
    if lock.is_locked:
        log(f"waiting for another process training {encoder}")
    with lock:
        if trained_encoder_is_current(encoder, library.content_hash()):
            return False
        log(f"training the retriever on {library_path} -> {encoder} (first start only)")
        extra: dict[str, Any] = {"callbacks": callbacks} if callbacks else {}  # progress
        result = train_retriever(library, encoder, config=config, **extra)
    log(f"retriever trained in {result.seconds:.0f}s; held-out before {result.before} "
        f"after {result.after}")
    return True


def previous_index_config(path: Path) -> IndexConfig | None:
    """The kind and parameters an existing index was built with, so a rebuild keeps them."""
    try:
        params = json.loads((path / INDEX_MANIFEST).read_text("utf-8"))["index_params"]
        known = {f.name for f in dataclasses.fields(IndexConfig)}
        return IndexConfig(**{k: v for k, v in params.items() if k in known})
    except Exception:  # no index, or an unreadable one: the default (flat) index
        return None


def prepare_retriever(
    paths: RetrieverPaths,
    *,
    backend: str,
    train: bool,
    train_config: TrainConfig | None = None,
    index_config: IndexConfig | None = None,
    rebuild_index: bool = False,
    log: Log = print,
) -> Prepared:
    """Make every artifact ``open_retriever(paths, backend=backend)`` needs, reusing what is
    current: the trained encoder (only when ``train``: never over a model the user named), its
    ``backend`` export, and the index (rebuilt when stale, with its old kind and parameters
    unless ``index_config`` is given; ``rebuild_index`` rebuilds a current one too)."""
    made = []
    if train and ensure_trained_encoder(paths.library, paths.encoder, train_config, log=log):
        made.append(f"trained encoder {paths.encoder}")
    source = check_encoder(paths.encoder)
    enc_path = source
    if get_backend(backend).export is not None:
        enc_path = derived_path(source, backend, paths.exports)
        if not is_current(enc_path, source, backend):
            log(f"exporting the {backend} encoder from {source} -> {enc_path}")
            export_encoder(source, backend, enc_path)
            made.append(f"{backend} export {enc_path}")
    library = load_library(paths.library)
    enc_hash = model_hash(enc_path)
    try:
        if rebuild_index:
            raise IndexLoadError("rebuild asked for")
        load_index(paths.index, library_hash=library.content_hash(), encoder_hash=enc_hash)
    except IndexLoadError as exc:
        log(f"building the index at {paths.index}: {exc}")
        loaded = build_index(library, load_backend_encoder(str(enc_path), backend),
                             encoder_path=str(enc_path), encoder_hash=enc_hash,
                             config=index_config or previous_index_config(paths.index)
                             or IndexConfig(kind="auto"))
        loaded.manifest["encoder_backend"] = backend
        save_index(loaded, paths.index)
        made.append(f"index {paths.index} ({len(loaded.ids)} guidelines)")
    return Prepared(encoder=source, backend_encoder=enc_path, index=paths.index, made=made)
