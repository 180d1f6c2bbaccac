"""Recommendation routes: answer (JSON, FHIR or a Server-Sent Event stream), show, replay."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from kbservice.api import metrics, schemas
from kbservice.api.fhir import FHIR_MEDIA_TYPE, guidance_response
from kbservice.api.image_requests import request_with_images, request_with_images_body
from kbservice.api.problems import TYPE_BASE, kind_of
from kbservice.api.routes.common import CanAudit, CanRecommend, CanRecommendOrAudit, ServicesDep, problems
from kbservice.errors import KBError
from kbservice.services import Services
from kbservice.types import RequestImage

router = APIRouter(tags=["recommendations"])
SSE_MEDIA_TYPE = "text/event-stream"
_ANSWER_MEDIA_TYPES = {
    "application/json": {"schema": {"$ref": "#/components/schemas/Recommendation"}},
    FHIR_MEDIA_TYPE: {"schema": {"type": "object", "description": "A FHIR R5 GuidanceResponse."}},
    SSE_MEDIA_TYPE: {
        "schema": {"type": "string"},
        "description": "Events `differential`, `plan_text`, `plan_sentence`, then `result` (or `error`).",
    },
}


def _answer(
    services: Services,
    body: schemas.RecommendationIn,
    actor: str,
    listener: Any = None,
    images: tuple[RequestImage, ...] = (),
) -> dict:
    from kbservice.recommend.answer import recommend
    from kbservice.recommend.request import RecommendationRequest

    fields = body.model_dump(exclude={"with_treatment"})
    started = time.perf_counter()
    response = recommend(
        services,
        RecommendationRequest(**fields, images=images),
        actor=actor,
        with_treatment=body.with_treatment,
        listener=listener,
    )
    metrics.RECOMMENDATION_SECONDS.observe(time.perf_counter() - started)
    return response.to_json()


def _preferred(accept: str) -> str:
    """The response type the client asked for: SSE, FHIR or JSON (the default)."""
    ranked = []
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranked.append((quality, media.strip().lower()))
    for _quality, media in sorted(ranked, key=lambda item: -item[0]):
        if media in (SSE_MEDIA_TYPE, FHIR_MEDIA_TYPE, "application/json"):
            return media
    return "application/json"


def _sse(event_id: int, event: str, data: Any) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _stream(
    services: Services, body: schemas.RecommendationIn, actor: str, images: tuple[RequestImage, ...]
) -> AsyncIterator[bytes]:
    """Runs the recommendation on a thread and relays what it hears as numbered events."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def listener(kind: str, data: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (kind, data))

    def work() -> None:
        try:
            result = _answer(services, body, actor, listener, images)
            loop.call_soon_threadsafe(queue.put_nowait, ("result", result))
        except KBError as exc:
            status, slug, title = kind_of(exc)
            problem = {"type": TYPE_BASE + slug, "title": title, "status": status, "detail": str(exc)}
            loop.call_soon_threadsafe(queue.put_nowait, ("error", problem))
        except Exception:
            problem = {
                "type": TYPE_BASE + "internal-error",
                "title": "Internal error",
                "status": 500,
                "detail": "an unexpected error occurred; see the service log",
            }
            loop.call_soon_threadsafe(queue.put_nowait, ("error", problem))
            raise

    threading.Thread(target=work, daemon=True, name="kb-sse").start()
    event_id = 0
    while True:
        kind, data = await queue.get()
        event_id += 1
        yield _sse(event_id, kind, data)
        if kind in ("result", "error"):
            return


@router.post(
    "/recommendations",
    response_model=schemas.Recommendation,
    responses={200: {"content": _ANSWER_MEDIA_TYPES}} | problems(404, 413, 415),
    openapi_extra=request_with_images_body("RecommendationIn", required=True),
    summary="A cited differential diagnosis and treatment plan",
)
async def post_recommendation(principal: CanRecommend, request: Request) -> Any:
    """The same input and output as `kbservice recommend --json`: a JSON body, or multipart with a `request`
    part (that JSON) and image files as `images` parts (findings may then be empty). Every answer is stored
    and audited. `Accept: application/fhir+json` returns a FHIR R5 GuidanceResponse; `Accept:
    text/event-stream` streams the differential and the treatment plan as they are produced, then the full
    result."""
    services: Services = request.app.state.services
    media = _preferred(request.headers.get("accept", "application/json"))
    async with request_with_images(request, schemas.RecommendationIn, required=True) as (body, images):
        if media == SSE_MEDIA_TYPE:
            return StreamingResponse(
                _stream(services, body, principal.name, images),
                media_type=SSE_MEDIA_TYPE,
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        response = await run_in_threadpool(_answer, services, body, principal.name, None, images)
    if media == FHIR_MEDIA_TYPE:
        return JSONResponse(guidance_response(response), media_type=FHIR_MEDIA_TYPE)
    return JSONResponse(response)


@router.get(
    "/recommendations/{recommendation_id}", response_model=schemas.StoredRecommendation, responses=problems(404)
)
def get_recommendation(
    _: CanRecommendOrAudit,
    services: ServicesDep,
    recommendation_id: str,
) -> dict:
    """A stored recommendation with its request, provenance, cited passages and whether it still matches its
    audited hash."""
    from kbservice.recommend.answer import show

    return show(services, recommendation_id).to_json()


@router.post("/recommendations/{recommendation_id}/replay", response_model=schemas.Replay, responses=problems(404))
def replay_recommendation(
    principal: CanAudit,
    services: ServicesDep,
    recommendation_id: str,
) -> dict:
    """Re-runs a stored recommendation from its provenance and says whether the output is identical."""
    from kbservice.recommend.answer import replay

    return replay(services, recommendation_id, actor=principal.name).to_json()
