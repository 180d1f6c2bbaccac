"""Operations routes: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kbservice.api import metrics, schemas
from kbservice.api.routes.common import CanRead, problems
from kbservice.services import Services

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=schemas.Health)
def healthz() -> dict:
    """The process is up (no key needed: it reveals nothing)."""
    return {"status": "ok"}


def readiness(services: Services, *, model_loaded: bool) -> dict[str, Any]:
    checks: dict[str, dict[str, Any]] = {}
    try:
        head = services.store.head()
        checks["database"] = {"ok": True, "knowledge_version": head.version if head else None}
    except Exception as exc:  # readiness reports, it does not raise
        checks["database"] = {"ok": False, "error": type(exc).__name__}
        return {"ready": False, "checks": checks}
    try:
        replica = services.replica
        replica.catch_up(snapshot=False)
        expected = services.store.outbox_count(upto_seq=replica.applied_seq)
        checks["index"] = {
            "ok": replica.index.size == expected,
            "vectors": replica.index.size,
            "sql_chunks_applied": expected,
            "applied_seq": replica.applied_seq,
        }
    except Exception as exc:
        checks["index"] = {"ok": False, "error": type(exc).__name__}
    checks["model"] = {"ok": model_loaded}
    return {"ready": all(c["ok"] for c in checks.values()), "checks": checks}


@router.get("/readyz", response_model=schemas.Readiness, responses={503: {"model": schemas.Readiness}})
async def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers, the index holds exactly the chunks SQL says it has applied, and the
    language model is loaded (no key needed)."""
    state = request.app.state
    body = await run_in_threadpool(readiness, state.services, model_loaded=state.model_loaded.is_set())
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}} | problems(),
)
async def prometheus_metrics(_: CanRead, request: Request) -> Response:
    """Prometheus text exposition: requests and latency per route, recommendation latency, ingest
    throughput, index size, outbox lag, champion adapter, update runs by outcome."""
    body = await run_in_threadpool(metrics.exposition, request.app.state.services)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
