"""KnowledgeStore: every read and write of the versioned knowledge base goes through here."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Connection, Engine, and_, func, insert, not_, or_, select, update

from kbservice.db import lexical, migrate
from kbservice.db.engine import write_transaction
from kbservice.db.schema import cases, chunks, documents, images, index_outbox, kb_meta, knowledge_versions
from kbservice.errors import (
    DuplicateIdentityError,
    IndexMismatchError,
    KBError,
    UnknownDocumentError,
    UnknownVersionError,
)
from kbservice.types import DocumentInfo, Hit, PreparedDocument, VersionDiff, VersionInfo

if TYPE_CHECKING:
    from kbservice.audit import AuditLog

_INSERT_BATCH = 2000
EMBEDDER_META_KEY = "embedder_id"


def valid_at(table, version: int):  # type: ignore[no-untyped-def]
    """Rows of a versioned table (documents, chunks) valid at `version`."""
    return and_(
        table.c.version_added <= version,
        or_(table.c.version_removed.is_(None), table.c.version_removed > version),
    )


def version_hash(*, parent_hash: str, author: str, message: str, added, removed) -> str:  # type: ignore[no-untyped-def]
    """Chains the parent's hash with what changed; timestamps are left out so equal histories hash equal."""
    change = {
        "author": author,
        "message": message,
        "added": sorted(added),
        "removed": sorted(removed),
    }
    payload = parent_hash + json.dumps(change, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


class KnowledgeStore:
    """Versioned documents and chunks in SQL, plus the outbox the vector index follows."""

    def __init__(self, engine: Engine, *, audit: AuditLog | None = None) -> None:
        self.engine = engine
        self.audit = audit  # when set, every new version is audited in the version's own transaction

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def require_schema(self) -> None:
        migrate.require_current_schema(self.engine)

    # ----- versions -------------------------------------------------------------------------------

    def head(self) -> VersionInfo | None:
        with self.engine.connect() as conn:
            return self._head(conn)

    def _head(self, conn: Connection) -> VersionInfo | None:
        row = conn.execute(select(knowledge_versions).order_by(knowledge_versions.c.version.desc()).limit(1)).first()
        return _version_info(row) if row else None

    def version(self, version: int) -> VersionInfo:
        """The version row, or UnknownVersionError naming the versions that exist."""
        with self.engine.connect() as conn:
            row = conn.execute(select(knowledge_versions).where(knowledge_versions.c.version == version)).first()
            if row is None:
                head = self._head(conn)
                known = f"versions 1..{head.version} exist" if head else "the knowledge base is empty"
                raise UnknownVersionError(f"knowledge version {version} does not exist ({known})")
            return _version_info(row)

    def versions(self) -> list[VersionInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(knowledge_versions).order_by(knowledge_versions.c.version))
            return [_version_info(row) for row in rows]

    def version_for_outbox_seq(self, applied_seq: int) -> int | None:
        """The newest version whose outbox entries all have seq <= applied_seq (what a replica may serve)."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.max(knowledge_versions.c.version)).where(
                    knowledge_versions.c.last_outbox_seq <= applied_seq
                )
            ).scalar()

    # ----- writes ---------------------------------------------------------------------------------

    def record_ingest(
        self,
        *,
        prepared: Sequence[PreparedDocument],
        author: str,
        message: str,
        embedder_id: str,
        supersede: bool = True,
    ) -> tuple[VersionInfo | None, list[str], list[str], list[str]]:
        """Writes one new version holding every changed or new document, or nothing if all are identical.

        Returns (version or None, added keys, superseded keys, unchanged keys). Supersession is decided
        inside the write transaction, so a concurrent writer cannot make it act on stale state. With
        `supersede=False` (cases: a submitter's id names one case forever) a live identity is an error.
        """
        with write_transaction(self.engine) as conn:
            self._check_embedder(conn, embedder_id)
            live = self._live_by_key(conn, [p.parsed.source_key for p in prepared])
            if not supersede and live:
                raise DuplicateIdentityError(sorted(live))
            fresh = [p for p in prepared if live.get(p.parsed.source_key, (None, None))[1] != p.content_hash]
            unchanged = [
                p.parsed.source_key
                for p in prepared
                if live.get(p.parsed.source_key, (None, None))[1] == p.content_hash
            ]
            if not fresh:
                return None, [], [], unchanged
            superseded = [
                (p.parsed.source_key, live[p.parsed.source_key]) for p in fresh if p.parsed.source_key in live
            ]
            parent = self._head(conn)
            new_version = (parent.version if parent else 0) + 1
            self._insert_version_row(
                conn,
                parent=parent,
                version=new_version,
                author=author,
                message=message,
                added=[(p.parsed.source_key, p.content_hash) for p in fresh],
                removed=[(key, content_hash) for key, (_, content_hash) in superseded],
            )
            removed_chunks = self._close_documents(conn, [doc_id for _, (doc_id, _) in superseded], new_version)
            added_chunks = self._insert_documents(conn, fresh, new_version)
            info = self._finish_version(
                conn,
                version=new_version,
                parent=parent,
                documents_delta=len(fresh) - len(superseded),
                chunks_delta=added_chunks - removed_chunks,
            )
            added_keys = [p.parsed.source_key for p in fresh if p.parsed.source_key not in live]
            superseded_keys = [key for key, _ in superseded]
            self._audit_version(conn, info, added=added_keys, superseded=superseded_keys, retracted=[])
            return info, added_keys, superseded_keys, unchanged

    def retract_document(self, document_id: int, *, author: str, reason: str) -> VersionInfo:
        """Writes a new version in which `document_id` (and its chunks) is no longer valid."""
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(documents).where(documents.c.id == document_id)).first()
            if row is None:
                raise UnknownDocumentError(f"document {document_id} does not exist; see `kbservice documents`")
            if row.version_removed is not None:
                raise UnknownDocumentError(
                    f"document {document_id} was already removed in version {row.version_removed}"
                )
            parent = self._head(conn)
            assert parent is not None  # a document exists, so a version does
            new_version = parent.version + 1
            self._insert_version_row(
                conn,
                parent=parent,
                version=new_version,
                author=author,
                message=reason,
                added=[],
                removed=[(row.source_key, row.content_hash)],
            )
            removed_chunks = self._close_documents(conn, [document_id], new_version, reason=reason)
            info = self._finish_version(
                conn, version=new_version, parent=parent, documents_delta=-1, chunks_delta=-removed_chunks
            )
            self._audit_version(conn, info, added=[], superseded=[], retracted=[row.source_key])
            return info

    def _audit_version(
        self, conn: Connection, info: VersionInfo, *, added: list[str], superseded: list[str], retracted: list[str]
    ) -> None:
        if self.audit is None:
            return
        self.audit.record(
            "knowledge.version",
            actor=info.author,
            payload={
                "version": info.version,
                "parent": info.parent,
                "content_hash": info.content_hash,
                "message": info.message,
                "added": added,
                "superseded": superseded,
                "retracted": retracted,
                "documents": info.documents,
                "chunks": info.chunks,
            },
            conn=conn,
        )

    def _check_embedder(self, conn: Connection, embedder_id: str) -> None:
        stored = conn.execute(select(kb_meta.c.value).where(kb_meta.c.key == EMBEDDER_META_KEY)).scalar()
        if stored is None:
            conn.execute(insert(kb_meta).values(key=EMBEDDER_META_KEY, value=embedder_id))
        elif stored != embedder_id:
            raise IndexMismatchError(
                f"the knowledge base was embedded with {stored}, but the configured embedder is "
                f"{embedder_id}; run `kbservice index rebuild --reembed` to switch embedders"
            )

    def _live_by_key(self, conn: Connection, keys: Sequence[str]) -> dict[str, tuple[int, str]]:
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

    def _close_documents(
        self, conn: Connection, document_ids: Sequence[int], version: int, reason: str | None = None
    ) -> int:
        removed = 0
        for start in range(0, len(document_ids), 500):
            batch = document_ids[start : start + 500]
            conn.execute(
                update(documents)
                .where(documents.c.id.in_(batch))
                .values(version_removed=version, removed_reason=reason or "superseded")
            )
            removed += conn.execute(
                update(chunks)
                .where(chunks.c.document_id.in_(batch), chunks.c.version_removed.is_(None))
                .values(version_removed=version)
            ).rowcount
        return removed

    def _insert_version_row(
        self,
        conn: Connection,
        *,
        parent: VersionInfo | None,
        version: int,
        author: str,
        message: str,
        added: list[tuple[str, str]],
        removed: list[tuple[str, str]],
    ) -> None:
        content_hash = version_hash(
            parent_hash=parent.content_hash if parent else "",
            author=author,
            message=message,
            added=added,
            removed=removed,
        )
        conn.execute(
            insert(knowledge_versions).values(
                version=version,
                parent=parent.version if parent else None,
                created_at=datetime.now(UTC),
                author=author,
                message=message,
                content_hash=content_hash,
                documents=parent.documents if parent else 0,
                chunks=parent.chunks if parent else 0,
                last_outbox_seq=parent.last_outbox_seq if parent else 0,
            )
        )

    def _insert_documents(self, conn: Connection, prepared: Sequence[PreparedDocument], version: int) -> int:
        doc_rows = [
            {
                "source_key": p.parsed.source_key,
                "source": p.parsed.source,
                "title": p.parsed.title,
                "format": p.parsed.format,
                "publisher": p.parsed.publisher,
                "effective_date": p.parsed.effective_date,
                "url": p.parsed.url,
                "meta": p.parsed.metadata,
                "kind": p.parsed.kind,
                "text": p.parsed.text,
                "content_hash": p.content_hash,
                "version_added": version,
            }
            for p in prepared
        ]
        doc_ids = (
            conn.execute(insert(documents).returning(documents.c.id, sort_by_parameter_order=True), doc_rows)
            .scalars()
            .all()
        )
        with_case = [(doc_id, p) for doc_id, p in zip(doc_ids, prepared, strict=True) if p.case is not None]
        if with_case:
            case_ids = (
                conn.execute(
                    insert(cases).returning(cases.c.case_id, sort_by_parameter_order=True),
                    [{**p.case, "document_id": doc_id, "version_added": version} for doc_id, p in with_case],
                )
                .scalars()
                .all()
            )
            now = datetime.now(UTC)
            image_rows = [
                {**row, "case_id": case_id, "created_at": now}
                for case_id, (_, p) in zip(case_ids, with_case, strict=True)
                for row in p.images
            ]
            if image_rows:
                conn.execute(insert(images), image_rows)
        chunk_rows = [
            {
                "document_id": doc_id,
                "ordinal": draft.ordinal,
                "heading_path": list(draft.heading_path),
                "context": draft.context,
                "text": draft.text,
                "char_start": draft.char_start,
                "char_end": draft.char_end,
                "token_count": draft.token_count,
                "content_hash": hashlib.sha256(draft.text.encode()).hexdigest(),
                "embedding": np.asarray(vector, dtype="<f4").tobytes(),
                "version_added": version,
            }
            for doc_id, p in zip(doc_ids, prepared, strict=True)
            for draft, vector in zip(p.chunks, p.embeddings, strict=True)
        ]
        for start in range(0, len(chunk_rows), _INSERT_BATCH):
            conn.execute(insert(chunks), chunk_rows[start : start + _INSERT_BATCH])
        conn.execute(
            insert(index_outbox).from_select(
                ["chunk_id", "version"],
                select(chunks.c.id, chunks.c.version_added)
                .where(chunks.c.version_added == version)
                .order_by(chunks.c.id),
            )
        )
        return len(chunk_rows)

    def _finish_version(
        self,
        conn: Connection,
        *,
        version: int,
        parent: VersionInfo | None,
        documents_delta: int,
        chunks_delta: int,
    ) -> VersionInfo:
        last_seq = conn.execute(select(func.coalesce(func.max(index_outbox.c.seq), 0))).scalar_one()
        conn.execute(
            update(knowledge_versions)
            .where(knowledge_versions.c.version == version)
            .values(
                documents=(parent.documents if parent else 0) + documents_delta,
                chunks=(parent.chunks if parent else 0) + chunks_delta,
                last_outbox_seq=last_seq,
            )
        )
        row = conn.execute(select(knowledge_versions).where(knowledge_versions.c.version == version)).one()
        return _version_info(row)

    def replace_embeddings(self, vectors_by_chunk: dict[int, np.ndarray], *, embedder_id: str) -> None:
        """Re-embedding (embedder switch): new vectors for existing chunks; knowledge versions unchanged."""
        with write_transaction(self.engine) as conn:
            for chunk_id, vector in vectors_by_chunk.items():
                conn.execute(
                    update(chunks)
                    .where(chunks.c.id == chunk_id)
                    .values(embedding=np.asarray(vector, dtype="<f4").tobytes())
                )
            conn.execute(kb_meta.delete().where(kb_meta.c.key == EMBEDDER_META_KEY))
            conn.execute(insert(kb_meta).values(key=EMBEDDER_META_KEY, value=embedder_id))

    # ----- reads ----------------------------------------------------------------------------------

    def live_content_hashes(self, keys: Sequence[str]) -> dict[str, str]:
        """Content hash of the live document for each identity in `keys` that has one."""
        with self.engine.connect() as conn:
            return {key: content_hash for key, (_, content_hash) in self._live_by_key(conn, keys).items()}

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

    # ----- outbox (what the vector index follows) ---------------------------------------------------

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


def _chunk_count():  # type: ignore[no-untyped-def]
    """A column with each document's number of chunks, labelled "n" for _document_info."""
    return select(func.count()).where(chunks.c.document_id == documents.c.id).scalar_subquery().label("n")


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _version_info(row) -> VersionInfo:  # type: ignore[no-untyped-def]
    return VersionInfo(
        version=row.version,
        parent=row.parent,
        created_at=_as_utc(row.created_at),
        author=row.author,
        message=row.message,
        content_hash=row.content_hash,
        documents=row.documents,
        chunks=row.chunks,
        last_outbox_seq=row.last_outbox_seq,
    )


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


__all__ = ["EMBEDDER_META_KEY", "KBError", "KnowledgeStore", "version_hash"]
