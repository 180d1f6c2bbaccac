"""The outbox feed: chunk vectors in commit order, which every index replica follows (part of KnowledgeStore)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sqlalchemy import Engine, func, select

from kbservice.db.schema import chunks, index_outbox

_IN_LIST_LIMIT = 5000  # ids per IN (...) list: well under SQLite's bound-parameter limit


class OutboxFeed:
    engine: Engine

    def max_outbox_seq(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.coalesce(func.max(index_outbox.c.seq), 0))).scalar_one()

    def outbox_after(
        self, seq: int, *, upto_seq: int | None = None, batch_size: int = 5000
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Batches of (last seq, chunk ids, float32 vectors) for outbox entries in (seq, upto_seq], in order."""
        while True:
            query = (
                select(index_outbox.c.seq, chunks.c.id, chunks.c.embedding)
                .join(chunks, chunks.c.id == index_outbox.c.chunk_id)
                .where(index_outbox.c.seq > seq)
                .order_by(index_outbox.c.seq)
                .limit(batch_size)
            )
            if upto_seq is not None:
                query = query.where(index_outbox.c.seq <= upto_seq)
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return
            seq = rows[-1].seq
            ids = np.fromiter((row.id for row in rows), dtype=np.int64, count=len(rows))
            blob = b"".join(row.embedding for row in rows)
            yield seq, ids, np.frombuffer(blob, dtype="<f4").reshape(len(rows), -1)

    def outbox_chunk_ids(self, *, upto_seq: int) -> np.ndarray:
        """Chunk ids whose outbox entry is at or below `upto_seq`: what an index at that seq must hold."""
        with self.engine.connect() as conn:
            ids = conn.execute(select(index_outbox.c.chunk_id).where(index_outbox.c.seq <= upto_seq)).scalars().all()
        return np.asarray(ids, dtype=np.int64)

    def outbox_count(self, *, upto_seq: int) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(index_outbox).where(index_outbox.c.seq <= upto_seq)
            ).scalar_one()

    def chunk_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(chunks)).scalar_one()

    def chunk_fields(self, ids: np.ndarray) -> list[tuple[str | None, str]]:
        """(context, text) of each chunk in `ids`, in that order: what the lexical index tokenizes."""
        found: dict[int, tuple[str | None, str]] = {}
        wanted = [int(i) for i in ids]
        for start in range(0, len(wanted), _IN_LIST_LIMIT):
            part = wanted[start : start + _IN_LIST_LIMIT]
            with self.engine.connect() as conn:
                rows = conn.execute(select(chunks.c.id, chunks.c.context, chunks.c.text).where(chunks.c.id.in_(part)))
                found.update((row.id, (row.context, row.text)) for row in rows)
        return [found[i] for i in wanted]

    def chunk_texts(self, *, after_id: int = 0, batch_size: int = 2000) -> Iterator[list[tuple[int, str]]]:
        """(chunk id, text the embedder sees) in id order, in batches: the input for re-embedding."""
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(chunks.c.id, chunks.c.context, chunks.c.text)
                    .where(chunks.c.id > after_id)
                    .order_by(chunks.c.id)
                    .limit(batch_size)
                ).all()
            if not rows:
                return
            after_id = rows[-1].id
            yield [(row.id, f"{row.context}\n{row.text}" if row.context else row.text) for row in rows]
