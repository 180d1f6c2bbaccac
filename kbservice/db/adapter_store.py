"""Rows of the learning loop: adapter versions, their aliases, update runs and the frozen evaluation set."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from kbservice.db.engine import write_transaction
from kbservice.db.schema import adapter_aliases, adapters, cases, frozen_eval_cases, update_runs
from kbservice.errors import ConflictError, KBError, UnknownAdapterError

if TYPE_CHECKING:
    from kbservice.audit import AuditLog

ALIASES = ("champion", "previous")
FINAL_STATUSES = ("promoted", "rejected", "failed")


def _now() -> datetime:
    return datetime.now(UTC)


def _row_columns():  # type: ignore[no-untyped-def]
    """Every column but the artifact blob, which only `artifact` reads."""
    return [c for c in adapters.c if c.name != "artifact"]


class AdapterStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ----- adapter versions ---------------------------------------------------------------------------

    def next_version(self) -> str:
        with self.engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(adapters)).scalar_one()
        return f"a{count + 1}"

    def start(self, *, version: str, run_id: str, **fields: Any) -> None:
        """Writes the row of an adapter whose training begins (status "training")."""
        with write_transaction(self.engine) as conn:
            conn.execute(
                insert(adapters).values(version=version, run_id=run_id, status="training", created_at=_now(), **fields)
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
                update(adapters)
                .where(adapters.c.version == version, adapters.c.status == "training")
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
                raise KBError(f"adapter {version} is not in training; its row is final")
            audit.record(
                f"adapter.{status}",
                actor=actor,
                payload={"version": version, "artifact_sha256": artifact_sha256, "error": error},
                conn=conn,
            )
            if status == "promoted":
                self._move_champion(conn, version, audit=audit, actor=actor, reason=promote_reason or "passed the gate")

    def get(self, version: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_row_columns()).where(adapters.c.version == version)).first()
        if row is None:
            raise UnknownAdapterError(f"adapter version {version!r} does not exist; see `kbservice adapters list`")
        return dict(row._mapping)

    def artifact(self, version: str) -> bytes | None:
        with self.engine.connect() as conn:
            return conn.execute(select(adapters.c.artifact).where(adapters.c.version == version)).scalar_one_or_none()

    def all(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(*_row_columns()).order_by(adapters.c.created_at, adapters.c.version)).all()
        return [dict(r._mapping) for r in rows]

    def in_training(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(*_row_columns()).where(adapters.c.status == "training")).all()
        return [dict(r._mapping) for r in rows]

    # ----- aliases ------------------------------------------------------------------------------------

    def aliases(self) -> dict[str, str | None]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(adapter_aliases.c.alias, adapter_aliases.c.version)).all()
        found = {r.alias: r.version for r in rows}
        return {alias: found.get(alias) for alias in ALIASES}

    def alias(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(adapter_aliases.c.version).where(adapter_aliases.c.alias == name)
            ).scalar_one_or_none()

    def promote(self, version: str, *, audit: AuditLog, actor: str, reason: str) -> None:
        """champion <- version, previous <- the old champion."""
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(adapters.c.status).where(adapters.c.version == version)).first()
            if row is None:
                raise UnknownAdapterError(f"adapter version {version!r} does not exist; see `kbservice adapters list`")
            if row.status != "promoted":
                raise ConflictError(
                    f"adapter {version} is {row.status}: only versions that passed the gate can be promoted"
                )
            self._move_champion(conn, version, audit=audit, actor=actor, reason=reason)

    def rollback(self, *, audit: AuditLog, actor: str, reason: str) -> tuple[str | None, str | None]:
        """champion <- previous (previous <- the old champion). Returns (old champion, new champion)."""
        with write_transaction(self.engine) as conn:
            current = self._alias(conn, "champion")
            previous = self._alias(conn, "previous")
            if current is None and previous is None:
                raise ConflictError("nothing to roll back: no adapter has been promoted")
            if current == previous:
                raise ConflictError(
                    f"nothing to roll back: champion and previous are both {current or 'the base model'}"
                )
            self._set_alias(conn, "champion", previous)
            self._set_alias(conn, "previous", current)
            audit.record(
                "adapter.rollback",
                actor=actor,
                payload={"from": current, "to": previous, "reason": reason},
                conn=conn,
            )
            return current, previous

    def _move_champion(self, conn: Connection, version: str, *, audit: AuditLog, actor: str, reason: str) -> None:
        current = self._alias(conn, "champion")
        if current == version:
            raise ConflictError(f"adapter {version} is already the champion")
        self._set_alias(conn, "previous", current)
        self._set_alias(conn, "champion", version)
        audit.record(
            "adapter.promote", actor=actor, payload={"from": current, "to": version, "reason": reason}, conn=conn
        )

    @staticmethod
    def _alias(conn: Connection, name: str) -> str | None:
        return conn.execute(
            select(adapter_aliases.c.version).where(adapter_aliases.c.alias == name)
        ).scalar_one_or_none()

    @staticmethod
    def _set_alias(conn: Connection, name: str, version: str | None) -> None:
        conn.execute(delete(adapter_aliases).where(adapter_aliases.c.alias == name))
        conn.execute(insert(adapter_aliases).values(alias=name, version=version, updated_at=_now()))

    # ----- update runs --------------------------------------------------------------------------------

    def start_run(self, *, run_id: str, triggered_by: str, knowledge_version: int | None) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                insert(update_runs).values(
                    run_id=run_id,
                    started_at=_now(),
                    status="running",
                    triggered_by=triggered_by,
                    knowledge_version=knowledge_version,
                )
            )

    def finish_run(
        self, run_id: str, *, status: str, reason: str, adapter_version: str | None, report: dict[str, Any]
    ) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(update_runs)
                .where(update_runs.c.run_id == run_id)
                .values(
                    status=status, reason=reason, adapter_version=adapter_version, report=report, finished_at=_now()
                )
            )

    def runs(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        query = select(update_runs).order_by(update_runs.c.started_at.desc())
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def run_counts(self) -> dict[str, int]:
        """How many update runs ended in each status (running ones included)."""
        query = select(update_runs.c.status, func.count()).group_by(update_runs.c.status)
        with self.engine.connect() as conn:
            return {status: count for status, count in conn.execute(query)}

    def fail_running_runs(self, *, reason: str) -> list[str]:
        """Marks runs left "running" by a dead process as failed (call only while holding the lease)."""
        with write_transaction(self.engine) as conn:
            ids = list(conn.execute(select(update_runs.c.run_id).where(update_runs.c.status == "running")).scalars())
            if ids:
                conn.execute(
                    update(update_runs)
                    .where(update_runs.c.run_id.in_(ids))
                    .values(status="failed", reason=reason, finished_at=_now())
                )
            return ids

    # ----- the frozen evaluation set ------------------------------------------------------------------

    def frozen_case_ids(self) -> list[int]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(select(frozen_eval_cases.c.case_id).order_by(frozen_eval_cases.c.case_id)).scalars()
            )

    def freeze_cases(self, case_ids: Sequence[int], *, audit: AuditLog, actor: str) -> list[int]:
        """Adds labelled cases to the frozen evaluation set; returns the ones newly added."""
        with write_transaction(self.engine) as conn:
            known = set(conn.execute(select(cases.c.case_id).where(cases.c.case_id.in_(list(case_ids)))).scalars())
            missing = sorted(set(case_ids) - known)
            if missing:
                raise KBError(f"no such case ids: {missing[:10]}")
            present = set(conn.execute(select(frozen_eval_cases.c.case_id)).scalars())
            new = sorted(set(case_ids) - present)
            if new:
                now = _now()
                conn.execute(
                    insert(frozen_eval_cases), [{"case_id": c, "added_at": now, "added_by": actor} for c in new]
                )
                audit.record("eval_set.add", actor=actor, payload={"case_ids": new}, conn=conn)
            return new
