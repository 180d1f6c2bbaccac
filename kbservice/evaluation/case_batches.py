"""Cases written as a case file and ingested as one knowledge version: how evaluations feed their stores."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kbservice.errors import KBError
from kbservice.ingest.cases import ingest_cases
from kbservice.progress import Progress

if TYPE_CHECKING:
    from kbservice.services import Services


def ingest_case_lines(services: Services, path: Path, lines: Sequence[str], *, author: str, progress: Progress) -> None:
    """Writes case-format JSON lines to `path` and ingests them as one knowledge version."""
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    ingest_cases(path, **services.ingest_targets(), author=author, progress=progress)


def ingest_first_cases(services: Services, folder: Path, cases_file: Path, count: int, *, progress: Progress) -> None:
    """The first `count` cases of a .jsonl case file, ingested as one version (the learning benchmarks)."""
    if not cases_file.exists() or cases_file.suffix != ".jsonl":
        raise KBError(f"{cases_file}: the benchmark reads an existing .jsonl case file")
    lines = [line for line in cases_file.read_text(encoding="utf-8").splitlines() if line.strip()][:count]
    ingest_case_lines(services, folder / "batch.jsonl", lines, author="bench", progress=progress)


def ingest_timed(services: Services, path: Path, progress: Progress) -> tuple[float, int]:
    """Ingests a case file; returns (seconds, cases added)."""
    started = time.perf_counter()
    report = ingest_cases(path, **services.ingest_targets(), author="bench", progress=progress)
    return time.perf_counter() - started, len(report.added)
