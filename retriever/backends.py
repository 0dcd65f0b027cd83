"""Encoder backends (torch, onnx, onnx-int8, static): registry, exports with manifests, loading."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from guideline_lib.io import atomic_directory
from guideline_lib.schema import utc_now
from retriever.encoder import (
    Encoder,
    EncoderError,
    directory_hash,
    files_signature,
    load_encoder,
)

# The manifest of every encoder directory guide-align writes (trained or exported): one name,
# one layout (``write_manifest``).
MANIFEST = "guide_align_manifest.json"
SOURCE_BACKEND = "torch"  # what a plain sentence-transformers directory is
DEFAULT_BACKEND = "onnx-int8"  # what serves by default


@dataclass(frozen=True)
class Backend:
    """How to load an encoder directory, and how to derive one from a torch model (if derived)."""

    name: str
    description: str
    load: Callable[[Path], Encoder]
    # (source dir, output dir, backend-specific options) -> details for the manifest
    export: Callable[[Path, Path, Mapping[str, Any]], dict[str, Any]] | None = None


def _load_torch(path: Path) -> Encoder:
    return load_encoder(str(path))


def _load_onnx(path: Path) -> Encoder:
    from retriever.onnx_encoder import OnnxEncoder

    return OnnxEncoder(path)


def _load_static(path: Path) -> Encoder:
    from retriever.static_encoder import StaticEncoder

    return StaticEncoder(path)


def _export_onnx(source: Path, out: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    from retriever.onnx_encoder import OnnxExportConfig, export_onnx

    return export_onnx(source, out, config=OnnxExportConfig(**{**options, "quantize": False}))


def _export_onnx_int8(source: Path, out: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    from retriever.onnx_encoder import OnnxExportConfig, export_onnx

    return export_onnx(source, out, config=OnnxExportConfig(**{**options, "quantize": True}))


def _export_static(source: Path, out: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    from retriever.static_encoder import StaticExportConfig, distill_static

    return distill_static(source, out, config=StaticExportConfig(**options))


BACKENDS: dict[str, Backend] = {
    "torch": Backend("torch", "sentence-transformers on torch (reference)", _load_torch),
    "onnx": Backend("onnx", "ONNX Runtime, fp32 export", _load_onnx, _export_onnx),
    "onnx-int8": Backend("onnx-int8", "ONNX Runtime, int8 dynamic quantisation", _load_onnx,
                         _export_onnx_int8),
    "static": Backend("static", "model2vec static embeddings distilled from the encoder",
                      _load_static, _export_static),
}


def get_backend(name: str) -> Backend:
    """The registered backend called ``name``."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise EncoderError(f"unknown encoder backend {name!r}; one of {sorted(BACKENDS)}") from None


def read_manifest(path: Path) -> dict[str, Any]:
    """The guide-align manifest of an encoder directory ({} when it has none)."""
    f = Path(path) / MANIFEST
    return dict(json.loads(f.read_text("utf-8"))) if f.is_file() else {}


def backend_of(path: Path) -> str:
    """The backend an encoder directory is for (plain sentence-transformers dirs: torch)."""
    return str(read_manifest(path).get("backend", SOURCE_BACKEND))


def model_hash(path: Path) -> str:
    """Content hash of an encoder directory, read from its manifest when it records one."""
    recorded = read_manifest(path).get("encoder_hash")
    return str(recorded) if recorded else directory_hash(path)


def derived_path(source: Path, backend: str, root: Path) -> Path:
    """Where the ``backend`` variant of ``source`` lives: content-addressed by the source hash."""
    return Path(root) / f"{backend}-{model_hash(source)[:12]}"


def is_current(path: Path, source: Path, backend: str) -> bool:
    """True when ``path`` holds the ``backend`` variant exported from ``source`` as it is now."""
    manifest = read_manifest(path)
    return (manifest.get("backend") == backend
            and manifest.get("source_encoder_hash") == model_hash(source))


def export_encoder(source: Path, backend: str, out: Path, *,
                   options: Mapping[str, Any] | None = None) -> Path:
    """Derive the ``backend`` variant of the torch encoder at ``source`` into ``out`` (atomic).

    ``options`` are fields of that backend's export config (e.g. ``pca_dims`` for static).
    """
    spec = get_backend(backend)
    if spec.export is None:
        raise EncoderError(f"backend {backend!r} uses the encoder directory as it is")
    source = Path(source)
    if backend_of(source) != SOURCE_BACKEND:
        raise EncoderError(f"{source} is already a {backend_of(source)} export; "
                           "export from the sentence-transformers directory")
    source_hash = model_hash(source)
    with atomic_directory(Path(out)) as tmp:
        details = spec.export(source, tmp, options or {})
        write_manifest(tmp, kind="export", backend=backend, source_encoder_path=str(source),
                       source_encoder_hash=source_hash, details=details)
    return Path(out)


def write_manifest(directory: Path, *, kind: str, backend: str, **fields: Any) -> dict[str, Any]:
    """Write an encoder directory's manifest: what it is (trained | export), its backend, when,
    the hash of the files that embed (the manifest itself excluded), and ``fields``."""
    manifest = {"kind": kind, "backend": backend, "created": utc_now(), **fields,
                "encoder_hash": directory_hash(directory)}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    return manifest


def backend_path(source: Path, backend: str, root: Path) -> Path:
    """The directory ``backend`` loads for the encoder ``source``: ``source`` itself, or its
    export under ``root``, which must exist and be current (`guide-align prepare` makes it)."""
    spec = get_backend(backend)
    source = Path(source)
    if spec.export is None or backend_of(source) == backend:
        if backend_of(source) != backend:
            raise EncoderError(f"{source} is a {backend_of(source)} export, not a {backend} model")
        return source
    out = derived_path(source, backend, root)
    if not is_current(out, source, backend):
        raise EncoderError(f"no current {backend} export of {source} at {out}; run "
                           "`guide-align prepare` (or `guide-align retriever export-encoder`)")
    return out


def load_backend_encoder(path: str, backend: str = DEFAULT_BACKEND) -> Encoder:
    """Load the encoder directory ``path`` with ``backend``, once per process while its files
    stay the same."""
    return _load_backend_cached(path, backend, files_signature(path))


@lru_cache(maxsize=8)
def _load_backend_cached(path: str, backend: str,
                         signature: tuple[tuple[str, int, int], ...]) -> Encoder:
    found = backend_of(Path(path))
    if found != backend:
        raise EncoderError(f"{path} is a {found} encoder, not {backend}")
    return get_backend(backend).load(Path(path))
