"""Atomic index snapshots: the index file, then a manifest that names it, each written temp -> fsync -> rename.

The manifest is the commit point: it names the index file and its sha256, so a crash at any moment leaves
either the old snapshot or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from kbservice.checksums import file_sha256
from kbservice.config import IndexSettings
from kbservice.durable_files import fsync_path
from kbservice.errors import IndexMismatchError
from kbservice.index.faiss_index import read_index
from kbservice.index.protocols import VectorIndex

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
_REBUILD_HINT = "run `kbservice index rebuild`"


@dataclass(frozen=True)
class Manifest:
    format: int
    index_file: str
    sha256: str
    applied_seq: int
    vectors: int
    embedder_id: str
    dimension: int
    kind: str
    built_at: str

    @property
    def build_id(self) -> str:
        """Names this exact index build: provenance records it with every answer."""
        return f"seq{self.applied_seq}-{self.sha256[:12]}"


@contextlib.contextmanager
def snapshot_lock(directory: Path) -> Iterator[None]:
    """Serialises snapshot writers that share one data directory (e.g. a CLI ingest beside a server)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_snapshot(index: VectorIndex, directory: Path, *, applied_seq: int, embedder_id: str) -> Manifest:
    """Writes `index` and a manifest atomically, then deletes index files no manifest names."""
    with snapshot_lock(directory):
        index_name = f"index-{applied_seq}-{uuid.uuid4().hex[:8]}.faiss"
        temp_index = directory / f".{index_name}.tmp"
        index.write(temp_index)
        fsync_path(temp_index)
        os.replace(temp_index, directory / index_name)
        manifest = Manifest(
            format=MANIFEST_FORMAT,
            index_file=index_name,
            sha256=file_sha256(directory / index_name),
            applied_seq=applied_seq,
            vectors=index.size,
            embedder_id=embedder_id,
            dimension=index.dimension,
            kind=index.kind,
            built_at=datetime.now(UTC).isoformat(),
        )
        temp_manifest = directory / f".{MANIFEST_NAME}.{uuid.uuid4().hex[:8]}.tmp"
        temp_manifest.write_text(json.dumps(asdict(manifest), indent=2))
        fsync_path(temp_manifest)
        os.replace(temp_manifest, directory / MANIFEST_NAME)
        fsync_path(directory)
        for stale in directory.glob("index-*.faiss"):
            if stale.name != index_name:
                stale.unlink(missing_ok=True)
        for temp in directory.glob(".*.tmp"):
            temp.unlink(missing_ok=True)
        return manifest


def remove_leftovers(directory: Path) -> list[str]:
    """Deletes what a snapshot writer killed mid-write left behind: temp files, and index files no manifest
    names. Under the snapshot lock, so a live writer's temp files are never touched. Returns their names."""
    if not directory.exists():
        return []
    with snapshot_lock(directory):
        try:
            named = read_manifest(directory)
        except IndexMismatchError:
            return []  # a corrupt manifest: leave every file for `index verify` and the operator
        keep = named.index_file if named else None
        leftovers = [p for p in directory.glob(".*.tmp")]
        leftovers += [p for p in directory.glob("index-*.faiss") if p.name != keep]
        for path in leftovers:
            path.unlink(missing_ok=True)
    return sorted(p.name for p in leftovers)


def read_manifest(directory: Path) -> Manifest | None:
    """The current manifest, None when no snapshot was ever written, IndexMismatchError when unreadable."""
    path = directory / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        manifest = Manifest(**data)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise IndexMismatchError(f"index manifest {path} is corrupt ({exc}); {_REBUILD_HINT}") from exc
    if manifest.format != MANIFEST_FORMAT:
        raise IndexMismatchError(f"index manifest format {manifest.format} is not supported; {_REBUILD_HINT}")
    return manifest


def load_snapshot(
    directory: Path, *, embedder_id: str, dimension: int, settings: IndexSettings
) -> tuple[VectorIndex, Manifest] | None:
    """The snapshot, checked against its checksum and the configured embedder; None when there is none."""
    manifest = read_manifest(directory)
    if manifest is None:
        return None
    if manifest.embedder_id != embedder_id or manifest.dimension != dimension:
        raise IndexMismatchError(
            f"the index in {directory} was built by embedder {manifest.embedder_id} (d={manifest.dimension}); "
            f"the configured embedder is {embedder_id} (d={dimension}); {_REBUILD_HINT}"
        )
    index_path = directory / manifest.index_file
    if not index_path.exists():
        raise IndexMismatchError(f"index file {index_path} named by the manifest is missing; {_REBUILD_HINT}")
    actual = file_sha256(index_path)
    if actual != manifest.sha256:
        raise IndexMismatchError(
            f"index file {index_path} is corrupt or truncated (sha256 {actual[:12]}, manifest says "
            f"{manifest.sha256[:12]}); {_REBUILD_HINT}"
        )
    try:
        index = read_index(index_path, kind=manifest.kind, settings=settings)
    except RuntimeError as exc:
        raise IndexMismatchError(f"index file {index_path} cannot be read ({exc}); {_REBUILD_HINT}") from exc
    if index.size != manifest.vectors:
        raise IndexMismatchError(
            f"index file holds {index.size} vectors, the manifest says {manifest.vectors}; {_REBUILD_HINT}"
        )
    return index, manifest
