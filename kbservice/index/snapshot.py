"""Atomic index snapshots: the index files, then a manifest that names them, each written temp -> fsync -> rename.

A snapshot is a base — the FAISS index and, when the lexical replica is on, its BM25 index, both at the same
outbox position — followed by zero or more deltas, each holding what one catch-up added (an ingest into a
large base writes a small delta instead of rewriting everything; `compact` folds them into a new base).
The manifest is the commit point: it names each file and its sha256, so a crash at any moment leaves
either the old snapshot or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from kbservice.checksums import file_sha256
from kbservice.config import IndexSettings
from kbservice.durable_files import fsync_path
from kbservice.errors import IndexMismatchError
from kbservice.index.bm25_index import Bm25Index, read_bm25
from kbservice.index.delta_files import Delta, read_delta, write_delta
from kbservice.index.faiss_index import read_index
from kbservice.index.protocols import VectorIndex

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
_REBUILD_HINT = "run `kbservice index rebuild`"


@dataclass(frozen=True)
class DeltaEntry:
    file: str
    sha256: str
    applied_seq: int  # the outbox position after this delta
    vectors: int  # chunks this delta adds


@dataclass(frozen=True)
class Manifest:
    format: int
    index_file: str
    sha256: str
    applied_seq: int  # the position after the base and every delta
    vectors: int  # chunks in the base and every delta
    embedder_id: str
    dimension: int
    kind: str
    built_at: str
    # The lexical replica's BM25 index at the base's position; None in snapshots written without it.
    lexical_file: str | None = None
    lexical_sha256: str | None = None
    deltas: tuple[DeltaEntry, ...] = field(default_factory=tuple)

    @property
    def build_id(self) -> str:
        """Names this exact index build (base and deltas): provenance records it with every answer."""
        newest = self.deltas[-1].sha256 if self.deltas else self.sha256
        return f"seq{self.applied_seq}-{newest[:12]}"

    @property
    def files(self) -> list[str]:
        """Every file this snapshot consists of (what a backup copies), the manifest aside."""
        return (
            [self.index_file]
            + ([self.lexical_file] if self.lexical_file else [])
            + [delta.file for delta in self.deltas]
        )

    @property
    def delta_vectors(self) -> int:
        return sum(delta.vectors for delta in self.deltas)


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


def _write_durably(directory: Path, name: str, write: Callable[[Path], None]) -> Path:
    """Writes `name` through a temp file (`write` fills it), fsynced and renamed into place; returns its path.
    The caller holds the snapshot lock, so one temp name per file suffices."""
    temp = directory / f".{name}.tmp"
    write(temp)
    fsync_path(temp)
    os.replace(temp, directory / name)
    return directory / name


def write_snapshot(
    index: VectorIndex,
    directory: Path,
    *,
    applied_seq: int,
    embedder_id: str,
    lexical: Bm25Index | None = None,
) -> Manifest:
    """Writes `index` (and `lexical`, when given) and a manifest atomically, then deletes the files no
    manifest names."""
    with snapshot_lock(directory):
        tag = f"{applied_seq}-{uuid.uuid4().hex[:8]}"
        index_name = f"index-{tag}.faiss"
        index_sha = file_sha256(_write_durably(directory, index_name, index.write))
        lexical_name = lexical_sha = None
        if lexical is not None:
            if lexical.size != index.size:
                raise IndexMismatchError(
                    f"the lexical index holds {lexical.size} chunks, the vector index {index.size}; not writing "
                    f"a snapshot that disagrees with itself"
                )
            lexical_name = f"lexical-{tag}.npz"
            lexical_sha = file_sha256(_write_durably(directory, lexical_name, lexical.write))
        manifest = Manifest(
            format=MANIFEST_FORMAT,
            index_file=index_name,
            sha256=index_sha,
            applied_seq=applied_seq,
            vectors=index.size,
            embedder_id=embedder_id,
            dimension=index.dimension,
            kind=index.kind,
            built_at=datetime.now(UTC).isoformat(),
            lexical_file=lexical_name,
            lexical_sha256=lexical_sha,
        )
        _commit_manifest(directory, manifest)
        for stale in _snapshot_files(directory):
            if stale.name not in manifest.files:
                stale.unlink(missing_ok=True)
        for temp in directory.glob(".*.tmp"):
            temp.unlink(missing_ok=True)
        return manifest


def append_delta(directory: Path, *, previous: Manifest, delta: Delta, applied_seq: int) -> Manifest | None:
    """Writes `delta` (what was applied after `previous`, up to `applied_seq`) and a manifest naming the old
    files plus it. None, writing nothing, when the snapshot on disk is no longer `previous` (another process
    sharing this directory wrote one): the caller then writes a whole snapshot."""
    with snapshot_lock(directory):
        try:
            current = read_manifest(directory)
        except IndexMismatchError:
            return None
        if current != previous:
            return None
        name = f"delta-{applied_seq}-{uuid.uuid4().hex[:8]}.npz"
        sha = file_sha256(_write_durably(directory, name, lambda path: write_delta(path, delta)))
        manifest = replace(
            previous,
            applied_seq=applied_seq,
            vectors=previous.vectors + len(delta.ids),
            built_at=datetime.now(UTC).isoformat(),
            deltas=(
                *previous.deltas,
                DeltaEntry(file=name, sha256=sha, applied_seq=applied_seq, vectors=len(delta.ids)),
            ),
        )
        _commit_manifest(directory, manifest)
        return manifest


def _commit_manifest(directory: Path, manifest: Manifest) -> None:
    """The commit point: the manifest replaces the old one, and the directory entry is flushed."""
    _write_durably(directory, MANIFEST_NAME, lambda path: path.write_text(json.dumps(asdict(manifest), indent=2)))
    fsync_path(directory)


def _snapshot_files(directory: Path) -> list[Path]:
    return [*directory.glob("index-*.faiss"), *directory.glob("lexical-*.npz"), *directory.glob("delta-*.npz")]


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
        keep = named.files if named else []
        leftovers = [p for p in directory.glob(".*.tmp")]
        leftovers += [p for p in _snapshot_files(directory) if p.name not in keep]
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
        data["deltas"] = tuple(DeltaEntry(**entry) for entry in data.get("deltas", ()))
        manifest = Manifest(**data)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError, AttributeError) as exc:
        raise IndexMismatchError(f"index manifest {path} is corrupt ({exc}); {_REBUILD_HINT}") from exc
    if manifest.format != MANIFEST_FORMAT:
        raise IndexMismatchError(f"index manifest format {manifest.format} is not supported; {_REBUILD_HINT}")
    return manifest


def load_snapshot(
    directory: Path, *, embedder_id: str, dimension: int, settings: IndexSettings, lexical: bool = False
) -> tuple[VectorIndex, Manifest, Bm25Index | None] | None:
    """The snapshot, each file checked against its checksum and the configured embedder; None when there is
    none. With `lexical`, also its BM25 index (None when the snapshot was written without one)."""
    manifest = read_manifest(directory)
    if manifest is None:
        return None
    if manifest.embedder_id != embedder_id or manifest.dimension != dimension:
        raise IndexMismatchError(
            f"the index in {directory} was built by embedder {manifest.embedder_id} (d={manifest.dimension}); "
            f"the configured embedder is {embedder_id} (d={dimension}); {_REBUILD_HINT}"
        )
    base_vectors = manifest.vectors - manifest.delta_vectors
    index_path = _checked_file(directory, manifest.index_file, manifest.sha256)
    try:
        index = read_index(index_path, kind=manifest.kind, settings=settings)
    except RuntimeError as exc:
        raise IndexMismatchError(f"index file {index_path} cannot be read ({exc}); {_REBUILD_HINT}") from exc
    if index.size != base_vectors:
        raise IndexMismatchError(
            f"index file holds {index.size} vectors, the manifest says {base_vectors}; {_REBUILD_HINT}"
        )
    bm25 = None
    if lexical and manifest.lexical_file and manifest.lexical_sha256:
        lexical_path = _checked_file(directory, manifest.lexical_file, manifest.lexical_sha256)
        try:
            bm25 = read_bm25(lexical_path)
        except ValueError as exc:
            raise IndexMismatchError(f"lexical index {lexical_path} cannot be read ({exc}); {_REBUILD_HINT}") from exc
        if bm25.size != base_vectors:
            raise IndexMismatchError(
                f"lexical index holds {bm25.size} chunks, the manifest says {base_vectors}; {_REBUILD_HINT}"
            )
    for entry in manifest.deltas:
        delta_path = _checked_file(directory, entry.file, entry.sha256)
        try:
            delta = read_delta(delta_path)
        except ValueError as exc:
            raise IndexMismatchError(f"snapshot delta {delta_path} cannot be read ({exc}); {_REBUILD_HINT}") from exc
        if len(delta.ids) != entry.vectors or delta.vectors.shape[1:] != (manifest.dimension,):
            raise IndexMismatchError(
                f"snapshot delta {delta_path} holds {len(delta.ids)} vectors of shape {delta.vectors.shape[1:]}, "
                f"the manifest says {entry.vectors} of dimension {manifest.dimension}; {_REBUILD_HINT}"
            )
        index.add(delta.ids, delta.vectors)
        if bm25 is not None and delta.tokens is not None:
            bm25.add(delta.ids, delta.tokens)
        elif bm25 is not None:
            # A delta written with the lexical replica off leaves the lexical index incomplete: drop it, and
            # the replica rebuilds it from SQL at start-up.
            bm25 = None
    return index, manifest, bm25


def _checked_file(directory: Path, name: str, sha256: str) -> Path:
    path = directory / name
    if not path.exists():
        raise IndexMismatchError(f"index file {path} named by the manifest is missing; {_REBUILD_HINT}")
    actual = file_sha256(path)
    if actual != sha256:
        raise IndexMismatchError(
            f"index file {path} is corrupt or truncated (sha256 {actual[:12]}, manifest says "
            f"{sha256[:12]}); {_REBUILD_HINT}"
        )
    return path
