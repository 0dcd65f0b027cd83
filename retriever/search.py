"""Dense retrieval: encode, FAISS search, select."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from guideline_lib.schema import Guideline, Library
from retriever.encoder import Encoder
from retriever.index import IndexLoadError, LoadedIndex
from retriever.select import select_hits
from retriever.types import Hit, SelectConfig


class DenseRetriever:
    """The library's guidelines behind an encoder and a FAISS index.

    A query is given as its views (the texts embedded for it; see ``retriever.query``): each
    guideline keeps its best score over the views, then selection runs once.
    """

    def __init__(self, library: Library, encoder: Encoder, index: LoadedIndex):
        by_id = library.by_id()
        missing = [i for i in index.ids if i not in by_id]
        if missing:
            raise IndexLoadError(f"index refers to {len(missing)} ids missing from the library")
        self.library = library
        self.encoder = encoder
        self.index = index
        self._rows: list[Guideline] = [by_id[i] for i in index.ids]
        self._row_of = {g.id: n for n, g in enumerate(self._rows)}
        self._vectors: np.ndarray | None = None
        # One encoder call at a time: the batching guide and the moderation / judgement
        # endpoints run in different worker threads, and not every backend is thread-safe.
        self._encode_lock = threading.Lock()

    @property
    def size(self) -> int:
        """Number of indexed guidelines."""
        return len(self._rows)

    def search(self, views: Sequence[str], config: SelectConfig) -> list[Hit]:
        """Selected hits for one query given as its views."""
        return self.search_batch([views], [config])[0]

    def search_batch(self, views: Sequence[Sequence[str]],
                     configs: Sequence[SelectConfig]) -> list[list[Hit]]:
        """Selected hits for many queries (views each, own selection each), one encoder call."""
        vectors = self.encode(views)
        ranked = self.candidates(vectors, [len(g) for g in views], configs)
        return [self.select(hits, config) for hits, config in zip(ranked, configs, strict=True)]

    def encode(self, views: Sequence[Sequence[str]]) -> np.ndarray:
        """Every view of every query embedded, in one encoder call (rows in order)."""
        flat = [text for group in views for text in group]
        if not flat:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        with self._encode_lock:
            return self.encoder.encode(flat)

    def candidates(self, vectors: np.ndarray, groups: Sequence[int],
                   configs: Sequence[SelectConfig]) -> list[list[Hit]]:
        """Ranked candidates per query before selection: ``groups`` gives each query's number of
        rows (views) in ``vectors``; each guideline keeps its best score over the views."""
        if not len(vectors):
            return [[] for _ in groups]
        n = max(self._n_candidates(c) for c in configs)
        scores, rows = self.index.index.search(np.ascontiguousarray(vectors), n)
        out: list[list[Hit]] = []
        start = 0
        for count, config in zip(groups, configs, strict=True):
            end = start + count
            out.append(self._ranked(scores[start:end], rows[start:end], config) if count else [])
            start = end
        return out

    def select(self, hits: Sequence[Hit], config: SelectConfig) -> list[Hit]:
        """Apply the selection rules to ranked candidates (MMR reads the guideline vectors)."""
        vecs = self._row_vectors([self._row_of[h.id] for h in hits]) if config.mmr else None
        return select_hits(hits, config, vectors=vecs)

    def _n_candidates(self, config: SelectConfig) -> int:
        return min(max(config.candidates, config.k), len(self._rows))

    def _ranked(self, scores: np.ndarray, rows: np.ndarray, config: SelectConfig) -> list[Hit]:
        best: dict[int, float] = {}
        for score_row, idx_row in zip(scores, rows, strict=True):
            for score, idx in zip(score_row, idx_row, strict=True):
                if idx >= 0 and float(score) > best.get(int(idx), -np.inf):
                    best[int(idx)] = float(score)
        ranked = sorted(best.items(), key=lambda kv: -kv[1])[: self._n_candidates(config)]
        return [Hit(g.id, g.text, g.category, g.kind, score)
                for idx, score in ranked for g in [self._rows[idx]]]

    def _row_vectors(self, rows: list[int]) -> np.ndarray:
        if self._vectors is None:
            self._vectors = self.encode([(g.text,) for g in self._rows])
        return self._vectors[rows]
