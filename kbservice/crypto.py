"""The one module that imports `cryptography`: Ed25519 signatures (audit checkpoints) and AES-GCM key
wrapping (the de-identification key kept in the database)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kbservice.errors import KBError, SecretKeyError

KEY_BYTES = 32
_NONCE_BYTES = 12


def write_secret_file(path: Path, content: bytes) -> bool:
    """Creates `path` owner-only with `content` unless it exists (never overwritten: a race between two
    processes keeps the first). True when this call created it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def random_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


# --- Ed25519 -----------------------------------------------------------------------------------------------


def signing_key(path: Path, *, create: bool) -> Ed25519PrivateKey:
    """The Ed25519 private key stored at `path` (raw 32 bytes, owner-only), created first if `create`."""
    if create:
        write_secret_file(path, Ed25519PrivateKey.generate().private_bytes_raw())
    elif not path.is_file():
        raise KBError(f"no signing key at {path}")
    raw = path.read_bytes()
    if len(raw) != KEY_BYTES:
        raise KBError(f"{path} is not an Ed25519 signing key (expected {KEY_BYTES} raw bytes)")
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return key.sign(message).hex()


def signature_valid(public_key: str, message: bytes, signature: str) -> bool:
    """True when `signature` (hex) is `public_key`'s (hex, raw) Ed25519 signature of `message`."""
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key)).verify(bytes.fromhex(signature), message)
    except (InvalidSignature, ValueError):
        return False
    return True


# --- AES-GCM key wrapping ----------------------------------------------------------------------------------


def wrap(key_encryption_key: bytes, secret: bytes, *, label: bytes) -> bytes:
    """`secret` sealed under `key_encryption_key` (nonce + AES-256-GCM ciphertext); `label` is bound as
    associated data so a wrapped key cannot be moved to another purpose."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return nonce + AESGCM(key_encryption_key).encrypt(nonce, secret, label)


def unwrap(key_encryption_key: bytes, wrapped: bytes, *, label: bytes) -> bytes:
    try:
        return AESGCM(key_encryption_key).decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], label)
    except (InvalidTag, ValueError) as error:
        raise SecretKeyError(
            f"the configured key-encryption key does not open the {label.decode()} key stored in the database "
            "(every replica must be given the same key-encryption key)"
        ) from error
