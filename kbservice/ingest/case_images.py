"""The images of a case file: read, de-identified and stored content-addressed before any SQL is written."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from kbservice.config import Settings
from kbservice.errors import ImageReadError, IngestError
from kbservice.imaging.prepare import prepare_image, store_file
from kbservice.ingest.case_files import CaseDraft
from kbservice.progress import Progress


def prepare_case_images(
    path: Path,
    drafts: list[CaseDraft],
    *,
    settings: Settings,
    deid_secret: Callable[[], bytes],
    progress: Progress,
    uploaded: Mapping[str, Path] | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], list[CaseDraft]]:
    """Every image of every case read, de-identified and written content-addressed, before any SQL: the
    `images` rows per case id, and the drafts with their image paths replaced by the stored names (a
    submitter's file name can itself identify a patient). One unreadable image stops the whole file.
    Image names are paths relative to `path`, or, given `uploaded`, names of those uploaded files only (an
    upload that no row names is an error too). `deid_secret` is asked only when there are images (it may
    create the shared key)."""
    wanted = [(draft, ordinal, name) for draft in drafts for ordinal, name in enumerate(draft.images)]
    problems = _unresolved(wanted, uploaded)
    if problems:
        raise IngestError(problems)
    if not wanted:
        return {}, drafts
    secret = deid_secret()
    rows: dict[str, list[dict[str, Any]]] = {}
    stored_names: dict[str, list[str]] = {}
    prepared = []
    with progress.task("Reading and de-identifying images", total=len(wanted)) as advance:
        for draft, ordinal, name in wanted:
            image_path = _image_file(path, name, uploaded)
            try:
                prepared.append((draft, ordinal, prepare_image(image_path, settings=settings.imaging, secret=secret)))
            except ImageReadError as exc:
                # An upload is named as its sender named it, never by where this server wrote it.
                reason = str(exc) if uploaded is None else str(exc).replace(str(image_path), repr(name))
                problems.append((f"case {draft.id}", reason))
            advance(1)
    if problems:
        raise IngestError(problems)
    for draft, ordinal, image in prepared:
        stored = store_file(image, settings.images_dir)
        rows.setdefault(draft.id, []).append(image.row(stored_path=stored, ordinal=ordinal))
        stored_names.setdefault(draft.id, []).append(stored.rsplit("/", 1)[-1])
    return rows, [replace(d, images=stored_names.get(d.id, [])) for d in drafts]


def _image_file(path: Path, name: str, uploaded: Mapping[str, Path] | None) -> Path:
    if uploaded is not None:
        return uploaded[name]
    return Path(name) if Path(name).is_absolute() else path.parent / name


def _unresolved(wanted: list[tuple[CaseDraft, int, str]], uploaded: Mapping[str, Path] | None) -> list[tuple[str, str]]:
    """With uploads: every image a row names must be among them, and every upload named by a row."""
    if uploaded is None:
        return []
    problems = [
        (f"case {draft.id}", f"image {name!r} is not among the uploaded `images` parts")
        for draft, _, name in wanted
        if name not in uploaded
    ]
    named = {name for _, _, name in wanted}
    problems += [(f"images part {name!r}", "no case row names this image") for name in uploaded if name not in named]
    return problems
