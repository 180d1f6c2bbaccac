"""Audit routes: the hash-chained log (paginated by sequence number) and its verification."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from kbservice.api import schemas
from kbservice.api.pagination import MAX_LIMIT, decode_cursor, encode_cursor
from kbservice.api.problems import Problem
from kbservice.api.routes.common import CanAudit, ServicesDep, problems

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=schemas.Page[schemas.AuditEntry], responses=problems())
def list_audit(
    _: CanAudit,
    services: ServicesDep,
    cursor: Annotated[str | None, Query(description="From the previous page's `next_cursor`.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    kind: Annotated[str | None, Query(max_length=100, description="Only entries of this kind.")] = None,
) -> dict:
    """Audit entries oldest first: knowledge changes, recommendations, adapters, keys and API requests (by key
    name, never the key)."""
    after = decode_cursor(cursor) or 0
    if not isinstance(after, int):
        raise Problem(422, "invalid-cursor", "Invalid cursor", "the cursor is not one this service issued")
    kinds = [kind] if kind else None
    store = services.audit.store
    items = [e.to_json() for e in store.entries(after_seq=after, limit=limit, kinds=kinds)]
    last_seq = items[-1]["seq"] if items else after
    more = len(items) == limit and any(True for _ in store.entries(after_seq=last_seq, limit=1, kinds=kinds))
    return {"items": items, "next_cursor": encode_cursor(last_seq) if more else None}


@router.get("/audit/verify", response_model=schemas.AuditVerification, responses=problems())
def verify_audit(_: CanAudit, services: ServicesDep) -> dict:
    """Recomputes the hash chain and compares the version log with its audit entries; `ok` is false at the
    first altered, removed or reordered entry or version row."""
    return services.audit.verify(versions=services.store.versions()).to_json()
