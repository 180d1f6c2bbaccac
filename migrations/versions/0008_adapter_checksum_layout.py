"""Adapter checksums in the one directory-checksum layout (kbservice.checksums.directory_sha256).

Adapters were checksummed as (relative name + NUL + bytes) per file, base models and encoders as (relative
name + bytes). Each stored adapter's checksum is recomputed in the shared layout from its stored files (the
tar in `adapters.artifact`), after checking that the old checksum matches those files: a checksum that did
not match before is left as it is, so the mismatch stays visible. The audit log keeps the checksums it
recorded at the time (its entries are never rewritten).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import PurePosixPath

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_adapters = sa.table(
    "adapters",
    sa.column("version", sa.String),
    sa.column("artifact_sha256", sa.String),
    sa.column("artifact", sa.LargeBinary),
)


def _files(archive: bytes) -> list[tuple[str, bytes]]:
    """The tar's regular files as (relative name, bytes), in the order a directory walk sorts them."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        files = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]  # type: ignore[union-attr]
    return sorted(files, key=lambda item: PurePosixPath(item[0]).parts)


def _checksum(files: list[tuple[str, bytes]], *, separator: bytes) -> str:
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode() + separator)
        digest.update(data)
    return digest.hexdigest()


def _rewrite(*, old_separator: bytes, new_separator: bytes) -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_adapters.c.version, _adapters.c.artifact_sha256, _adapters.c.artifact).where(
            _adapters.c.artifact.is_not(None)
        )
    ).all()
    for version, stored, archive in rows:
        files = _files(archive)
        if stored != _checksum(files, separator=old_separator):
            continue
        connection.execute(
            sa.update(_adapters)
            .where(_adapters.c.version == version)
            .values(artifact_sha256=_checksum(files, separator=new_separator))
        )


def upgrade() -> None:
    _rewrite(old_separator=b"\0", new_separator=b"")


def downgrade() -> None:
    _rewrite(old_separator=b"", new_separator=b"\0")
