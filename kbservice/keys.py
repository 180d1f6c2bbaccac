"""API keys and roles: who may do what. Keys are shown once, stored as a sha256, audited by name only."""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import TYPE_CHECKING

from kbservice.db.service_store import ApiKeyRecord
from kbservice.errors import KBError

if TYPE_CHECKING:
    from kbservice.services import Services

# What each permission allows; a route names the one it needs.
READ = "read"  # search, versions, documents, adapters, jobs, metrics
RECOMMEND = "recommend"  # ask for recommendations, see one's answers and the cases behind them
INGEST = "ingest"  # add guidelines and cases, retract
TRAIN = "train"  # start update cycles, promote, roll back
AUDIT = "audit"  # the audit log, any recommendation's provenance, replay
ADMIN = "admin"  # API keys

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "reader": frozenset({READ}),
    "clinician": frozenset({READ, RECOMMEND}),
    "curator": frozenset({READ, RECOMMEND, INGEST}),
    "trainer": frozenset({READ, RECOMMEND, INGEST, TRAIN}),
    "auditor": frozenset({READ, AUDIT}),
    "admin": frozenset({READ, RECOMMEND, INGEST, TRAIN, AUDIT, ADMIN}),
}
ROLES = tuple(ROLE_PERMISSIONS)

_KEY_PREFIX = "kb_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def allows(role: str, permission: str) -> bool:
    return permission in ROLE_PERMISSIONS.get(role, frozenset())


def create_key(services: Services, *, name: str, role: str, actor: str) -> tuple[ApiKeyRecord, str]:
    """Creates a key for `role` under a unique `name`; returns its record and the key itself, which is
    stored nowhere (only its hash). Audited as `key.create` with the name and role."""
    if role not in ROLE_PERMISSIONS:
        raise KBError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if not _NAME.match(name):
        raise KBError("a key name is 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
    key = _KEY_PREFIX + secrets.token_urlsafe(32)
    record = services.key_store.add(name=name, role=role, key_sha256=hash_key(key), created_by=actor)
    services.audit.record("key.create", actor=actor, payload={"name": name, "role": role})
    return record, key


def revoke_key(services: Services, *, name: str, actor: str) -> ApiKeyRecord:
    """Revokes the key named `name`: every worker refuses it from its next request. Audited."""
    record = services.key_store.revoke(name)
    services.audit.record("key.revoke", actor=actor, payload={"name": name})
    return record


def authenticate(services: Services, key: str) -> ApiKeyRecord | None:
    """The active key record for `key`, or None (unknown or revoked)."""
    if not key.startswith(_KEY_PREFIX):
        return None
    record = services.key_store.by_hash(hash_key(key))
    return record if record is not None and record.active else None
