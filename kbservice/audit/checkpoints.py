"""Signed checkpoints of the audit chain's head, kept outside the database.

A hash chain proves that no row inside it was changed, but not that rows were not cut off its end: whoever can
delete the last rows leaves a shorter chain that still verifies. A checkpoint is the head (sequence number and
hash) at one moment, signed with an Ed25519 key; kept somewhere the database's writers cannot rewrite (an
append-only file, a ticket, another system), it lets `audit verify` show that the chain still reaches it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kbservice import crypto
from kbservice.db.audit_log import AuditLogStore
from kbservice.errors import KBError

# Signed bytes start with this, so a checkpoint signature can never be mistaken for any other signed message.
_DOMAIN = b"kbservice audit checkpoint v1\n"
# The signing key's default file name in the data directory.
CHECKPOINT_KEY_NAME = "audit-checkpoint.key"
_SIGNED_FIELDS = ("seq", "hash", "created_at", "public_key")


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    created_at: str
    public_key: str  # hex of the raw Ed25519 public key
    signature: str  # hex
    source: str = ""  # where it was read from (file:line); not signed

    def signed_bytes(self) -> bytes:
        fields = {name: getattr(self, name) for name in _SIGNED_FIELDS}
        return _DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        return data

    def described(self) -> str:
        return f"checkpoint at row {self.seq}" + (f" ({self.source})" if self.source else "")


def make_checkpoint(store: AuditLogStore, *, key_path: Path) -> Checkpoint:
    """The chain's current head, signed with the key at `key_path` (created owner-only on first use)."""
    head = store.head()
    if head is None:
        raise KBError("the audit log is empty: there is no head to checkpoint")
    key = crypto.signing_key(key_path, create=True)
    unsigned = Checkpoint(
        seq=head.seq,
        hash=head.hash,
        created_at=datetime.now(UTC).isoformat(),
        public_key=crypto.public_key_hex(key),
        signature="",
    )
    return Checkpoint(**{**asdict(unsigned), "signature": crypto.sign(key, unsigned.signed_bytes())})


def read_checkpoints(paths: Iterable[Path]) -> list[Checkpoint]:
    """Every checkpoint in `paths` (JSON lines, as `audit checkpoint` writes them); KBError naming the file and
    line of anything that is not one."""
    found: list[Checkpoint] = []
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise KBError(f"cannot read checkpoint file {path}: {error.strerror}") from error
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                found.append(
                    Checkpoint(
                        seq=int(data["seq"]),
                        hash=str(data["hash"]),
                        created_at=str(data["created_at"]),
                        public_key=str(data["public_key"]),
                        signature=str(data["signature"]),
                        source=f"{path}:{number}",
                    )
                )
            except (ValueError, KeyError, TypeError) as error:
                raise KBError(f"{path}:{number} is not an audit checkpoint ({error})") from error
    if not found:
        raise KBError("the checkpoint files hold no checkpoints")
    return found


def trusted_public_key(key_path: Path) -> str:
    """The public half of the signing key at `key_path` (the key `audit checkpoint` signs with)."""
    if not key_path.is_file():
        raise KBError(
            f"no signing key at {key_path} to trust checkpoints by: pass --public-key (the hex key each checkpoint "
            "line carries, as recorded when it was made) or --key"
        )
    return crypto.public_key_hex(crypto.signing_key(key_path, create=False))


def checkpoint_problem(
    checkpoints: Sequence[Checkpoint], store: AuditLogStore, *, trusted_key: str | None
) -> tuple[int | None, str] | None:
    """(seq, what is wrong) for the first checkpoint that is not signed by `trusted_key` or that the chain no
    longer reaches (its row is gone, or holds another hash); None when all hold."""
    for checkpoint in checkpoints:
        if trusted_key is None or checkpoint.public_key != trusted_key:
            return None, f"{checkpoint.described()} is signed by a key that is not trusted"
        if not crypto.signature_valid(checkpoint.public_key, checkpoint.signed_bytes(), checkpoint.signature):
            return None, f"{checkpoint.described()} has an invalid signature (the checkpoint was altered)"
        entry = store.entry(checkpoint.seq)
        if entry is None:
            head = store.head()
            return checkpoint.seq, (
                f"the chain no longer reaches the {checkpoint.described()}: it ends at row "
                f"{head.seq if head else 0} (rows were cut off its end)"
            )
        if entry.hash != checkpoint.hash:
            return checkpoint.seq, f"row {checkpoint.seq} is not the row the {checkpoint.described()} signed"
    return None
