"""Dense retrieval: encode, FAISS search, select."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from guideline_lib.schema import Guideline, Library
from retriever.encoder import Encoder
from retriever.index import IndexError_, LoadedIndex, load_index
from retriever.query import query_views
from retriever.select import select_hits
from retriever.types import Hit, Query, SelectConfig


class DenseRetriever:
    """The library's guidelines behind an encoder and a FAISS index."""

    def __init__(
        self,
        library: Library,
        encoder: Encoder,
        index: LoadedIndex,
        *,
        config: SelectConfig | None = None,
        window: int = 3,
    ):
        by_id = library.by_id()
        missing = [i for i in index.ids if i not in by_id]
        if missing:
            raise IndexError_(f"index refers to {len(missing)} ids missing from the library")
        self.library = library
        self.encoder = encoder
        self.index = index
        self.config = config or SelectConfig()
        self.window = window
        self._rows: list[Guideline] = [by_id[i] for i in index.ids]
        self._vectors: np.ndarray | None = None

    @classmethod
    def from_paths(
        cls,
        library: Library,
        encoder: Encoder,
        index_path: Path | str,
        *,
        encoder_hash: str | None,
        config: SelectConfig | None = None,
        window: int = 3,
    ) -> DenseRetriever:
        """Load a saved index, checking it against the library and encoder hashes."""
        loaded = load_index(
            index_path, library_hash=library.content_hash(), encoder_hash=encoder_hash
        )
        return cls(library, encoder, loaded, config=config, window=window)

    @property
    def size(self) -> int:
        """Number of indexed guidelines."""
        return len(self._rows)

    def _n_candidates(self, config: SelectConfig) -> int:
        return min(max(config.candidates, config.k), len(self._rows))

    def search_vectors(
        self, vectors: np.ndarray, *, config: SelectConfig | None = None
    ) -> list[list[Hit]]:
        """Search already-encoded query vectors (rows, one query each) and apply selection."""
        config = config or self.config
        scores, rows = self.index.index.search(np.ascontiguousarray(vectors),
                                               self._n_candidates(config))
        return [self._select(scores[i : i + 1], rows[i : i + 1], config)
                for i in range(len(vectors))]

    def select_views(self, vectors: np.ndarray, *, config: SelectConfig | None = None
                     ) -> list[Hit]:
        """Selected hits for ONE query embedded as several views (rows)."""
        config = config or self.config
        scores, rows = self.index.index.search(np.ascontiguousarray(vectors),
                                               self._n_candidates(config))
        return self._select(scores, rows, config)

    def _select(self, scores: np.ndarray, rows: np.ndarray, config: SelectConfig) -> list[Hit]:
        """Each candidate keeps its best score over the views (rows), then selection runs once."""
        best: dict[int, float] = {}
        for score_row, idx_row in zip(scores, rows, strict=True):
            for score, idx in zip(score_row, idx_row, strict=True):
                if idx >= 0 and float(score) > best.get(int(idx), -np.inf):
                    best[int(idx)] = float(score)
        ranked = sorted(best.items(), key=lambda kv: -kv[1])[: self._n_candidates(config)]
        hits = [Hit(g.id, g.text, g.category, g.kind, score)
                for idx, score in ranked for g in [self._rows[idx]]]
        vecs = self._row_vectors([idx for idx, _ in ranked]) if config.mmr else None
        return select_hits(hits, config, vectors=vecs)

    def search_views(
        self,
        views: Sequence[Sequence[str]],
        *,
        config: SelectConfig | None = None,
        configs: Sequence[SelectConfig] | None = None,
    ) -> list[list[Hit]]:
        """Selected hits for many queries given as views (see query_views), one encode call.

        ``configs`` gives each query its own selection; otherwise ``config`` serves them all.
        """
        per_query = list(configs) if configs is not None else [config or self.config] * len(views)
        flat = [text for group in views for text in group]
        if not flat:
            return [[] for _ in views]
        vectors = self.encoder.encode(flat)
        out: list[list[Hit]] = []
        start = 0
        for group, cfg in zip(views, per_query, strict=True):
            n = len(group)
            out.append(self.select_views(vectors[start : start + n], config=cfg) if n else [])
            start += n
        return out

    def _row_vectors(self, rows: list[int]) -> np.ndarray:
        if self._vectors is None:
            self._vectors = self.encoder.encode([g.text for g in self._rows])
        return self._vectors[rows]

    def search(self, query: Query, *, config: SelectConfig | None = None) -> list[Hit]:
        """Selected hits for one text or conversation."""
        return self.search_batch([query], config=config)[0]

    def search_batch(
        self, queries: Sequence[Query], *, config: SelectConfig | None = None
    ) -> list[list[Hit]]:
        """Selected hits for many texts or conversations, encoded in one batch."""
        return self.search_views([query_views(q, window=self.window) for q in queries],
                                 config=config)
