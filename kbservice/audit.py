"""The hash-chained audit log: record events, and verify that no row was altered, removed or reordered."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kbservice.db.audit_log import AuditLogStore
from kbservice.types import AuditEntry, AuditVerification

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

    def verify(self) -> AuditVerification:
        """Recomputes every hash in order; reports the first row that does not match its chain.

        A chain alone cannot notice rows cut off its end: compare `entries` and the last hash with a copy
        kept elsewhere for that.
        """
        prev_hash, expected_seq, count = "", 1, 0
        for entry in self.store.entries():
            count += 1
            problem = None
            if entry.seq != expected_seq:
                problem = f"row {expected_seq} is missing (next row is {entry.seq})"
            elif entry.prev_hash != prev_hash:
                problem = f"row {entry.seq} does not point at the previous row's hash"
            elif (
                entry_hash(prev_hash, entry.seq, entry.created_at, entry.kind, entry.actor, entry.payload) != entry.hash
            ):
                problem = f"row {entry.seq} was altered after it was written"
            if problem:
                return AuditVerification(
                    ok=False, entries=count, first_bad_seq=min(entry.seq, expected_seq), problem=problem
                )
            prev_hash, expected_seq = entry.hash, entry.seq + 1
        return AuditVerification(ok=True, entries=count, first_bad_seq=None, problem=None)
