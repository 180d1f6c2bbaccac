"""Backup and restore of a whole installation: the database, the index snapshot, the stored adapters, image
encoders and de-identified image files, and the installation's own keys, with a manifest of checksums.

A backup is consistent while the service runs because of the order it copies in: the index snapshot first
(it may only lag the database; a restored replica catches up from the outbox), then one consistent copy of the
database, then the files (adapters, encoders and images are written before the rows that name them, and never
changed, so every file a copied row names exists by then). It is written beside its target and renamed into
place at the end, so a half-written backup never looks like a backup."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbservice import __version__
from kbservice.audit.checkpoints import CHECKPOINT_KEY_NAME
from kbservice.checksums import file_sha256
from kbservice.config import Settings
from kbservice.db import make_engine, migrate
from kbservice.db.backup import backup_database, database_kind, is_empty, restore_database
from kbservice.durable_files import fsync_tree
from kbservice.errors import KBError
from kbservice.imaging.deid_key import LOCAL_KEK_FILE
from kbservice.index.snapshot import MANIFEST_NAME, read_manifest, snapshot_lock
from kbservice.progress import NoProgress, Progress

if TYPE_CHECKING:
    from sqlalchemy import Engine

BACKUP_MANIFEST = "backup.json"
BACKUP_FORMAT = 1
FILES = "files"  # data-directory files live under this folder of a backup, at their data-directory paths
# Folders of the data directory whose versions are immutable once their rows exist (temp names start with ".").
_STORED_FOLDERS = ("adapters", "encoders", "images")
_KEY_FILES = (LOCAL_KEK_FILE, CHECKPOINT_KEY_NAME)


@dataclass(frozen=True)
class BackupReport:
    directory: str
    database: str  # sqlite | postgresql
    schema_revision: str | None
    files: int
    bytes: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RestoreReport:
    data_dir: str
    database: str
    schema_revision: str | None
    files: int
    bytes: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def make_backup(*, settings: Settings, engine: Engine, target: Path, progress: Progress | None = None) -> BackupReport:
    """Writes a consistent backup of the installation into the new directory `target`."""
    progress = progress or NoProgress()
    started = time.perf_counter()
    if target.exists() and any(target.iterdir()):
        raise KBError(f"{target} exists and is not empty; back up into a new directory")
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / FILES).mkdir(parents=True)
    _copy_index_snapshot(settings.index_dir, partial / FILES / "index")
    kind = database_kind(settings.resolved_database_url)
    database_file = backup_database(engine, settings.resolved_database_url, partial)
    stored = list(_stored_files(settings.data_dir))
    with progress.task("Copying stored files", total=len(stored)) as advance:
        for relative in stored:
            _copy(settings.data_dir / relative, partial / FILES / relative)
            advance(1)
    entries = _checksums(partial)
    manifest = {
        "format": BACKUP_FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "kbservice": __version__,
        "database": kind,
        "database_file": database_file,
        "schema_revision": migrate.current_revision(engine),
        "files": entries,
    }
    (partial / BACKUP_MANIFEST).write_text(json.dumps(manifest, indent=2))
    fsync_tree(partial)
    if target.exists():
        target.rmdir()
    os.replace(partial, target)
    return BackupReport(
        directory=str(target),
        database=kind,
        schema_revision=manifest["schema_revision"],
        files=len(entries),
        bytes=sum(entry["bytes"] for entry in entries),
        seconds=round(time.perf_counter() - started, 2),
    )


def restore_backup(source: Path, *, settings: Settings, progress: Progress | None = None) -> RestoreReport:
    """Brings the backup at `source` back into `settings.data_dir` (new or empty) and `settings`' database
    (new SQLite file, or an empty PostgreSQL database), after checking every file against its checksum; the
    schema is then migrated to this code's head."""
    progress = progress or NoProgress()
    started = time.perf_counter()
    manifest = read_backup_manifest(source)
    damaged = verify_backup(source, manifest, progress=progress)
    if damaged:
        raise KBError("the backup is damaged; nothing was restored:\n" + "\n".join(f"  {line}" for line in damaged))
    data_dir = settings.data_dir
    if data_dir.exists() and any(data_dir.iterdir()):
        raise KBError(f"{data_dir} exists and is not empty; restore into a new data directory")
    url = settings.resolved_database_url
    engine = make_engine(url)
    try:
        if database_kind(url) == "postgresql" and not is_empty(engine):
            raise KBError("the target PostgreSQL database is not empty; restore into a new, empty database")
        restore_database(source / manifest["database_file"], url)
        files = [entry for entry in manifest["files"] if entry["path"].startswith(f"{FILES}/")]
        with progress.task("Restoring stored files", total=len(files)) as advance:
            for entry in files:
                _copy(source / entry["path"], data_dir / entry["path"].removeprefix(f"{FILES}/"))
                advance(1)
        for key_file in _KEY_FILES:
            if (data_dir / key_file).exists():
                (data_dir / key_file).chmod(0o600)
        migrate.upgrade(engine)
        revision = migrate.current_revision(engine)
    finally:
        engine.dispose()
    return RestoreReport(
        data_dir=str(data_dir),
        database=manifest["database"],
        schema_revision=revision,
        files=len(files),
        bytes=sum(entry["bytes"] for entry in manifest["files"]),
        seconds=round(time.perf_counter() - started, 2),
    )


def read_backup_manifest(source: Path) -> dict[str, Any]:
    path = source / BACKUP_MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise KBError(f"{source} is not a kbservice backup (no {BACKUP_MANIFEST})") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise KBError(f"{path} is corrupt ({error})") from error
    if manifest.get("format") != BACKUP_FORMAT:
        raise KBError(f"backup format {manifest.get('format')} is not supported (this kbservice reads {BACKUP_FORMAT})")
    return manifest


def verify_backup(source: Path, manifest: dict[str, Any], *, progress: Progress | None = None) -> list[str]:
    """What does not match the manifest: missing files, wrong checksums, files the manifest does not name."""
    progress = progress or NoProgress()
    problems: list[str] = []
    named = {entry["path"] for entry in manifest["files"]}
    with progress.task("Checking the backup", total=len(named)) as advance:
        for entry in manifest["files"]:
            path = source / entry["path"]
            if not path.is_file():
                problems.append(f"{entry['path']}: missing")
            elif file_sha256(path) != entry["sha256"]:
                problems.append(f"{entry['path']}: checksum differs (damaged or altered)")
            advance(1)
    present = {str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()} - {BACKUP_MANIFEST}
    problems += [f"{extra}: not named by the manifest" for extra in sorted(present - named)]
    return problems


def _copy_index_snapshot(index_dir: Path, target: Path) -> None:
    """The current snapshot (manifest and the index files it names), copied under the snapshot lock so no
    writer replaces it halfway."""
    if not index_dir.exists():
        return
    with snapshot_lock(index_dir):
        manifest = read_manifest(index_dir)
        if manifest is None:
            return
        for name in (*manifest.files, MANIFEST_NAME):
            _copy(index_dir / name, target / name)


def _stored_files(data_dir: Path) -> Iterator[str]:
    for folder in _STORED_FOLDERS:
        root = data_dir / folder
        if not root.exists():
            continue
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(data_dir)
            # temp and partial names (a version still being written) are not part of any stored state
            if (
                path.is_file()
                and not any(part.startswith(".") for part in relative.parts)
                and path.suffix != ".partial"
            ):
                yield str(relative)
    for key_file in _KEY_FILES:
        if (data_dir / key_file).is_file():
            yield key_file


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def _checksums(root: Path) -> list[dict[str, Any]]:
    return [
        {"path": str(path.relative_to(root)), "sha256": file_sha256(path), "bytes": path.stat().st_size}
        for path in sorted(p for p in root.rglob("*") if p.is_file())
    ]
