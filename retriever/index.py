"""FAISS inner-product index over normalised guideline vectors, with a checked manifest."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from guideline_lib.io import MANIFEST as MANIFEST_FILE
from guideline_lib.io import atomic_directory
from guideline_lib.schema import Library, utc_now
from retriever.encoder import Encoder

IndexType = Literal["flat", "hnsw", "ivfpq"]
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.json"


class IndexLoadError(Exception):
    """An index is missing, corrupt, or does not match its encoder or library."""


@dataclass(frozen=True)
class IndexConfig:
    """Which FAISS structure to build and its parameters."""

    kind: IndexType = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80  # candidates kept while linking (FAISS's own default: 40)
    hnsw_ef_search: int = 64  # candidates kept while searching; raise it for recall at scale
    ivf_nlist: int = 0  # 0: about 4 * sqrt(n)
    pq_m: int = 0  # 0: dim / 8 sub-quantizers
    ivf_nprobe: int = 16


def make_faiss_index(vectors: np.ndarray, config: IndexConfig) -> Any:
    """Build (and train, for IVF-PQ) a FAISS index holding ``vectors`` in row order."""
    import faiss

    n, dim = vectors.shape
    index: Any
    if config.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif config.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        index.hnsw.efSearch = config.hnsw_ef_search
    elif config.kind == "ivfpq":
        nlist = config.ivf_nlist or max(1, int(4 * np.sqrt(n)))
        nlist = min(nlist, max(1, n // 39))
        quantizer = faiss.IndexFlatIP(dim)
        if n < 256:
            # PQ codebooks need at least 2**nbits training points; tiny libraries get IVF-Flat.
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            pq_m = config.pq_m or max(1, dim // 8)
            nbits = 8 if n >= 256 * 39 else 4
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, nbits,
                                     faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(config.ivf_nprobe, nlist)
    else:
        raise IndexLoadError(f"unknown index type {config.kind!r}")
    index.add(vectors)
    return index


@dataclass
class LoadedIndex:
    """A FAISS index, the guideline id of each row and its manifest."""

    index: Any
    ids: list[str]
    manifest: dict[str, Any]


def build_index(
    library: Library,
    encoder: Encoder,
    *,
    encoder_path: str,
    encoder_hash: str,
    config: IndexConfig | None = None,
) -> LoadedIndex:
    """Embed every guideline of ``library`` and index it."""
    config = config or IndexConfig()
    texts = [g.text for g in library.guidelines]
    if not texts:
        raise IndexLoadError("library has no guidelines to index")
    vectors = encoder.encode(texts)
    index = make_faiss_index(vectors, config)
    manifest = {
        "created": utc_now(),
        "encoder_path": str(encoder_path),
        "encoder_hash": encoder_hash,
        "dim": int(vectors.shape[1]),
        "metric": "inner_product",
        "normalised": True,
        "index_type": config.kind,
        "index_params": asdict(config),
        "count": len(texts),
        "library_name": library.manifest.name,
        "library_version": library.manifest.version,
        "library_hash": library.content_hash(),
    }
    return LoadedIndex(index=index, ids=[g.id for g in library.guidelines], manifest=manifest)


def save_index(loaded: LoadedIndex, path: Path | str) -> None:
    """Write the index directory atomically."""
    import faiss

    with atomic_directory(Path(path)) as tmp:
        faiss.write_index(loaded.index, str(tmp / INDEX_FILE))
        (tmp / IDS_FILE).write_text(json.dumps(loaded.ids), encoding="utf-8")
        (tmp / MANIFEST_FILE).write_text(json.dumps(loaded.manifest, indent=2) + "\n", "utf-8")


def load_index(
    path: Path | str,
    *,
    library_hash: str | None = None,
    encoder_hash: str | None = None,
) -> LoadedIndex:
    """Read an index directory, refusing one built from another library or encoder."""
    import faiss

    path = Path(path)
    if not (path / MANIFEST_FILE).is_file():
        raise IndexLoadError(f"{path}: no index here (missing {MANIFEST_FILE})")
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexLoadError(f"{path}: unreadable {MANIFEST_FILE} ({exc})") from None
    if not isinstance(manifest, dict):
        raise IndexLoadError(f"{path}: {MANIFEST_FILE} is not a JSON object")
    if library_hash is not None and manifest.get("library_hash") != library_hash:
        raise IndexLoadError(
            f"{path}: index was built from library {str(manifest.get('library_hash'))[:12]}, "
            f"but the library loaded is {library_hash[:12]}; rebuild it with "
            "`guide-align retriever index`"
        )
    if encoder_hash is not None and manifest.get("encoder_hash") != encoder_hash:
        raise IndexLoadError(
            f"{path}: index was built with encoder {str(manifest.get('encoder_hash'))[:12]}, "
            f"but the encoder loaded is {encoder_hash[:12]}; rebuild it with "
            "`guide-align retriever index`"
        )
    try:
        index = faiss.read_index(str(path / INDEX_FILE))
        ids = json.loads((path / IDS_FILE).read_text("utf-8"))
    except (RuntimeError, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexLoadError(f"{path}: corrupt index files ({type(exc).__name__}: {exc})") from None
    if not isinstance(ids, list):
        raise IndexLoadError(f"{path}: {IDS_FILE} is not a list")
    if index.ntotal != len(ids):
        raise IndexLoadError(f"{path}: index holds {index.ntotal} vectors but {len(ids)} ids")
    return LoadedIndex(index=index, ids=ids, manifest=manifest)
