"""Hybrid retrieval: dense (FAISS) and lexical (in-memory BM25, else SQL full-text) rankings fused by reciprocal
rank, at a version."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kbservice.config import RetrievalSettings
from kbservice.db.store import KnowledgeStore
from kbservice.errors import UnknownVersionError
from kbservice.index.protocols import Embedder
from kbservice.index.replica import IndexReplica
from kbservice.types import Hit

SearchMode = Literal["dense", "lexical", "hybrid"]


@dataclass(frozen=True)
class SearchResult:
    version: int | None  # the knowledge version searched; None when the knowledge base is empty
    mode: SearchMode
    hits: list[Hit]


def reciprocal_rank_fusion(rankings: list[list[int]], *, rrf_k: int) -> list[tuple[int, float, list[int | None]]]:
    """Fuses best-first id lists: score = sum of 1/(rrf_k + rank). Returns (id, score, rank per list)."""
    scores: dict[int, float] = {}
    ranks: dict[int, list[int | None]] = {}
    for which, ranking in enumerate(rankings):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (rrf_k + rank)
            ranks.setdefault(item, [None] * len(rankings))[which] = rank
    fused = sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))
    return [(item, score, ranks[item]) for item, score in fused]


class Retriever:
    """Searches the knowledge valid at a version this process has fully applied."""

    def __init__(
        self, *, store: KnowledgeStore, embedder: Embedder, replica: IndexReplica, settings: RetrievalSettings
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.replica = replica
        self.settings = settings
        self._last_query: tuple[str, np.ndarray] | None = None
        # A hybrid search ranks lexically on a pool thread while this one embeds the query: the ONNX or
        # torch embedder releases the GIL for its whole run, so the in-memory BM25 ranking (about 2 ms on
        # full MedQuAD) is hidden behind the embedding (about 6 ms) instead of following it.
        self._lexical_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lexical-ranking")

    def resolve_version(self, as_of: int | None) -> int | None:
        """`as_of` if this replica can serve it, else the newest version it can; None when empty."""
        self.replica.catch_up()
        serving = self.replica.serving_version()
        if as_of is None:
            return serving
        self.store.version(as_of)  # raises UnknownVersionError for a version that does not exist
        if serving is None or as_of > serving:
            raise UnknownVersionError(
                f"knowledge version {as_of} is not yet applied by this index replica (it serves up to "
                f"{serving}); retry shortly"
            )
        return as_of

    def search(
        self,
        query: str,
        *,
        k: int | None = None,
        as_of: int | None = None,
        mode: SearchMode = "hybrid",
        kind: str | None = None,
        exclude_chunk_ids: Sequence[int] = (),
    ) -> SearchResult:
        """The top `k` chunks for `query` among those valid at `as_of` (default: newest served version),
        of documents of `kind` ("guideline" or "case"; None: both), never any of `exclude_chunk_ids`."""
        k = k or self.settings.default_k
        version = self.resolve_version(as_of)
        if version is None or not query.strip():
            return SearchResult(version=version, mode=mode, hits=[])
        dense, lexical = self.rankings(
            query,
            version=version,
            depth=max(self.settings.candidates, k),
            mode=mode,
            kind=kind,
            exclude_chunk_ids=exclude_chunk_ids,
        )
        if mode == "dense":
            ranked = [(cid, score, rank, None) for rank, (cid, score) in enumerate(dense[:k], start=1)]
        elif mode == "lexical":
            ranked = [(cid, score, None, rank) for rank, (cid, score) in enumerate(lexical[:k], start=1)]
        else:
            fused = reciprocal_rank_fusion(
                [[cid for cid, _ in dense], [cid for cid, _ in lexical]], rrf_k=self.settings.rrf_k
            )
            ranked = [(cid, score, ranks[0], ranks[1]) for cid, score, ranks in fused[:k]]
        return SearchResult(version=version, mode=mode, hits=self.store.hits(ranked))

    def rankings(
        self,
        query: str,
        *,
        version: int,
        depth: int,
        mode: SearchMode = "hybrid",
        kind: str | None = None,
        exclude_chunk_ids: Sequence[int] = (),
    ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """The dense and the lexical ranking, each best-first (chunk id, the ranker's own score), unfused:
        similar-case evidence uses the raw scores, not just the ranks."""
        excluded_ids = np.asarray(sorted(set(exclude_chunk_ids)), dtype=np.int64)
        if mode == "lexical":
            return [], self._lexical_ranking(query, version=version, depth=depth, kind=kind, excluded=excluded_ids)
        lexical_ranking: Future[list[tuple[int, float]]] | None = None
        if mode == "hybrid":
            lexical_ranking = self._lexical_pool.submit(
                self._lexical_ranking, query, version=version, depth=depth, kind=kind, excluded=excluded_ids
            )
        dense = self.replica.search(
            self.query_vector(query), k=depth, version=version, kind=kind, also_exclude=excluded_ids
        )
        return dense, lexical_ranking.result() if lexical_ranking is not None else []

    def _lexical_ranking(
        self, query: str, *, version: int, depth: int, kind: str | None, excluded: np.ndarray
    ) -> list[tuple[int, float]]:
        found = self.replica.lexical_search(query, k=depth, version=version, kind=kind, also_exclude=excluded)
        if found is None:  # no in-memory replica, or a query only the SQL full-text index can answer
            found = self.store.lexical_search(query, version=version, limit=depth + len(excluded), kind=kind)
        skip = set(excluded.tolist())
        return [(cid, score) for cid, score in found if cid not in skip][:depth]

    def query_vector(self, query: str) -> np.ndarray:
        """The query's vector; a recommendation searches guidelines and cases and classifies the case with one
        query text, so the last vector is kept (one entry: no growth, no staleness). Read once into a local:
        concurrent requests replace the entry, and must each get their own query's vector."""
        last = self._last_query
        if last is None or last[0] != query:
            last = (query, self.embedder.encode([query])[0])
            self._last_query = last
        return last[1]
