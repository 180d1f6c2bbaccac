"""Learning routes: start an update cycle (a job), read jobs, list and inspect adapters, promote, roll back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from kbservice.api import schemas
from kbservice.api.idempotency import body_sha256, run_idempotent
from kbservice.api.jobs import accepted, reap_orphaned_jobs
from kbservice.api.pagination import MAX_LIMIT, paginate
from kbservice.api.routes.common import CanRead, CanTrain, IdempotencyKey, ServicesDep, problems
from kbservice.services import Services

router = APIRouter(tags=["learning"])
ReasonQuery = Annotated[str | None, Query(max_length=500, description="Recorded in the audit log.")]


@router.post("/updates", status_code=202, response_model=schemas.JobAccepted, responses=problems(409))
def post_update(
    principal: CanTrain,
    request: Request,
    services: ServicesDep,
    body: schemas.UpdateIn | None = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Starts one update cycle as a job: train a candidate adapter on the new labelled cases, judge it against
    the champion, promote or reject. The job fails with a conflict if another cycle holds the lease."""
    from kbservice.learn.scheduler import run_once_with_lease

    def work() -> dict[str, Any]:
        return run_once_with_lease(services, holder=f"api:{principal.name}").to_json()

    def run() -> tuple[int, dict]:
        job_id = request.app.state.jobs.submit("update", created_by=principal.name, work=work)
        reason = body.reason if body else None
        services.audit.record("update.requested", actor=principal.name, payload={"job_id": job_id, "reason": reason})
        return 202, accepted(job_id)

    digest = body_sha256(body.model_dump() if body else None)
    return run_idempotent(
        services, route="POST /updates", principal=principal, key=idempotency_key, request_sha256=digest, run=run
    )


@router.get("/jobs/{job_id}", response_model=schemas.Job, responses=problems(404))
def get_job(_: CanRead, services: ServicesDep, job_id: str) -> dict:
    """A background job's state and, when finished, its result or its problem (a job whose worker process
    died is failed here, so it never stays "running" forever)."""
    reap_orphaned_jobs(services)
    return services.jobs.get(job_id)


@router.get("/adapters", response_model=schemas.Page[schemas.AdapterSummary], responses=problems())
def list_adapters(
    _: CanRead,
    services: ServicesDep,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> dict:
    """Adapter versions in creation order, with their status, aliases and gate metrics."""
    rows = services.registry.list()
    # "a10" sorts after "a9": the number is the key.
    items, next_cursor = paginate(rows, key=lambda r: int(r["version"].lstrip("a")), cursor=cursor, limit=limit)
    return {"items": items, "next_cursor": next_cursor}


@router.get("/adapters/{version}", response_model=schemas.AdapterDetail, responses=problems(404))
def get_adapter(_: CanRead, services: ServicesDep, version: str) -> dict:
    """One adapter version: lineage, data, hyper-parameters, gate report and artifact checksum."""
    return services.registry.show(version)


def champion_and_previous(services: Services) -> dict[str, str | None]:
    aliases = services.adapter_store.aliases()
    return {"champion": aliases.get("champion"), "previous": aliases.get("previous")}


@router.post("/adapters/rollback", response_model=schemas.AliasChange, responses=problems(409))
def rollback_adapter(principal: CanTrain, services: ServicesDep, reason: ReasonQuery = None) -> dict:
    """champion <- previous. Serving workers pick it up between requests."""
    services.adapter_store.rollback(audit=services.audit, actor=principal.name, reason=reason or "api rollback")
    return champion_and_previous(services)


@router.post("/adapters/{version}/promote", response_model=schemas.AliasChange, responses=problems(404, 409))
def promote_adapter(
    principal: CanTrain,
    services: ServicesDep,
    version: str,
    reason: ReasonQuery = None,
) -> dict:
    """Makes a version that passed its gate the champion (the old one becomes `previous`)."""
    services.adapter_store.promote(version, audit=services.audit, actor=principal.name, reason=reason or "api promote")
    return champion_and_previous(services)
