"""The installation's de-identification key, shared by every replica through the database.

It keys UID replacement, patient pseudonyms and date shifts, so the same patient must map the same way on
every machine that ingests images. It is stored sealed (AES-GCM) with a key-encryption key that comes from
configuration (or, on one machine, a file in the data directory); the database alone never reveals it."""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

from kbservice import crypto, process_identity
from kbservice.config import Settings
from kbservice.db.secret_store import SecretStore
from kbservice.errors import ConfigError, SecretKeyError

SECRET_NAME = "deid"
LEGACY_KEY_FILE = "deid.key"  # where each data directory kept its own key before migration 0011
LOCAL_KEK_FILE = "deid-kek.key"


def key_encryption_key(settings: Settings) -> bytes:
    """The configured key-encryption key (`deid.key_encryption_key`), else the data directory's own."""
    configured = settings.deid.key_encryption_key
    if configured is None:
        path = settings.data_dir / LOCAL_KEK_FILE
        crypto.write_secret_file(path, crypto.random_key())
        return path.read_bytes()
    return _decode_key(configured.get_secret_value().strip())


def _decode_key(text: str) -> bytes:
    for decode in (bytes.fromhex, base64.b64decode, base64.urlsafe_b64decode):
        try:
            raw = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(raw) == crypto.KEY_BYTES:
            return raw
    raise ConfigError(
        f"deid.key_encryption_key must be {crypto.KEY_BYTES} bytes as hex or base64 "
        '(make one with: python -c "import secrets; print(secrets.token_hex(32))")'
    )


def fingerprint(key: bytes) -> str:
    """Names a key-encryption key without revealing it (so a refusal can say which one sealed the key)."""
    return hashlib.sha256(b"kbservice kek fingerprint\n" + key).hexdigest()[:16]


def deid_key(store: SecretStore, settings: Settings) -> bytes:
    """The shared de-identification key: read from the database and unsealed; on first use stored there
    (adopting this data directory's `deid.key` if it has one). SecretKeyError, naming what to do, when this
    replica's key-encryption key does not open it or its own `deid.key` disagrees with it."""
    kek = key_encryption_key(settings)
    legacy_path = settings.data_dir / LEGACY_KEY_FILE
    legacy = legacy_path.read_bytes() if legacy_path.is_file() else None
    sealed = store.get(SECRET_NAME)
    if sealed is None:
        sealed = store.add_unless_present(
            name=SECRET_NAME,
            wrapped=crypto.wrap(kek, legacy or crypto.random_key(), label=SECRET_NAME.encode()),
            kek_fingerprint=fingerprint(kek),
            created_by=process_identity.current(),
        )
    if sealed.kek_fingerprint != fingerprint(kek):
        raise SecretKeyError(
            f"the de-identification key in the database was sealed by key-encryption key {sealed.kek_fingerprint} "
            f"(stored by {sealed.created_by}), but this replica has {fingerprint(kek)}: give every replica the "
            "same deid.key_encryption_key (KB_DEID__KEY_ENCRYPTION_KEY)"
        )
    key = crypto.unwrap(kek, sealed.wrapped, label=SECRET_NAME.encode())
    if legacy is not None and legacy != key:
        raise SecretKeyError(_disagreement(legacy_path))
    return key


def _disagreement(path: Path) -> str:
    return (
        f"{path} holds another de-identification key than the one every replica shares (in the database): "
        "images de-identified with it would map the same patient to other pseudonyms, UIDs and date shifts. "
        "Keep one: move this file away to use the shared key"
    )
