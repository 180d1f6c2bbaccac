"""The images of a case file: read, de-identified and stored content-addressed before any SQL is written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from kbservice.config import Settings
from kbservice.errors import ImageReadError, IngestError
from kbservice.imaging.prepare import prepare_image, store_file
from kbservice.ingest.case_files import CaseDraft
from kbservice.progress import Progress


def prepare_case_images(
    path: Path, drafts: list[CaseDraft], *, settings: Settings, deid_secret: Callable[[], bytes], progress: Progress
) -> tuple[dict[str, list[dict[str, Any]]], list[CaseDraft]]:
    """Every image of every case read, de-identified and written content-addressed, before any SQL: the
    `images` rows per case id, and the drafts with their image paths replaced by the stored names (a
    submitter's file name can itself identify a patient). One unreadable image stops the whole file.
    `deid_secret` is asked only when there are images (it may create the shared key)."""
    wanted = [(draft, ordinal, name) for draft in drafts for ordinal, name in enumerate(draft.images)]
    if not wanted:
        return {}, drafts
    secret = deid_secret()
    problems: list[tuple[str, str]] = []
    rows: dict[str, list[dict[str, Any]]] = {}
    stored_names: dict[str, list[str]] = {}
    prepared = []
    with progress.task("Reading and de-identifying images", total=len(wanted)) as advance:
        for draft, ordinal, name in wanted:
            image_path = Path(name) if Path(name).is_absolute() else path.parent / name
            try:
                prepared.append((draft, ordinal, prepare_image(image_path, settings=settings.imaging, secret=secret)))
            except ImageReadError as exc:
                problems.append((f"case {draft.id}", str(exc)))
            advance(1)
    if problems:
        raise IngestError(problems)
    for draft, ordinal, image in prepared:
        stored = store_file(image, settings.images_dir)
        rows.setdefault(draft.id, []).append(image.row(stored_path=stored, ordinal=ordinal))
        stored_names.setdefault(draft.id, []).append(stored.rsplit("/", 1)[-1])
    return rows, [replace(d, images=stored_names.get(d.id, [])) for d in drafts]
