"""What every router shares: the services dependency, documented error responses, upload handling."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Header, Request, UploadFile
from fastapi import Path as PathParam

from kbservice import keys
from kbservice.api.auth import Principal, require, services_of
from kbservice.api.jobs import accepted
from kbservice.api.pagination import paginate
from kbservice.api.problems import PROBLEM_MEDIA_TYPE, Problem
from kbservice.api.schemas import ProblemDetails
from kbservice.errors import IngestError
from kbservice.services import Services

ServicesDep = Annotated[Services, Depends(services_of)]
MAX_ID = 2**31 - 1  # ids and versions are 32-bit integers in SQL: larger ones are invalid, not a server error
DocumentId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
VersionNumber = Annotated[int, PathParam(ge=0, le=MAX_ID, description="A knowledge version (0: empty).")]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="Retries with the same key and body return the first result."),
]
_DESCRIPTIONS = {
    401: "Missing, unknown or revoked API key.",
    403: "The key's role does not allow this route.",
    404: "Not found.",
    409: "Conflicts with the current state, or the same Idempotency-Key is still running.",
    413: "Upload too large.",
    415: "Send application/json or multipart/form-data.",
    422: "Invalid request (each problem named).",
    503: "Not ready.",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem responses a route can give (401, 403 and 422 always)."""
    return {
        code: {
            "model": ProblemDetails,
            "description": _DESCRIPTIONS[code],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
        }
        for code in sorted({401, 403, 422, *codes})
    }


# What a route declares to say which permission it needs; the value is the caller's key name and role.
CanRead = Annotated[Principal, Depends(require(keys.READ))]
CanRecommend = Annotated[Principal, Depends(require(keys.RECOMMEND))]
CanRecommendOrAudit = Annotated[Principal, Depends(require(keys.RECOMMEND, keys.AUDIT))]
CanIngest = Annotated[Principal, Depends(require(keys.INGEST))]
CanTrain = Annotated[Principal, Depends(require(keys.TRAIN))]
CanAudit = Annotated[Principal, Depends(require(keys.AUDIT))]
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_upload_name(filename: str | None, default_suffix: str = "") -> str:
    """An uploaded file's own base name, with anything but letters, digits, dot, dash and underscore
    replaced (never a path: the client's folders are dropped)."""
    name = _SAFE_NAME.sub("_", Path(filename or "upload").name).strip("._")
    return name or f"upload{default_suffix}"


@contextmanager
def uploaded_files(request: Request, files: list[UploadFile]) -> Iterator[tuple[Path, int]]:
    """The uploads written into a fresh folder under their own (sanitised) names, and their total size;
    the folder is removed afterwards."""
    limit = int(services_of(request).settings.api.max_upload_mb * 1024 * 1024)
    with tempfile.TemporaryDirectory(prefix="kbservice-upload-") as tmp:
        folder, total = Path(tmp), 0
        for upload in files:
            name = safe_upload_name(upload.filename)
            data = upload.file.read()
            total += len(data)
            if total > limit:
                raise Problem(
                    413, "too-large", "Upload too large", f"uploads are limited to {limit:,} bytes per request"
                )
            if (folder / name).exists():
                raise Problem(422, "invalid-request", "Invalid request", f"two uploads are named {name!r}")
            (folder / name).write_bytes(data)
        yield folder, total


def job_owning(request: Request, kind: str, *, created_by: str, folder: Path, work: Callable[[], Any]) -> dict:
    """Submits `work` as a background job that removes `folder` (its uploads) when it ends; the 202 body."""

    def run() -> Any:
        try:
            return work()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return accepted(request.app.state.jobs.submit(kind, created_by=created_by, work=run))


@contextmanager
def uploads_named_by_client(folder: Path) -> Iterator[Callable[[dict], dict]]:
    """Ingest errors raised inside, and the problems of the report the yielded function is given, name an
    uploaded file by its own name (as the client sent it), never by the server's temporary folder."""

    def strip(text: str) -> str:
        return text.replace(f"{folder}{os.sep}", "").replace(str(folder), "the upload")

    def clean_report(report: dict) -> dict:
        cleaned = dict(report)
        if "problems" in report:
            cleaned["problems"] = [strip(p) for p in report["problems"]]
        if "rejected" in report:  # skipped inputs: [path, reason] pairs
            cleaned["rejected"] = [[strip(path), strip(reason)] for path, reason in report["rejected"]]
        return cleaned

    try:
        yield clean_report
    except IngestError as exc:
        raise type(exc)([(strip(path), strip(message)) for path, message in exc.problems]) from None


CanAdminister = Annotated[Principal, Depends(require(keys.ADMIN))]


def version_or_newest(services: Services, as_of: int | None) -> int | None:
    """`as_of` (an unknown version is a 404), else the newest version; None while the base is empty."""
    if as_of is not None:
        return services.store.version(as_of).version
    head = services.store.head()
    return head.version if head else None


def page_of(rows: list[dict[str, Any]], *, key: str, cursor: str | None, limit: int) -> dict[str, Any]:
    """The page of `rows` (ascending by `key`) after `cursor`, as list routes return it."""
    items, next_cursor = paginate(rows, key=lambda row: row[key], cursor=cursor, limit=limit)
    return {"items": items, "next_cursor": next_cursor}
