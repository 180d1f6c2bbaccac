"""Files that survive a crash: fsync of files and folders, and publishing a finished folder atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flushes a file's data, or a directory's entries (so a rename survives power loss), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flushes every file and folder under `root`, then `root` itself."""
    for path in [*root.rglob("*"), root]:
        fsync_path(path)


def publish_directory(staging: Path, destination: Path, *, complete_marker: str) -> None:
    """Renames a fully written `staging` folder to `destination` in one step, so readers see all of it or
    nothing. When another process published the same result first (its `complete_marker` file exists),
    ours is dropped: both were built from the same inputs. A folder there without the marker is debris (a
    result is only ever published whole, so someone removed its marker or wrote into it): ours replaces it."""
    fsync_tree(staging)
    try:
        os.replace(staging, destination)
    except OSError:
        if (destination / complete_marker).exists():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            shutil.rmtree(destination)
            os.replace(staging, destination)
    fsync_path(destination.parent)


@contextmanager
def staged_directory(destination: Path, *, complete_marker: str) -> Iterator[Path]:
    """An empty folder beside `destination` to build a result in; published there when the block ends
    normally (the block must write `complete_marker` last), removed when it raises."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    try:
        yield staging
        publish_directory(staging, destination, complete_marker=complete_marker)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
