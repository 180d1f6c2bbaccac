"""FAISS implementation of VectorIndex over normalised vectors (inner product = cosine), keyed by chunk id.

Kinds: "flat" (exact), "hnsw" (graph), "pq" (4-bit product-quantisation fast-scan over every vector, then
re-ranking of the best k * pq_k_factor from stored full vectors, float16 or float32: index.pq_rerank_dtype).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from kbservice.config import IndexSettings
from kbservice.index import faiss_gpu
from kbservice.index.protocols import VectorIndex

PQ_MIN_VECTORS = 10_000  # PQ needs data to train its codebooks; smaller indexes stay exact
_PQ_TRAIN_SAMPLE = 100_000


def _pq_spec(dimension: int, rerank_dtype: str) -> str:
    # Two dimensions per 4-bit sub-quantiser: measured recall@10 0.99 vs exact on 200k random vectors (one
    # per four: 0.72 at 1M, k_factor 64). The re-ranking vectors are kept as float16 or float32.
    refine = "Refine(SQfp16)" if rerank_dtype == "float16" else "RFlat"
    return f"PQ{dimension // 2}x4fs,{refine}"


@contextmanager
def _one_thread() -> Iterator[None]:
    """A flat or graph search of one query runs on the calling thread alone. FAISS splits a flat scan over
    OpenMP threads whose spin-waiting after each scan took the cores from the torch query embedder beside
    it: at 28,631 x 384, 3.2 ms wall for 6.8 ms of CPU on two threads against 2.1 ms wall and 2.1 ms of
    CPU on one, and in-process hybrid search p50 went from 22.7 to 16.6 ms on a 5,273-chunk MedQuAD base.
    HNSW parallelises over queries only. (PQ fast-scan is left as it is: not measured.) The setting is the
    calling thread's own, so builds and adds elsewhere keep every core."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _first_k_kept(ids: np.ndarray, scores: np.ndarray, k: int, skip: set[int]) -> list[tuple[int, float]]:
    """The first `k` (id, score) of a best-first answer that are real (id >= 0) and not in `skip`: for the
    searches that take no ID selector and so fetch k plus the excluded count."""
    return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0 and i not in skip][:k]


class FaissVectorIndex:
    """Vectors keyed by chunk id (IndexIDMap2 around a flat, HNSW or PQ-refine index)."""

    def __init__(self, index: faiss.Index, *, kind: str, settings: IndexSettings) -> None:
        self._index = index
        self.kind = kind
        self.ef_search = settings.hnsw_ef_search
        self.k_factor = settings.pq_k_factor
        # An exact index is also searched from a GPU copy when FAISS can use a GPU (index.device); the CPU
        # index stays the one that is written, snapshotted and verified, and adds go to both.
        gpu = faiss_gpu.gpu_device(settings.device) if kind == "flat" else None
        self._gpu = faiss_gpu.gpu_copy(faiss.downcast_index(index.index), gpu) if gpu is not None else None
        self._positions: tuple[int, np.ndarray] | None = None  # (size, the id at each position)

    @classmethod
    def build(
        cls,
        *,
        dimension: int,
        kind: str,
        settings: IndexSettings,
        ids: np.ndarray | None = None,
        vectors: np.ndarray | None = None,
    ) -> FaissVectorIndex:
        """A new index of `kind`, holding `vectors` if given (PQ trains its codebooks on them)."""
        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(dimension, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = settings.hnsw_ef_construction
        elif kind == "pq":
            if vectors is None or len(vectors) < PQ_MIN_VECTORS:
                raise ValueError(f"a pq index needs at least {PQ_MIN_VECTORS} vectors to train on")
            inner = faiss.index_factory(
                dimension, _pq_spec(dimension, settings.pq_rerank_dtype), faiss.METRIC_INNER_PRODUCT
            )
            sample = np.random.default_rng(0).permutation(len(vectors))[:_PQ_TRAIN_SAMPLE]
            inner.train(np.ascontiguousarray(vectors[np.sort(sample)], dtype=np.float32))
        else:
            inner = faiss.IndexFlatIP(dimension)
        index = cls(faiss.IndexIDMap2(inner), kind=kind, settings=settings)
        if vectors is not None and ids is not None and len(ids):
            index.add(ids, vectors)
        return index

    @classmethod
    def read(cls, path: Path, *, kind: str, settings: IndexSettings) -> FaissVectorIndex:
        return cls(faiss.read_index(str(path)), kind=kind, settings=settings)

    def write(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    @property
    def dimension(self) -> int:
        return int(self._index.d)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        if self._gpu is not None:
            self._gpu.add(vectors)  # same order, so a position on the GPU is a position in the id map

    def search(self, query: np.ndarray, *, k: int, exclude_ids: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Best-first (id, inner product) for one query vector, never returning `exclude_ids`."""
        if self.size == 0 or k <= 0:
            return []
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        excluded = np.ascontiguousarray(exclude_ids if exclude_ids is not None else [], dtype=np.int64)
        if self.kind == "pq":
            hits = self._pq_search(query, k, excluded)
        elif self._gpu is not None and k + len(excluded) <= faiss_gpu.GPU_MAX_K:
            hits = self._gpu_search(query, k, excluded)
        else:
            with _one_thread():
                hits = self._selector_search(query, k, excluded)
        if len(hits) < k and len(excluded) and self.kind != "flat":
            # A filtered graph walk (or a PQ shortlist) can miss survivors when most ids are excluded, e.g.
            # searching as of an early version; the survivors are then few, so scan them exactly.
            valid = np.setdiff1d(self.ids(), excluded, assume_unique=True)
            if len(valid) > len(hits):
                return self._exact_among(query, k, valid)
        return hits

    def _selector_search(self, query: np.ndarray, k: int, excluded: np.ndarray) -> list[tuple[int, float]]:
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
        else:
            params = faiss.SearchParameters()
        if len(excluded):
            params.sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(len(excluded), faiss.swig_ptr(excluded)))
        scores, ids = self._index.search(query, min(k, self.size), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def _gpu_search(self, query: np.ndarray, k: int, excluded: np.ndarray) -> list[tuple[int, float]]:
        # The GPU copy takes no ID selector and knows positions, not ids: over-fetch, map, filter.
        assert self._gpu is not None
        if self._positions is None or self._positions[0] != self.size:
            self._positions = (self.size, self.ids())
        skip = set(excluded.tolist())
        scores, positions = self._gpu.search(query, min(self.size, k + len(skip)))
        ids = np.where(positions[0] >= 0, self._positions[1][positions[0]], -1)
        return _first_k_kept(ids, scores[0], k, skip)

    def _pq_search(self, query: np.ndarray, k: int, excluded: np.ndarray) -> list[tuple[int, float]]:
        # PQ fast-scan takes no ID selector: fetch enough to survive the exclusions, then filter.
        skip = set(excluded.tolist())
        params = faiss.IndexRefineSearchParameters(k_factor=float(self.k_factor))
        scores, ids = self._index.search(query, min(self.size, k + len(skip)), params=params)
        return _first_k_kept(ids[0], scores[0], k, skip)

    def _exact_among(self, query: np.ndarray, k: int, ids: np.ndarray) -> list[tuple[int, float]]:
        vectors = self._index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64))
        scores = vectors @ query[0]
        best = np.argsort(-scores, kind="stable")[:k]
        return [(int(ids[i]), float(scores[i])) for i in best]

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)


def build_index(
    *,
    dimension: int,
    kind: str,
    settings: IndexSettings,
    ids: np.ndarray | None = None,
    vectors: np.ndarray | None = None,
) -> VectorIndex:
    """A new index of `kind` ("flat", "hnsw" or "pq"), holding `vectors` under `ids` if given."""
    return FaissVectorIndex.build(dimension=dimension, kind=kind, settings=settings, ids=ids, vectors=vectors)


def read_index(path: Path, *, kind: str, settings: IndexSettings) -> VectorIndex:
    """An index written by `VectorIndex.write`."""
    return FaissVectorIndex.read(path, kind=kind, settings=settings)
