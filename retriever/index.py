"""FAISS inner-product index over normalised guideline vectors, with a checked manifest."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from guideline_lib.io import MANIFEST as MANIFEST_FILE
from guideline_lib.io import atomic_directory
from guideline_lib.schema import Library, utc_now
from retriever.encoder import Encoder

IndexType = Literal["auto", "flat", "hnsw", "ivfflat", "ivfsq8", "ivfpq"]
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.json"
ADD_BATCH = 65536  # rows added (and embedded) per step of a build
# `auto` picks exact search up to this many guidelines and IVF-Flat above (see docs/scale.md)
AUTO_FLAT_MAX = 20_000
AUTO_NLIST_MAX = 2048  # k-means cost of the build grows with the number of lists

log = logging.getLogger(__name__)


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
    # IVF: re-rank refine_k * k candidates on the full vectors (faiss.IndexRefineFlat); 0: off
    refine_k: int = 0
    shards: int = 1  # index files split by row (id) range; search merges their top-k


def auto_config(n: int) -> IndexConfig:
    """The index `auto` builds for ``n`` guidelines: exact search while it stays fast, else
    IVF-Flat, which held recall@10 >= 0.95 under 2 ms of CPU per query at 100 k and 1 M
    embedded guideline texts (bench/index_scale.py) and builds several times faster than HNSW."""
    if n <= AUTO_FLAT_MAX:
        return IndexConfig(kind="flat")
    nlist = min(int(4 * np.sqrt(n)), AUTO_NLIST_MAX)
    return IndexConfig(kind="ivfflat", ivf_nlist=nlist,
                       ivf_nprobe=16 if nlist >= AUTO_NLIST_MAX else 32)


def resolve_config(config: IndexConfig, n: int) -> IndexConfig:
    """``config`` with ``auto`` replaced by the kind and parameters chosen for ``n`` rows."""
    if config.kind != "auto":
        return config
    return replace(auto_config(n), shards=config.shards)


def _nlist(config: IndexConfig, n: int) -> int:
    nlist = config.ivf_nlist or max(1, int(4 * np.sqrt(n)))
    return min(nlist, max(1, n // 39))


def empty_faiss_index(train: np.ndarray, n: int, config: IndexConfig) -> Any:
    """An empty FAISS index for ``n`` rows, trained on ``train`` (IVF kinds) and ready to add."""
    import faiss

    dim = train.shape[1]
    index: Any
    if config.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if config.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        index.hnsw.efSearch = config.hnsw_ef_search
        return index
    if config.kind not in ("ivfflat", "ivfsq8", "ivfpq"):
        raise IndexLoadError(f"unknown index type {config.kind!r}")
    nlist = min(_nlist(config, n), max(1, len(train) // 39))
    quantizer = faiss.IndexFlatIP(dim)
    ip = faiss.METRIC_INNER_PRODUCT
    if config.kind == "ivfflat" or len(train) < 256:
        # PQ codebooks need at least 2**nbits training points; tiny libraries get IVF-Flat.
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
    elif config.kind == "ivfsq8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist,
                                              faiss.ScalarQuantizer.QT_8bit, ip)
    else:
        pq_m = config.pq_m or max(1, dim // 8)
        nbits = 8 if len(train) >= 256 * 39 else 4
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, nbits, ip)
    index.nprobe = min(config.ivf_nprobe, nlist)
    if config.refine_k:
        index = faiss.IndexRefineFlat(index)
        index.k_factor = float(config.refine_k)
    index.train(train)
    return index


def training_sample(vectors: np.ndarray, config: IndexConfig) -> np.ndarray:
    """The rows IVF kinds train on: all of a small set, else a fixed random 64 per list."""
    if config.kind not in ("ivfflat", "ivfsq8", "ivfpq"):
        return vectors[:1]
    want = max(64 * _nlist(config, len(vectors)), 256 * 39)
    if len(vectors) <= want:
        return vectors
    rows = np.sort(np.random.default_rng(0).choice(len(vectors), want, replace=False))
    return np.ascontiguousarray(vectors[rows])


def add_in_batches(index: Any, vectors: np.ndarray, *, desc: str = "indexing") -> None:
    """Add ``vectors`` in batches of ADD_BATCH rows, with a progress bar on a terminal."""
    from tqdm import tqdm

    with tqdm(total=len(vectors), desc=desc, unit="vec", disable=None) as bar:
        for start in range(0, len(vectors), ADD_BATCH):
            chunk = vectors[start:start + ADD_BATCH]
            index.add(np.ascontiguousarray(chunk, dtype=np.float32))
            bar.update(len(chunk))


def make_faiss_index(vectors: np.ndarray, config: IndexConfig) -> Any:
    """Build (and train, for IVF kinds) a FAISS index holding ``vectors`` in row order; with
    ``config.shards`` > 1, a ShardedIndex of row ranges sharing one trained quantizer."""
    from retriever.shards import make_sharded

    config = resolve_config(config, len(vectors))
    empty = empty_faiss_index(training_sample(vectors, config), len(vectors), config)
    if config.shards > 1:
        return make_sharded(empty, vectors, config.shards)
    add_in_batches(empty, vectors)
    return empty


def read_faiss(path: Path | str, *, mmap: bool = True) -> Any:
    """``faiss.read_index``, memory-mapped when ``mmap`` so processes share one copy of the
    vectors (flat codes, HNSW storage, IVF lists); a plain read if this FAISS cannot map it."""
    import faiss

    if mmap:
        try:
            return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError as exc:
            log.info("%s: cannot memory-map (%s); reading it into memory", path,
                     str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return faiss.read_index(str(path))


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
    """Embed every guideline of ``library`` (in batches, with progress) and index it."""
    from tqdm import tqdm

    config = config or IndexConfig()
    texts = [g.text for g in library.guidelines]
    if not texts:
        raise IndexLoadError("library has no guidelines to index")
    parts = [encoder.encode(texts[i:i + ADD_BATCH])
             for i in tqdm(range(0, len(texts), ADD_BATCH), desc="embedding", unit="batch",
                           disable=None)]
    vectors = parts[0] if len(parts) == 1 else np.concatenate(parts)
    built = resolve_config(config, len(texts))
    index = make_faiss_index(vectors, built)
    manifest = {
        "created": utc_now(),
        "encoder_path": str(encoder_path),
        "encoder_hash": encoder_hash,
        "dim": int(vectors.shape[1]),
        "metric": "inner_product",
        "normalised": True,
        "index_type": built.kind,
        "index_params": asdict(config),  # as asked (`auto` is chosen again on a rebuild)
        "index_built": asdict(built),
        "count": len(texts),
        "library_name": library.manifest.name,
        "library_version": library.manifest.version,
        "library_hash": library.content_hash(),
    }
    return LoadedIndex(index=index, ids=[g.id for g in library.guidelines], manifest=manifest)


def save_index(loaded: LoadedIndex, path: Path | str) -> None:
    """Write the index directory atomically (one file per shard for a ShardedIndex)."""
    import faiss

    from retriever.shards import ShardedIndex, write_shards

    with atomic_directory(Path(path)) as tmp:
        manifest = dict(loaded.manifest)
        if isinstance(loaded.index, ShardedIndex):
            manifest["shards"] = write_shards(loaded.index, tmp)
        else:
            manifest.pop("shards", None)
            faiss.write_index(loaded.index, str(tmp / INDEX_FILE))
        (tmp / IDS_FILE).write_text(json.dumps(loaded.ids), encoding="utf-8")
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")


def load_index(
    path: Path | str,
    *,
    library_hash: str | None = None,
    encoder_hash: str | None = None,
    mmap: bool = True,
) -> LoadedIndex:
    """Read an index directory, refusing one built from another library or encoder.

    With ``mmap`` the index files are memory-mapped read-only, so worker processes serving the
    same directory share one copy in the page cache.
    """
    from retriever.shards import read_shards

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
        if manifest.get("shards"):
            index = read_shards(path, manifest["shards"], mmap=mmap)
        else:
            index = read_faiss(path / INDEX_FILE, mmap=mmap)
        ids = json.loads((path / IDS_FILE).read_text("utf-8"))
    except (RuntimeError, OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError,
            TypeError, ValueError) as exc:
        raise IndexLoadError(f"{path}: corrupt index files ({type(exc).__name__}: {exc})") from None
    if not isinstance(ids, list):
        raise IndexLoadError(f"{path}: {IDS_FILE} is not a list")
    if index.ntotal != len(ids):
        raise IndexLoadError(f"{path}: index holds {index.ntotal} vectors but {len(ids)} ids")
    return LoadedIndex(index=index, ids=ids, manifest=manifest)
