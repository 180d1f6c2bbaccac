"""KnowledgeStore: every read and write of the versioned knowledge base goes through here.

One store for the aggregate, assembled from its parts, each in its own module: the version history
(knowledge_versions), the write path (knowledge_writes), reads at a version (knowledge_reads) and the
outbox feed that index replicas follow (outbox).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine

from kbservice.db import migrate
from kbservice.db.knowledge_reads import KnowledgeReads
from kbservice.db.knowledge_writes import KnowledgeWrites
from kbservice.db.outbox import OutboxFeed

if TYPE_CHECKING:
    from kbservice.audit import AuditLog


class KnowledgeStore(KnowledgeWrites, KnowledgeReads, OutboxFeed):
    """Versioned documents and chunks in SQL, plus the outbox the vector index follows."""

    def __init__(self, engine: Engine, *, audit: AuditLog | None = None) -> None:
        self.engine = engine
        self.audit = audit  # when set, every new version is audited in the version's own transaction

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def require_schema(self) -> None:
        migrate.require_current_schema(self.engine)
