"""Requests that may carry images: a JSON body, or multipart with a `request` part (the same JSON) and
image files as `images` parts. Shared by recommendations, describe and similar images.

Every image is read, checked against the imaging limits and normalised before the route runs; one bad image
refuses the whole request with a problem naming its part. Nothing is stored here: a request's images are
kept only as the normalised pixels its stored answer records (so replay is exact), never as files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from kbservice.api.multipart import (
    IMAGE_PART,
    ImageParts,
    image_parts,
    invalid,
    is_multipart,
    multipart_form,
    text_part,
)
from kbservice.api.problems import Problem, validation_problems
from kbservice.config import ImagingSettings
from kbservice.errors import ImageReadError
from kbservice.types import RequestImage

REQUEST_PART = "request"
Body = TypeVar("Body", bound=BaseModel)


def request_with_images_body(schema: str, *, required: bool, json_body: bool = True) -> dict[str, Any]:
    """The OpenAPI request body of such a route: `schema` names the `request` part's component (required
    or not), which is also accepted as a plain JSON body when `json_body`."""
    properties: dict[str, Any] = {
        IMAGE_PART: {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "X-ray, CT or MRI images: DICOM, PNG, JPEG or NIfTI, within imaging.max_file_mb and "
            "max_pixels.",
        }
    }
    content: dict[str, Any] = {}
    reference = {"$ref": f"#/components/schemas/{schema}"}
    if json_body:
        content["application/json"] = {"schema": reference}
    properties = {REQUEST_PART: reference} | properties
    multipart: dict[str, Any] = {"type": "object", "properties": properties}
    multipart["required"] = [REQUEST_PART] if required else [IMAGE_PART]
    content["multipart/form-data"] = {
        "schema": multipart,
        "encoding": {REQUEST_PART: {"contentType": "application/json"}, IMAGE_PART: {"contentType": "*/*"}},
    }
    return {"requestBody": {"required": True, "content": content}}


def _parsed(model: type[Body], raw: bytes, *, where: str) -> Body:
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        found = validation_problems(exc.errors())
        for entry in found:
            entry["input"] = f"{where}.{entry['input']}" if entry["input"] else where
        detail = "; ".join(f"{p['input']}: {p['message']}" for p in found)
        raise Problem(422, "invalid-request", "Invalid request", detail, problems=found) from None


def read_image_parts(parts: ImageParts, settings: ImagingSettings) -> tuple[RequestImage, ...]:
    """Each uploaded image read and normalised as the CLI reads a file; a bad one is a 422 naming its part
    (as the client named it, never where this server wrote it)."""
    from kbservice.imaging.prepare import request_pixels

    images = []
    for name, path in parts.files.items():
        try:
            images.append(RequestImage.of(request_pixels(path, settings=settings)))
        except ImageReadError as exc:
            reason = str(exc).removeprefix(f"{path}: ")
            raise invalid(f"image part {name!r}: {reason}", part=f"{IMAGE_PART}[{name}]") from None
    return tuple(images)


@asynccontextmanager
async def request_with_images(
    request: Request, model: type[Body], *, required: bool
) -> AsyncIterator[tuple[Body, tuple[RequestImage, ...]]]:
    """The request's JSON (as `model`; an absent optional `request` part reads as `{}`) and its images."""
    if not is_multipart(request):
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type not in ("application/json", ""):
            raise Problem(
                415, "unsupported-media-type", "Unsupported media type", "send application/json or multipart/form-data"
            )
        yield _parsed(model, await request.body(), where="body"), ()
        return
    settings = request.app.state.services.settings.imaging
    async with multipart_form(request, allowed={REQUEST_PART, IMAGE_PART}) as form:
        raw = await text_part(form, REQUEST_PART, required=required)
        body = _parsed(model, raw or b"{}", where=REQUEST_PART)
        async with image_parts(form) as parts:
            images = await run_in_threadpool(read_image_parts, parts, settings)
    yield body, images
