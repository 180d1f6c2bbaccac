"""FAISS implementation of VectorIndex: exact (flat) or HNSW, inner product over normalised vectors."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from kbservice.config import IndexSettings


class FaissVectorIndex:
    """Vectors keyed by chunk id (IndexIDMap2); `kind` is "flat" (exact) or "hnsw"."""

    def __init__(self, index: faiss.Index, *, kind: str, ef_search: int = 128) -> None:
        self._index = index
        self.kind = kind
        self.ef_search = ef_search

    @classmethod
    def empty(cls, *, dimension: int, kind: str, settings: IndexSettings) -> FaissVectorIndex:
        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(dimension, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = settings.hnsw_ef_construction
        else:
            inner = faiss.IndexFlatIP(dimension)
        return cls(faiss.IndexIDMap2(inner), kind=kind, ef_search=settings.hnsw_ef_search)

    @classmethod
    def read(cls, path: Path, *, kind: str, ef_search: int) -> FaissVectorIndex:
        return cls(faiss.read_index(str(path)), kind=kind, ef_search=ef_search)

    def write(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    @property
    def dimension(self) -> int:
        return int(self._index.d)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64)
        )

    def search(self, query: np.ndarray, *, k: int, exclude_ids: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Best-first (id, inner product) for one query vector, skipping `exclude_ids` inside the search."""
        if self.size == 0 or k <= 0:
            return []
        selector = None
        if exclude_ids is not None and len(exclude_ids):
            excluded = np.ascontiguousarray(exclude_ids, dtype=np.int64)
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(len(excluded), faiss.swig_ptr(excluded)))
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        scores, ids = self._index.search(
            np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1), min(k, self.size), params=params
        )
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)
