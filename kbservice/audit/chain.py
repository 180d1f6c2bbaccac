"""The hash-chained audit log: record events, and verify that no row was altered, removed or reordered."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kbservice.audit.checkpoints import Checkpoint, checkpoint_problem
from kbservice.audit.version_log import VERSION_ENTRY_KIND, version_log_problem
from kbservice.db.audit_log import AuditLogStore
from kbservice.types import AuditEntry, AuditVerification, VersionInfo

if TYPE_CHECKING:  # types only: SQLAlchemy stays inside db/
    from sqlalchemy import Connection


def canonical_json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(prev_hash: str, seq: int, created_at: str, kind: str, actor: str, payload: str) -> str:
    """sha256 over the previous hash and every field of the row, so any edit breaks the chain from there."""
    material = json.dumps([prev_hash, seq, created_at, kind, actor, payload], ensure_ascii=False)
    return hashlib.sha256(material.encode()).hexdigest()


class AuditLog:
    """Appends events (who did what, with which inputs) and verifies the chain."""

    def __init__(self, store: AuditLogStore) -> None:
        self.store = store

    def record(self, kind: str, *, actor: str, payload: dict[str, Any], conn: Connection | None = None) -> AuditEntry:
        """Appends one event; `payload` must not contain identifying data (callers pass ids and hashes).

        Pass `conn` to make the event part of the caller's write transaction (all or nothing).
        """
        return self.store.append(
            created_at=datetime.now(UTC).isoformat(),
            kind=kind,
            actor=actor,
            payload=canonical_json(payload),
            chain=entry_hash,
            conn=conn,
        )

    def verify(
        self,
        *,
        versions: Sequence[VersionInfo] | None = None,
        checkpoints: Sequence[Checkpoint] = (),
        trusted_key: str | None = None,
    ) -> AuditVerification:
        """Recomputes every hash in order and reports the first row that does not match its chain; then checks
        that every row of the version log (`versions`, when given) matches its `knowledge.version` entry and
        the other way round, and that the chain still reaches every checkpoint signed by `trusted_key` (rows
        cut off its end)."""
        audited_versions: dict[int, AuditEntry] = {}
        prev_hash, expected_seq, count = "", 1, 0
        for entry in self.store.entries():
            count += 1
            problem = chain_problem(entry, prev_hash=prev_hash, expected_seq=expected_seq)
            if problem:
                return self._verdict(count, versions, checkpoints, min(entry.seq, expected_seq), problem)
            if entry.kind == VERSION_ENTRY_KIND:
                audited_versions.setdefault(int(json.loads(entry.payload)["version"]), entry)
            prev_hash, expected_seq = entry.hash, entry.seq + 1
        for check in (
            lambda: version_log_problem(versions, audited_versions) if versions is not None else None,
            lambda: checkpoint_problem(checkpoints, self.store, trusted_key=trusted_key),
        ):
            found = check()
            if found:
                return self._verdict(count, versions, checkpoints, *found)
        return self._verdict(count, versions, checkpoints, None, None)

    @staticmethod
    def _verdict(
        count: int,
        versions: Sequence[VersionInfo] | None,
        checkpoints: Sequence[Checkpoint],
        first_bad_seq: int | None,
        problem: str | None,
    ) -> AuditVerification:
        return AuditVerification(
            ok=problem is None,
            entries=count,
            first_bad_seq=first_bad_seq,
            problem=problem,
            versions=len(versions or ()),
            checkpoints=len(checkpoints),
        )


def chain_problem(entry: AuditEntry, *, prev_hash: str, expected_seq: int) -> str | None:
    if entry.seq != expected_seq:
        return f"row {expected_seq} is missing (next row is {entry.seq})"
    if entry.prev_hash != prev_hash:
        return f"row {entry.seq} does not point at the previous row's hash"
    if entry_hash(prev_hash, entry.seq, entry.created_at, entry.kind, entry.actor, entry.payload) != entry.hash:
        return f"row {entry.seq} was altered after it was written"
    return None
