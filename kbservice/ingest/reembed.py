"""Switching embedders: re-embed every stored chunk so SQL holds vectors of the configured embedder."""

from __future__ import annotations

from kbservice.db.store import KnowledgeStore
from kbservice.index.protocols import Embedder
from kbservice.progress import Progress


def reembed_all(*, store: KnowledgeStore, embedder: Embedder, progress: Progress) -> int:
    """Replaces every chunk's stored vector with `embedder`'s; versions and chunk ids are unchanged.

    Written in one transaction, so a crash leaves the old embedder's vectors (and id) in place.
    """
    vectors = {}
    with progress.task("Re-embedding chunks", total=store.chunk_count()) as advance:
        for batch in store.chunk_texts():
            encoded = embedder.encode([text for _, text in batch])
            vectors.update({chunk_id: vector for (chunk_id, _), vector in zip(batch, encoded, strict=True)})
            advance(len(batch))
    store.replace_embeddings(vectors, embedder_id=embedder.embedder_id)
    return len(vectors)
