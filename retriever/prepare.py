"""First-start preparation: train the default retriever when none matches the library."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from guideline_lib.io import load_library
from retriever.service import RetrieverPaths, backend_encoder, resolve_encoder
from retriever.train import MANIFEST, TrainConfig, train_retriever

log = logging.getLogger(__name__)


def trained_encoder_is_current(encoder: Path, library_hash: str) -> bool:
    """True when ``encoder`` holds a model trained on the library with ``library_hash``."""
    manifest = encoder / MANIFEST
    if not manifest.is_file():
        return False
    return json.loads(manifest.read_text("utf-8")).get("library_hash") == library_hash


def ensure_trained_encoder(library_path: Path, encoder: Path,
                           config: TrainConfig | None = None) -> Path:
    """Train (cached) the retriever for the library unless a current one is already there.

    A lock file beside ``encoder`` makes a second process (another `up`, a test run) wait for
    the first one's training and reuse it instead of training the same model again.
    """
    from filelock import FileLock

    library = load_library(library_path)
    if trained_encoder_is_current(encoder, library.content_hash()):
        return encoder
    encoder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(encoder.parent / f".{encoder.name}.lock"))
    if lock.is_locked:
        print(f"waiting for another process training {encoder}")
    with lock:
        if trained_encoder_is_current(encoder, library.content_hash()):
            return encoder
        print(f"training the retriever on {library_path} -> {encoder} (first start only)")
        result = train_retriever(library, encoder, config=config)
    print(f"retriever trained in {result.seconds:.0f}s; held-out before {result.before} "
          f"after {result.after}")
    return encoder


def ensure_encoder_backend(paths: RetrieverPaths, backend: str) -> Path:
    """Export (cached) the ``backend`` variant of the resolved encoder unless it is current."""
    from retriever.backends import derived_path, get_backend, is_current

    source = resolve_encoder(paths)
    if get_backend(backend).export is not None:
        target = derived_path(source, backend, paths.exports_dir)
        if not is_current(target, source, backend):
            print(f"exporting the {backend} encoder from {source} -> {target}")
    return backend_encoder(paths, backend)
