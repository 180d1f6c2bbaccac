"""The VectorIndex contract: what the replica and the image index rely on, run by every implementation.

Each FAISS kind is its own implementation of the contract (exact, graph, quantised with exact re-ranking).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from kbservice.config import IndexSettings
from kbservice.index import faiss_gpu
from kbservice.index.faiss_index import PQ_MIN_VECTORS, build_index, read_index
from kbservice.index.protocols import VectorIndex

DIMENSION = 32


def _unit_rows(count: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class VectorIndexContract:
    """Subclasses name the kind and how many vectors it needs to be built."""

    kind: str
    count = 2_000
    settings = IndexSettings(hnsw_ef_search=256)
    score_tolerance = 1e-4  # of a returned cosine

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(1000, 1000 + cls.count, dtype=np.int64), _unit_rows(cls.count)

    @pytest.fixture(scope="class")
    @classmethod
    def index(cls, data: tuple[np.ndarray, np.ndarray]) -> VectorIndex:
        ids, vectors = data
        return build_index(dimension=DIMENSION, kind=cls.kind, settings=cls.settings, ids=ids, vectors=vectors)

    def test_holds_every_id_once(self, index: VectorIndex, data: tuple[np.ndarray, np.ndarray]) -> None:
        assert index.kind == self.kind and index.dimension == DIMENSION
        assert index.size == self.count and sorted(index.ids().tolist()) == data[0].tolist()

    def test_finds_a_stored_vector_first_with_its_cosine(self, index: VectorIndex, data) -> None:  # type: ignore[no-untyped-def]
        ids, vectors = data
        for row in (0, 7, self.count - 1):
            top = index.search(vectors[row], k=3)
            assert len(top) == 3 and top[0][0] == ids[row] and top[0][1] == pytest.approx(1.0, abs=self.score_tolerance)
            assert [score for _, score in top] == sorted((score for _, score in top), reverse=True)

    def test_never_returns_excluded_ids_and_finds_the_survivors(self, index: VectorIndex, data) -> None:  # type: ignore[no-untyped-def]
        ids, vectors = data
        excluded = index.search(vectors[7], k=3, exclude_ids=ids[7:9])
        assert len(excluded) == 3 and not {i for i, _ in excluded} & set(ids[7:9].tolist())
        survivors = index.search(vectors[7], k=5, exclude_ids=ids[:-3])  # almost everything excluded
        assert sorted(i for i, _ in survivors) == ids[-3:].tolist()

    def test_asks_for_more_than_it_holds(self, index: VectorIndex, data) -> None:  # type: ignore[no-untyped-def]
        ids, vectors = data
        assert len(index.search(vectors[0], k=5, exclude_ids=ids[:-2])) == 2
        assert index.search(vectors[0], k=0) == []

    def test_written_and_read_back_answers_the_same(self, index: VectorIndex, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
        _, vectors = data
        index.write(tmp_path / "index.faiss")
        again = read_index(tmp_path / "index.faiss", kind=self.kind, settings=self.settings)
        assert again.size == index.size and again.search(vectors[3], k=5) == index.search(vectors[3], k=5)

    def test_adds_keep_earlier_vectors(self, data) -> None:  # type: ignore[no-untyped-def]
        ids, vectors = data
        index = build_index(dimension=DIMENSION, kind=self.kind, settings=self.settings, ids=ids, vectors=vectors)
        more = _unit_rows(10, seed=9)
        index.add(np.arange(90_000, 90_010, dtype=np.int64), more)
        assert index.size == self.count + 10
        assert index.search(more[4], k=1)[0][0] == 90_004 and index.search(vectors[5], k=1)[0][0] == ids[5]


def test_an_empty_index_finds_nothing() -> None:
    empty = build_index(dimension=DIMENSION, kind="flat", settings=IndexSettings())
    assert empty.size == 0 and empty.search(_unit_rows(1)[0], k=3) == [] and len(empty.ids()) == 0


class TestFlatIndex(VectorIndexContract):
    kind = "flat"


class TestFlatIndexThroughAGpuCopy(VectorIndexContract):
    """The GPU search path (over-fetch, positions mapped to ids, exclusions filtered, adds to both copies)
    with a CPU copy standing in for the GPU one, which answers the same calls: the path runs on every
    machine, not only where faiss-gpu sees a GPU."""

    kind = "flat"

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def gpu_stand_in(cls) -> Iterator[None]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(faiss_gpu, "gpu_device", lambda device: None if device == "cpu" else 0)
            patch.setattr(faiss_gpu, "gpu_copy", lambda flat, device: faiss.clone_index(flat))
            yield

    def test_searches_go_to_the_copy_which_follows_adds(self, data) -> None:  # type: ignore[no-untyped-def]
        ids, vectors = data
        index = build_index(dimension=DIMENSION, kind="flat", settings=self.settings, ids=ids, vectors=vectors)
        index.add(np.arange(90_000, 90_005, dtype=np.int64), _unit_rows(5, seed=11))
        copy = index._gpu  # type: ignore[attr-defined]
        assert copy is not None and copy.ntotal == index.size == self.count + 5
        cpu_only = IndexSettings(device="cpu")
        on_cpu = build_index(dimension=DIMENSION, kind="flat", settings=cpu_only, ids=ids, vectors=vectors)
        assert on_cpu._gpu is None  # type: ignore[attr-defined]
        on_cpu.add(np.arange(90_000, 90_005, dtype=np.int64), _unit_rows(5, seed=11))
        for row in (0, 99, 1_999):
            assert index.search(vectors[row], k=20, exclude_ids=ids[row : row + 3]) == on_cpu.search(
                vectors[row], k=20, exclude_ids=ids[row : row + 3]
            )


@pytest.mark.parametrize("order", ["increasing", "shuffled"])
def test_the_flat_kind_ranks_exactly_as_a_brute_force_scan(order: str) -> None:
    """The flat kind is exact: the same ids in the same order as a brute-force scan, exact scores, exclusions
    honoured (ids it never held ignored), whether ids arrive in increasing order (chunk ids do) or not; and
    a search runs on the calling thread alone without changing that thread's OpenMP setting for later work."""
    threads_before = faiss.omp_get_max_threads()
    rng = np.random.default_rng(3)
    vectors = _unit_rows(3_000, seed=4)
    ids = np.arange(5_000, 8_000, dtype=np.int64) * 3
    if order == "shuffled":
        ids = rng.permutation(ids)
    index = build_index(
        dimension=DIMENSION, kind="flat", settings=IndexSettings(), ids=ids[:2_000], vectors=vectors[:2_000]
    )
    index.add(ids[2_000:], vectors[2_000:])
    for trial in range(20):
        query = _unit_rows(1, seed=100 + trial)[0]
        excluded = rng.choice(ids, size=int(rng.integers(0, 2_900)), replace=False)
        excluded = np.concatenate([excluded, [1, 10**9]]).astype(np.int64)  # ids it never held are ignored
        k = int(rng.integers(1, 200))
        keep = ~np.isin(ids, excluded)
        scores = vectors[keep] @ query
        best = np.argsort(-scores, kind="stable")[:k]
        found = index.search(query, k=k, exclude_ids=np.sort(excluded))
        assert [i for i, _ in found] == ids[keep][best].tolist()
        assert np.allclose([s for _, s in found], scores[best], atol=1e-6)
    assert faiss.omp_get_max_threads() == threads_before


class TestHnswIndex(VectorIndexContract):
    kind = "hnsw"


class TestProductQuantisedIndex(VectorIndexContract):
    kind = "pq"
    count = PQ_MIN_VECTORS  # the fewest it can train its codebooks on
    # Re-ranked from float16 vectors (the default): 11 significant bits, a relative error up to 2^-11 per
    # component, so a vector's cosine with itself comes back within ~2e-4 of 1 at 32 dimensions.
    score_tolerance = 1e-3


class TestProductQuantisedIndexFloat32Rerank(TestProductQuantisedIndex):
    settings = IndexSettings(pq_rerank_dtype="float32")
    score_tolerance = 1e-4


def test_float16_reranking_vectors_take_half_the_space(tmp_path: Path) -> None:
    ids, vectors = np.arange(PQ_MIN_VECTORS, dtype=np.int64), _unit_rows(PQ_MIN_VECTORS)
    sizes = {}
    for dtype in ("float16", "float32"):
        index = build_index(
            dimension=DIMENSION, kind="pq", settings=IndexSettings(pq_rerank_dtype=dtype), ids=ids, vectors=vectors
        )
        index.write(tmp_path / dtype)
        sizes[dtype] = (tmp_path / dtype).stat().st_size
    # The re-ranking vectors are 2 bytes a dimension instead of 4; the codes, ids and codebooks are the same
    # (the two refine indexes' headers differ by a few bytes).
    assert abs(sizes["float32"] - sizes["float16"] - PQ_MIN_VECTORS * DIMENSION * 2) < 100
