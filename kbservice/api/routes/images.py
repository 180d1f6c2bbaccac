"""Image routes: a stored image's metadata and preview, similar images, draft findings, encoder versions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from kbservice.api import schemas
from kbservice.api.image_requests import request_with_images, request_with_images_body
from kbservice.api.multipart import IMAGE_PART, invalid
from kbservice.api.routes.common import MAX_ID, CanRead, CanRecommend, ServicesDep, problems
from kbservice.services import Services

router = APIRouter(tags=["images"])
ImageId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="A stored image id.")]


@router.get("/images/{image_id}", response_model=schemas.ImageInfo, responses=problems(404))
def get_image(_: CanRead, services: ServicesDep, image_id: ImageId) -> dict[str, Any]:
    """A stored image's de-identified metadata (DICOM: every header element as stored)."""
    from kbservice.imaging.metadata import image_metadata

    return image_metadata(services.image_store.get(image_id))


@router.get(
    "/images/{image_id}/preview",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "An 8-bit grey PNG."}} | problems(404),
)
def get_image_preview(
    _: CanRead,
    services: ServicesDep,
    image_id: ImageId,
    size: Annotated[int, Query(ge=16, le=1024, description="The longer side, in pixels.")] = 256,
) -> Response:
    """A rendering of the stored, de-identified image for reviewers (pixels only, no metadata): smaller
    images are enlarged without smoothing, larger ones reduced."""
    from kbservice.imaging.preview import preview_png

    row = services.image_store.get(image_id)
    stored = services.settings.images_dir / row["stored_path"]
    png = preview_png(stored, services.settings.imaging, max_side=size)
    # The same id always names the same stored bytes (content-addressed files, never rewritten).
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})


@router.post(
    "/images/similar",
    response_model=schemas.SimilarImages,
    responses=problems(404, 413, 415),
    openapi_extra=request_with_images_body("SimilarIn", required=False, json_body=False),
    summary="Prior cases whose images are most similar to the uploaded ones",
)
async def post_similar_images(principal: CanRead, request: Request) -> dict[str, Any]:
    """One row per prior case, best image first, by the champion image encoder, as of a version (default:
    newest). Nothing is stored."""
    from kbservice.recommend.similar_cases import similar_cases

    services: Services = request.app.state.services
    async with request_with_images(request, schemas.SimilarIn, required=False) as (body, images):
        if not images:
            raise invalid("send at least one image as an `images` part (multipart/form-data)", part=IMAGE_PART)
        return await run_in_threadpool(similar_cases, services, images, k=body.k, as_of=body.as_of)


@router.post(
    "/describe",
    response_model=schemas.ImageDescription,
    responses=problems(413, 415),
    openapi_extra=request_with_images_body("DescribeIn", required=False, json_body=False),
    summary="Draft findings for images, citing the similar prior cases drawn on",
)
async def post_describe(principal: CanRecommend, request: Request) -> dict[str, Any]:
    """A draft for a reviewer (demonstration software, not a report), conditioned on the images and on the
    similar prior cases it cites. Audited as image.describe."""
    from kbservice.recommend.describe import describe_images

    services: Services = request.app.state.services
    async with request_with_images(request, schemas.DescribeIn, required=False) as (_, images):
        if not images:
            raise invalid("send at least one image as an `images` part (multipart/form-data)", part=IMAGE_PART)
        return await run_in_threadpool(describe_images, services, images, actor=principal.name)


@router.get("/encoders", response_model=list[schemas.EncoderVersion])
def list_encoders(_: CanRead, services: ServicesDep) -> list[dict[str, Any]]:
    """Every image encoder version with its status, aliases, parent and gate metrics, oldest first."""
    return services.encoders.list()
