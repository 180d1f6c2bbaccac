"""SQL of the audit log: appending a chained row and reading rows in order."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from sqlalchemy import Connection, Engine, insert, select

from kbservice.db.engine import write_transaction
from kbservice.db.schema import audit_log
from kbservice.types import AuditEntry

# The entry each knowledge version writes in the same transaction as its version row (audit verify pairs them).
VERSION_ENTRY_KIND = "knowledge.version"

HashFunction = Callable[[str, int, str, str, str, str], str]  # prev_hash, seq, created_at, kind, actor, payload


class AuditLogStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def append(
        self,
        *,
        created_at: str,
        kind: str,
        actor: str,
        payload: str,
        chain: HashFunction,
        conn: Connection | None = None,
    ) -> AuditEntry:
        """Appends one row chaining the last row's hash. With `conn` (a write transaction the caller holds)
        the row commits or rolls back with the caller's change; otherwise in its own write transaction."""
        if conn is None:
            with write_transaction(self.engine) as own:
                return self._append(own, created_at, kind, actor, payload, chain)
        return self._append(conn, created_at, kind, actor, payload, chain)

    def _append(
        self, conn: Connection, created_at: str, kind: str, actor: str, payload: str, chain: HashFunction
    ) -> AuditEntry:
        last = conn.execute(select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)).first()
        seq, prev_hash = (last.seq + 1, last.hash) if last else (1, "")
        row = {
            "seq": seq,
            "created_at": created_at,
            "kind": kind,
            "actor": actor,
            "payload": payload,
            "prev_hash": prev_hash,
            "hash": chain(prev_hash, seq, created_at, kind, actor, payload),
        }
        conn.execute(insert(audit_log).values(**row))
        return AuditEntry(**row)

    def entries(
        self,
        *,
        after_seq: int = 0,
        limit: int | None = None,
        batch_size: int = 1000,
        kinds: Sequence[str] | None = None,
    ) -> Iterator[AuditEntry]:
        """Rows in seq order after `after_seq` (only of `kinds` if given), read in batches (at most `limit`)."""
        yielded = 0
        while limit is None or yielded < limit:
            take = batch_size if limit is None else min(batch_size, limit - yielded)
            query = select(audit_log).where(audit_log.c.seq > after_seq)
            if kinds is not None:
                query = query.where(audit_log.c.kind.in_(list(kinds)))
            with self.engine.connect() as conn:
                rows = conn.execute(query.order_by(audit_log.c.seq).limit(take)).all()
            if not rows:
                return
            for row in rows:
                yield AuditEntry(**row._asdict())
            after_seq = rows[-1].seq
            yielded += len(rows)

    def latest(self, *, kinds: Sequence[str], limit: int) -> list[AuditEntry]:
        """The newest `limit` rows of `kinds`, newest first."""
        query = select(audit_log).where(audit_log.c.kind.in_(list(kinds))).order_by(audit_log.c.seq.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [AuditEntry(**row._asdict()) for row in conn.execute(query)]

    def head(self) -> AuditEntry | None:
        """The last row of the chain, or None when the log is empty."""
        with self.engine.connect() as conn:
            row = conn.execute(select(audit_log).order_by(audit_log.c.seq.desc()).limit(1)).first()
        return AuditEntry(**row._asdict()) if row else None

    def entry(self, seq: int) -> AuditEntry | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(audit_log).where(audit_log.c.seq == seq)).first()
        return AuditEntry(**row._asdict()) if row else None
