"""Versions that training produces and promotion moves: immutable rows plus `champion`/`previous` aliases."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Table, delete, func, insert, select, update

from kbservice.db.engine import write_transaction
from kbservice.errors import ConflictError, KBError

if TYPE_CHECKING:
    from kbservice.audit import AuditLog

ALIASES = ("champion", "previous")
FINAL_STATUSES = ("promoted", "rejected", "failed")


def _now() -> datetime:
    return datetime.now(UTC)


class VersionedStore:
    """Immutable trained versions (a row written when training starts, finished exactly once) and the
    `champion`/`previous` aliases that promotion and rollback move. Adapters and image encoders are both."""

    table: Table
    alias_table: Table
    prefix: str  # versions are prefix + a counter: a1, a2, ... / e1, e2, ...
    noun: str  # in messages and audit kinds: "adapter.promote", "encoder.rollback", ...
    unknown_error: type[KBError]

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _row_columns(self):  # type: ignore[no-untyped-def]
        """Every column but the artifact blob, which only `artifact` reads."""
        return [c for c in self.table.c if c.name != "artifact"]

    def _unknown(self, version: str) -> KBError:
        return self.unknown_error(f"{self.noun} version {version!r} does not exist; see `kbservice {self.noun}s list`")

    def next_version(self) -> str:
        with self.engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(self.table)).scalar_one()
        return f"{self.prefix}{count + 1}"

    def start(self, *, version: str, run_id: str, **fields: Any) -> None:
        """Writes the row of a version whose training begins (status "training")."""
        with write_transaction(self.engine) as conn:
            conn.execute(
                insert(self.table).values(
                    version=version, run_id=run_id, status="training", created_at=_now(), **fields
                )
            )

    def finish(
        self,
        version: str,
        *,
        status: str,
        audit: AuditLog,
        actor: str,
        metrics: dict[str, Any] | None = None,
        report: dict[str, Any] | None = None,
        artifact_sha256: str | None = None,
        artifact: bytes | None = None,
        error: str | None = None,
        promote_reason: str | None = None,
    ) -> None:
        """Finishes a training row once (it is immutable afterwards); "promoted" also moves the aliases, in
        the same transaction, so a version is never promoted without its final row and audit entries."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"unknown final status {status!r}")
        with write_transaction(self.engine) as conn:
            done = conn.execute(
                update(self.table)
                .where(self.table.c.version == version, self.table.c.status == "training")
                .values(
                    status=status,
                    finished_at=_now(),
                    metrics=metrics,
                    report=report,
                    artifact_sha256=artifact_sha256,
                    artifact=artifact,
                    error=error,
                )
            ).rowcount
            if done != 1:
                raise KBError(f"{self.noun} {version} is not in training; its row is final")
            audit.record(
                f"{self.noun}.{status}",
                actor=actor,
                payload={"version": version, "artifact_sha256": artifact_sha256, "error": error},
                conn=conn,
            )
            if status == "promoted":
                self._move_champion(conn, version, audit=audit, actor=actor, reason=promote_reason or "passed the gate")

    def get(self, version: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(*self._row_columns()).where(self.table.c.version == version)).first()
        if row is None:
            raise self._unknown(version)
        return dict(row._mapping)

    def artifact(self, version: str) -> bytes | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(self.table.c.artifact).where(self.table.c.version == version)
            ).scalar_one_or_none()

    def all(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*self._row_columns()).order_by(self.table.c.created_at, self.table.c.version)
            ).all()
        return [dict(r._mapping) for r in rows]

    def in_training(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(*self._row_columns()).where(self.table.c.status == "training")).all()
        return [dict(r._mapping) for r in rows]

    # ----- aliases ------------------------------------------------------------------------------------

    def aliases(self) -> dict[str, str | None]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(self.alias_table.c.alias, self.alias_table.c.version)).all()
        found = {r.alias: r.version for r in rows}
        return {alias: found.get(alias) for alias in ALIASES}

    def alias(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(self.alias_table.c.version).where(self.alias_table.c.alias == name)
            ).scalar_one_or_none()

    def promote(self, version: str, *, audit: AuditLog, actor: str, reason: str) -> None:
        """champion <- version, previous <- the old champion."""
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(self.table.c.status).where(self.table.c.version == version)).first()
            if row is None:
                raise self._unknown(version)
            if row.status != "promoted":
                raise ConflictError(
                    f"{self.noun} {version} is {row.status}: only versions that passed the gate can be promoted"
                )
            self._move_champion(conn, version, audit=audit, actor=actor, reason=reason)

    def rollback(self, *, audit: AuditLog, actor: str, reason: str) -> tuple[str | None, str | None]:
        """champion <- previous (previous <- the old champion). Returns (old champion, new champion)."""
        with write_transaction(self.engine) as conn:
            current = self._alias(conn, "champion")
            previous = self._alias(conn, "previous")
            if current is None and previous is None:
                raise ConflictError(f"nothing to roll back: no {self.noun} has been promoted")
            if current == previous:
                raise ConflictError(
                    f"nothing to roll back: champion and previous are both {current or 'the base model'}"
                )
            self._set_alias(conn, "champion", previous)
            self._set_alias(conn, "previous", current)
            audit.record(
                f"{self.noun}.rollback",
                actor=actor,
                payload={"from": current, "to": previous, "reason": reason},
                conn=conn,
            )
            return current, previous

    def _move_champion(self, conn: Connection, version: str, *, audit: AuditLog, actor: str, reason: str) -> None:
        current = self._alias(conn, "champion")
        if current == version:
            raise ConflictError(f"{self.noun} {version} is already the champion")
        self._set_alias(conn, "previous", current)
        self._set_alias(conn, "champion", version)
        audit.record(
            f"{self.noun}.promote", actor=actor, payload={"from": current, "to": version, "reason": reason}, conn=conn
        )

    def _alias(self, conn: Connection, name: str) -> str | None:
        return conn.execute(
            select(self.alias_table.c.version).where(self.alias_table.c.alias == name)
        ).scalar_one_or_none()

    def _set_alias(self, conn: Connection, name: str, version: str | None) -> None:
        conn.execute(delete(self.alias_table).where(self.alias_table.c.alias == name))
        conn.execute(insert(self.alias_table).values(alias=name, version=version, updated_at=_now()))
