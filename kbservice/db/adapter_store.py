"""Rows of the learning loop: adapter versions, their aliases, update runs and the frozen evaluation set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update

from kbservice.db.engine import write_transaction
from kbservice.db.schema import adapter_aliases, adapters, cases, frozen_eval_cases, update_runs
from kbservice.db.versioned_store import VersionedStore, _now
from kbservice.errors import KBError, UnknownAdapterError

if TYPE_CHECKING:
    from kbservice.audit import AuditLog


class AdapterStore(VersionedStore):
    """LoRA adapter versions, plus the update runs that build them and the frozen evaluation set."""

    table = adapters
    alias_table = adapter_aliases
    prefix = "a"
    noun = "adapter"
    unknown_error = UnknownAdapterError

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
