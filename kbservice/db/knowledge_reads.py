"""Reads of the knowledge base at a version: documents, chunks as hits, diffs, validity filters and the
lexical ranking (part of KnowledgeStore)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, func, not_, or_, select

from kbservice.db import lexical
from kbservice.db.knowledge_versions import VersionHistory, valid_at
from kbservice.db.schema import chunks, documents, kb_meta
from kbservice.errors import UnknownDocumentError
from kbservice.types import DocumentInfo, Hit, VersionDiff

EMBEDDER_META_KEY = "embedder_id"


def live_by_key(conn: Connection, keys: Sequence[str]) -> dict[str, tuple[int, str]]:
    """(document id, content hash) of the live (never removed) document of each identity in `keys`."""
    live: dict[str, tuple[int, str]] = {}
    unique_keys = list(dict.fromkeys(keys))
    for start in range(0, len(unique_keys), 500):
        rows = conn.execute(
            select(documents.c.source_key, documents.c.id, documents.c.content_hash).where(
                documents.c.source_key.in_(unique_keys[start : start + 500]),
                documents.c.version_removed.is_(None),
            )
        )
        live.update({key: (doc_id, content_hash) for key, doc_id, content_hash in rows})
    return live


class KnowledgeReads(VersionHistory):
    """Reads at a version (part of KnowledgeStore)."""

    engine: Engine

    def live_content_hashes(self, keys: Sequence[str]) -> dict[str, str]:
        """Content hash of the live document for each identity in `keys` that has one."""
        with self.engine.connect() as conn:
            return {key: content_hash for key, (_, content_hash) in live_by_key(conn, keys).items()}

    def stored_embedder_id(self) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(kb_meta.c.value).where(kb_meta.c.key == EMBEDDER_META_KEY)).scalar()

    def documents(self, *, as_of: int, kind: str | None = "guideline") -> list[DocumentInfo]:
        """Documents of `kind` (None: every kind) valid at version `as_of`, oldest first."""
        query = select(documents, _chunk_count()).where(valid_at(documents, as_of)).order_by(documents.c.id)
        if kind is not None:
            query = query.where(documents.c.kind == kind)
        with self.engine.connect() as conn:
            rows = conn.execute(query)
            return [_document_info(row) for row in rows]

    def document(self, document_id: int) -> DocumentInfo:
        with self.engine.connect() as conn:
            row = conn.execute(select(documents, _chunk_count()).where(documents.c.id == document_id)).first()
        if row is None:
            raise UnknownDocumentError(f"document {document_id} does not exist; see `kbservice documents`")
        return _document_info(row)

    def document_chunks(self, document_id: int) -> list[dict[str, Any]]:
        """The document's chunks in order (id, heading path, text, content hash), for reading a cited passage."""
        self.document(document_id)  # a clear error for an unknown document
        query = (
            select(chunks.c.id, chunks.c.heading_path, chunks.c.text, chunks.c.content_hash)
            .where(chunks.c.document_id == document_id)
            .order_by(chunks.c.ordinal)
        )
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def diff(self, from_version: int, to_version: int) -> VersionDiff:
        """Documents and chunks valid at `to_version` but not `from_version` (added), and the reverse.
        Version 0 is the empty knowledge base before version 1."""
        for version in (from_version, to_version):
            if version != 0:
                self.version(version)
        with self.engine.connect() as conn:
            docs_from = self._doc_summaries(conn, from_version)
            docs_to = self._doc_summaries(conn, to_version)
            chunks_added = conn.execute(
                select(func.count()).where(valid_at(chunks, to_version), not_(valid_at(chunks, from_version)))
            ).scalar_one()
            chunks_removed = conn.execute(
                select(func.count()).where(valid_at(chunks, from_version), not_(valid_at(chunks, to_version)))
            ).scalar_one()
        return VersionDiff(
            from_version=from_version,
            to_version=to_version,
            documents_added=[docs_to[i] for i in sorted(docs_to.keys() - docs_from.keys())],
            documents_removed=[docs_from[i] for i in sorted(docs_from.keys() - docs_to.keys())],
            chunks_added=chunks_added,
            chunks_removed=chunks_removed,
        )

    def _doc_summaries(self, conn: Connection, version: int) -> dict[int, dict]:
        rows = conn.execute(
            select(documents.c.id, documents.c.title, documents.c.source_key, documents.c.content_hash).where(
                valid_at(documents, version)
            )
        )
        return {
            row.id: {
                "document_id": row.id,
                "title": row.title,
                "source_key": row.source_key,
                "content_hash": row.content_hash,
            }
            for row in rows
        }

    def invalid_chunk_ids(self, version: int, *, kind: str | None = None) -> np.ndarray:
        """Ids of every chunk not valid at `version` (added later, or removed by then), plus, with `kind`,
        every chunk of a document of another kind."""
        invalid = or_(chunks.c.version_added > version, chunks.c.version_removed <= version)
        if kind is not None:
            other_kind = select(documents.c.id).where(documents.c.kind != kind)
            invalid = or_(invalid, chunks.c.document_id.in_(other_kind))
        with self.engine.connect() as conn:
            ids = conn.execute(select(chunks.c.id).where(invalid)).scalars().all()
        return np.asarray(ids, dtype=np.int64)

    def lexical_search(
        self, query: str, *, version: int, limit: int, kind: str | None = None
    ) -> list[tuple[int, float]]:
        with self.engine.connect() as conn:
            return lexical.lexical_search(conn, query=query, version=version, limit=limit, kind=kind)

    def hits(self, ranked: Sequence[tuple[int, float, int | None, int | None]]) -> list[Hit]:
        """Hits for (chunk_id, score, dense_rank, lexical_rank) tuples, in the given order."""
        if not ranked:
            return []
        ids = [chunk_id for chunk_id, *_ in ranked]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    chunks.c.id,
                    chunks.c.document_id,
                    chunks.c.heading_path,
                    chunks.c.text,
                    chunks.c.char_start,
                    chunks.c.char_end,
                    chunks.c.content_hash,
                    chunks.c.version_added,
                    documents.c.title,
                    documents.c.source,
                    documents.c.kind,
                )
                .join(documents, documents.c.id == chunks.c.document_id)
                .where(chunks.c.id.in_(ids))
            )
            by_id = {row.id: row for row in rows}
        return [
            Hit(
                chunk_id=chunk_id,
                document_id=row.document_id,
                title=row.title,
                source=row.source,
                kind=row.kind,
                heading_path=tuple(row.heading_path),
                text=row.text,
                char_start=row.char_start,
                char_end=row.char_end,
                content_hash=row.content_hash,
                version_added=row.version_added,
                score=score,
                dense_rank=dense_rank,
                lexical_rank=lexical_rank,
            )
            for chunk_id, score, dense_rank, lexical_rank in ranked
            if (row := by_id.get(chunk_id)) is not None
        ]


def _chunk_count():  # type: ignore[no-untyped-def]
    """A column with each document's number of chunks, labelled "n" for _document_info."""
    return select(func.count()).where(chunks.c.document_id == documents.c.id).scalar_subquery().label("n")


def _document_info(row) -> DocumentInfo:  # type: ignore[no-untyped-def]
    return DocumentInfo(
        document_id=row.id,
        title=row.title,
        source=row.source,
        source_key=row.source_key,
        format=row.format,
        content_hash=row.content_hash,
        version_added=row.version_added,
        version_removed=row.version_removed,
        chunks=row.n,
        publisher=row.publisher,
        effective_date=row.effective_date,
        url=row.url,
    )
