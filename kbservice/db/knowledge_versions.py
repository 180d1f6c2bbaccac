"""The version history of the knowledge base: every version a numbered, hash-chained commit, read here."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, and_, func, or_, select

from kbservice.db.schema import knowledge_versions
from kbservice.errors import UnknownVersionError
from kbservice.types import VersionInfo


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


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def version_info(row) -> VersionInfo:  # type: ignore[no-untyped-def]
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


class VersionHistory:
    """Reads of the version history (part of KnowledgeStore)."""

    engine: Engine

    def head(self) -> VersionInfo | None:
        with self.engine.connect() as conn:
            return self._head(conn)

    def _head(self, conn: Connection) -> VersionInfo | None:
        row = conn.execute(select(knowledge_versions).order_by(knowledge_versions.c.version.desc()).limit(1)).first()
        return version_info(row) if row else None

    def version(self, version: int) -> VersionInfo:
        """The version row, or UnknownVersionError naming the versions that exist."""
        with self.engine.connect() as conn:
            row = conn.execute(select(knowledge_versions).where(knowledge_versions.c.version == version)).first()
            if row is None:
                head = self._head(conn)
                known = f"versions 1..{head.version} exist" if head else "the knowledge base is empty"
                raise UnknownVersionError(f"knowledge version {version} does not exist ({known})")
            return version_info(row)

    def versions(self) -> list[VersionInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(knowledge_versions).order_by(knowledge_versions.c.version))
            return [version_info(row) for row in rows]

    def version_for_outbox_seq(self, applied_seq: int) -> int | None:
        """The newest version whose outbox entries all have seq <= applied_seq (what a replica may serve)."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.max(knowledge_versions.c.version)).where(
                    knowledge_versions.c.last_outbox_seq <= applied_seq
                )
            ).scalar()
