"""The version log against the audit log: every knowledge version writes its row and its audit entry in one
transaction, so the two must agree. A version row edited, deleted or inserted behind kbservice's back (the
chain alone cannot see that: the version rows are not in it) shows up as a disagreement."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from kbservice.db.audit_log import VERSION_ENTRY_KIND
from kbservice.types import AuditEntry, VersionInfo

__all__ = ["VERSION_ENTRY_KIND", "version_log_problem"]

# Fields of a version row that its audit entry records (payload key -> VersionInfo attribute).
_COMPARED = ("parent", "content_hash", "message", "documents", "chunks")


def version_log_problem(
    versions: Sequence[VersionInfo], audited: Mapping[int, AuditEntry]
) -> tuple[int | None, str] | None:
    """(audit seq or None, what disagrees) for the first disagreement between the version rows and their
    `knowledge.version` entries, or None when every row has its entry and every entry its row."""
    rows = {info.version: info for info in versions}
    # Versions written before migration 0003 created the audit log have no entries; they all precede the first
    # audited version (a version after it without an entry is a problem).
    first_audited = min(audited, default=None)
    checked = {v for v in rows if first_audited is not None and v >= first_audited}
    for version in sorted(checked | set(audited)):
        info, entry = rows.get(version), audited.get(version)
        if entry is None:
            return None, f"knowledge version {version} has no audit entry (written or edited outside kbservice)"
        if info is None:
            return entry.seq, f"knowledge version {version} (audit row {entry.seq}) is missing from the version log"
        payload = json.loads(entry.payload)
        changed = [field for field in _COMPARED if payload.get(field) != getattr(info, field)]
        if entry.actor != info.author:
            changed.append("author")
        if changed:
            return entry.seq, (
                f"knowledge version {version} differs from its audit row {entry.seq} ({', '.join(changed)})"
            )
    return None
