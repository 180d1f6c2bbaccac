"""Multipart request bodies: one JSON (or case-file) part plus any number of file parts named `images`.

The image parts are written into a fresh temporary folder under names the server chooses (the client's
name keeps only its extension there: a file name can itself identify a patient), and are known by the
client's own base name, which is what the rows of a case file use. The folder is removed afterwards.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from kbservice.api.problems import Problem

IMAGE_PART = "images"
MULTIPART = "multipart/form-data"
_MAX_PARTS = 1000
_SUFFIX = re.compile(r"^(\.[A-Za-z0-9]{1,8}){1,2}$")  # .png, .dcm, .nii.gz


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith(MULTIPART)


def invalid(detail: str, *, part: str | None = None) -> Problem:
    """A 422 problem about the request's parts (`part` names the one at fault)."""
    extra = {"problems": [{"input": part, "message": detail}]} if part else {}
    return Problem(422, "invalid-request", "Invalid request", detail, **extra)


@dataclass
class ImageParts:
    """The uploaded images: the client's base name -> the file written for it, and a digest of all of them
    (names and bytes, in order) for idempotency."""

    files: dict[str, Path] = field(default_factory=dict)
    sha256: str = hashlib.sha256(b"").hexdigest()
    total_bytes: int = 0


@asynccontextmanager
async def multipart_form(request: Request, *, allowed: set[str]) -> AsyncIterator[FormData]:
    """The parsed form (closed afterwards). Parts other than `allowed` are refused by name, so a typo in a
    part's name is an error rather than silently ignored. The body's size is bounded by BodyLimit."""
    limit = int(request.app.state.services.settings.api.max_upload_mb * 1024 * 1024)
    try:
        form = await request.form(max_files=_MAX_PARTS, max_fields=_MAX_PARTS, max_part_size=limit)
    except MultiPartException as exc:
        raise invalid(f"the multipart body cannot be read: {exc.message}") from None
    try:
        unknown = sorted({name for name in form if name not in allowed})
        if unknown:
            raise invalid(
                f"unknown part {unknown[0]!r}; this route takes {', '.join(sorted(allowed))}", part=unknown[0]
            )
        yield form
    finally:
        await form.close()


async def text_part(form: FormData, name: str, *, required: bool) -> bytes | None:
    """One part's bytes, sent as a plain field or as a file; None when absent and not `required`."""
    values = form.getlist(name)
    if len(values) > 1:
        raise invalid(f"send one `{name}` part, not {len(values)}", part=name)
    if not values:
        if required:
            raise invalid(f"the multipart body needs a `{name}` part", part=name)
        return None
    value = values[0]
    return value.encode() if isinstance(value, str) else await value.read()


def client_file_name(upload: UploadFile) -> str:
    """The client's base name for an upload (folders dropped, whichever separator the client used)."""
    raw = upload.filename or ""
    return PureWindowsPath(PurePosixPath(raw).name).name.strip()


async def save_image_parts(form: FormData, folder: Path) -> ImageParts:
    """The `images` parts written into `folder`. Every part must be a file with a name, no two with the
    same name (the form parser caps their number)."""
    digest = hashlib.sha256()
    parts = ImageParts()
    total = 0
    for number, upload in enumerate(form.getlist(IMAGE_PART), start=1):
        if isinstance(upload, str):
            raise invalid("an `images` part must be a file, not a text field", part=IMAGE_PART)
        name = client_file_name(upload)
        if not name:
            raise invalid(f"image part {number} has no file name", part=IMAGE_PART)
        if name in parts.files:
            raise invalid(f"two image parts are named {name!r}", part=f"{IMAGE_PART}[{name}]")
        suffixes = "".join(Path(name).suffixes[-2:]).lower()
        target = folder / f"image-{number:04d}{suffixes if _SUFFIX.match(suffixes) else ''}"
        data = await upload.read()
        target.write_bytes(data)
        total += len(data)
        digest.update(f"{len(name)}:{name}:{len(data)}:".encode())
        digest.update(data)
        parts.files[name] = target
    parts.sha256 = digest.hexdigest()
    parts.total_bytes = total
    return parts


@asynccontextmanager
async def image_parts(form: FormData) -> AsyncIterator[ImageParts]:
    """The `images` parts written into a temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="kbservice-images-") as tmp:
        yield await save_image_parts(form, Path(tmp))
