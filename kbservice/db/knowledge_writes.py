"""The write path of the knowledge base: one new version per ingest or retraction, written with its
documents, chunks, outbox entries and audit entry in one transaction (part of KnowledgeStore)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Connection, Engine, func, insert, select, update

from kbservice.db.audit_log import VERSION_ENTRY_KIND
from kbservice.db.engine import write_transaction
from kbservice.db.knowledge_reads import EMBEDDER_META_KEY, live_by_key
from kbservice.db.knowledge_versions import VersionHistory, version_hash, version_info
from kbservice.db.schema import cases, chunks, documents, images, index_outbox, kb_meta, knowledge_versions
from kbservice.errors import DuplicateIdentityError, IndexMismatchError, UnknownDocumentError
from kbservice.types import PreparedDocument, VersionInfo

if TYPE_CHECKING:
    from kbservice.audit import AuditLog

_INSERT_BATCH = 2000


class KnowledgeWrites(VersionHistory):
    """Writes: each a new version (part of KnowledgeStore)."""

    engine: Engine
    audit: AuditLog | None

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
            live = live_by_key(conn, [p.parsed.source_key for p in prepared])
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
            VERSION_ENTRY_KIND,
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
            raise IndexMismatchError.other_embedder(stored, embedder_id)

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
        return version_info(row)

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
