"""The images of a case file: read, de-identified and stored content-addressed before any SQL is written."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from kbservice.config import Settings
from kbservice.errors import ConfigError, ImageReadError, IngestError, PacsError, UnknownStudyError
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
    upload that no row names is an error too); `dicomweb:STUDY_UID[/SERIES_UID]` names every instance of
    a study or series in the configured PACS. `deid_secret` is asked only when there are images (it may
    create the shared key)."""
    wanted = [(draft, name) for draft in drafts for name in draft.images]
    problems = _unresolved(wanted, uploaded)
    if problems:
        raise IngestError(problems)
    if not wanted:
        return {}, drafts
    with tempfile.TemporaryDirectory(prefix="kbservice-pacs-") as fetched:
        files = _image_files(path, wanted, uploaded, settings=settings, folder=Path(fetched))
        secret = deid_secret()
        prepared = []
        with progress.task("Reading and de-identifying images", total=len(files)) as advance:
            for draft, image_path, name in files:
                try:
                    prepared.append((draft, prepare_image(image_path, settings=settings.imaging, secret=secret)))
                except ImageReadError as exc:
                    # An upload or a PACS instance is named as the row named it, never by where it was written.
                    reason = str(exc) if name is None else str(exc).replace(str(image_path), repr(name))
                    problems.append((f"case {draft.id}", reason))
                advance(1)
    if problems:
        raise IngestError(problems)
    rows: dict[str, list[dict[str, Any]]] = {}
    stored_names: dict[str, list[str]] = {}
    for draft, image in prepared:
        stored = store_file(image, settings.images_dir)
        ordinal = len(rows.get(draft.id, []))
        rows.setdefault(draft.id, []).append(image.row(stored_path=stored, ordinal=ordinal))
        stored_names.setdefault(draft.id, []).append(stored.rsplit("/", 1)[-1])
    return rows, [replace(d, images=stored_names.get(d.id, [])) for d in drafts]


def _image_files(
    path: Path,
    wanted: list[tuple[CaseDraft, str]],
    uploaded: Mapping[str, Path] | None,
    *,
    settings: Settings,
    folder: Path,
) -> list[tuple[CaseDraft, Path, str | None]]:
    """(case, file, the name to report it by; None: its path) for every image, PACS studies fetched into
    `folder` (every instance one image). A PACS that fails stops the whole file before anything is read."""
    from kbservice.imaging.dicomweb import PacsClient, StudyReference, is_reference

    client: PacsClient | None = None
    files: list[tuple[CaseDraft, Path, str | None]] = []
    problems: list[tuple[str, str]] = []
    for draft, name in wanted:
        if not is_reference(name):
            files.append((draft, _image_file(path, name, uploaded), None if uploaded is None else name))
            continue
        try:
            client = client or PacsClient(settings.pacs)
            target = folder / f"study-{len(files):05d}"
            target.mkdir()
            fetched = client.fetch(StudyReference.parse(name), target)
        except (PacsError, UnknownStudyError, ConfigError) as exc:
            problems.append((f"case {draft.id}", f"{name}: {exc}"))
            continue
        files += [(draft, instance, f"{name} instance {n}") for n, instance in enumerate(fetched, start=1)]
    if problems:
        raise IngestError(problems)
    return files


def _image_file(path: Path, name: str, uploaded: Mapping[str, Path] | None) -> Path:
    if uploaded is not None:
        return uploaded[name]
    return Path(name) if Path(name).is_absolute() else path.parent / name


def _unresolved(wanted: list[tuple[CaseDraft, str]], uploaded: Mapping[str, Path] | None) -> list[tuple[str, str]]:
    """With uploads: every file a row names must be among them, and every upload named by a row (PACS
    references are neither)."""
    from kbservice.imaging.dicomweb import is_reference

    if uploaded is None:
        return []
    files = [(draft, name) for draft, name in wanted if not is_reference(name)]
    problems = [
        (f"case {draft.id}", f"image {name!r} is not among the uploaded `images` parts")
        for draft, name in files
        if name not in uploaded
    ]
    named = {name for _, name in files}
    problems += [(f"images part {name!r}", "no case row names this image") for name in uploaded if name not in named]
    return problems
