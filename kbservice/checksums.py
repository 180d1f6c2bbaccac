"""Content checksums for files and directories (provenance records them; loading verifies them)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")
_BLOCK = 1 << 22


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_sha256(directory: Path, *, suffixes: tuple[str, ...] | None = None) -> str:
    """sha256 over the files under `directory` (only names ending in `suffixes`, when given), in path order:
    each file's path relative to `directory` (POSIX form), then its bytes.

    The one layout of every stored directory checksum: base models (recommendation provenance), embedders
    (the index manifest's embedder id), Hugging Face image encoders (their version name) and adapters (their
    artifact checksum; migration 0008 moved the older adapter layout onto this one). Equal for two copies of
    one directory, wherever they lie."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if suffixes is not None and path.suffix not in suffixes:
            continue
        digest.update(path.relative_to(directory).as_posix().encode())
        with path.open("rb") as handle:
            for block in iter(lambda h=handle: h.read(_BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()


def model_fingerprint(model_dir: Path) -> str:
    """The checksum of a model directory's weight files (names and bytes): equal for two copies of one
    model, different otherwise; configuration and tokenizer files do not change it."""
    if not any(p.suffix in WEIGHT_SUFFIXES and p.is_file() for p in model_dir.rglob("*")):
        raise FileNotFoundError(f"no model weights ({', '.join(WEIGHT_SUFFIXES)}) under {model_dir}")
    return directory_sha256(model_dir, suffixes=WEIGHT_SUFFIXES)


def _stat_key(path: Path) -> tuple[str, int, int, int]:
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@functools.cache
def _file_sha256_at(key: tuple[str, int, int, int]) -> str:
    return file_sha256(Path(key[0]))


def unchanged_file_sha256(path: Path) -> str:
    """`file_sha256`, hashed again only when the file's size, modification time or inode changed since this
    process last hashed it: services built many times in one process (tests, `serve` workers rebuilding)
    verify a 90 MB model file once, and a file rewritten in place is hashed again. (Two writes of one size
    within one tick of the kernel's file clock, a few ms, look alike: a guard against files that change
    between commands, not against a writer racing this process.)"""
    return _file_sha256_at(_stat_key(path))


@functools.cache
def _model_fingerprint_at(model_dir: str, weights: tuple[tuple[str, int, int, int], ...]) -> str:
    return model_fingerprint(Path(model_dir))


def unchanged_model_fingerprint(model_dir: Path) -> str:
    """`model_fingerprint`, computed again only when a weight file's size, modification time or inode
    changed (or one was added or removed) since this process last computed it."""
    weights = tuple(sorted(_stat_key(p) for p in model_dir.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file()))
    return _model_fingerprint_at(str(model_dir), weights)
