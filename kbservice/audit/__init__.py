"""The audit log: a hash chain of events (chain), checked against the version log (version_log) and against
signed checkpoints kept outside the database (checkpoints)."""

from kbservice.audit.chain import AuditLog, canonical_json, entry_hash

__all__ = ["AuditLog", "canonical_json", "entry_hash"]
