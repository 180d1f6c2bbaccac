"""Key routes (admin): create (the key is in the response, once), list, revoke — as `kbservice keys`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from kbservice import keys
from kbservice.api.pagination import MAX_LIMIT
from kbservice.api.routes.common import CanAdminister, ServicesDep, page_of, problems
from kbservice.api.schemas import KeyIn, KeyInfo, NewKey, Page

router = APIRouter(tags=["keys"])


@router.post("/keys", status_code=201, response_model=NewKey, responses=problems(409))
def create(principal: CanAdminister, services: ServicesDep, body: KeyIn) -> dict:
    """Creates a key; the response is the only place the key ever appears."""
    record, key = keys.create_key(services, name=body.name, role=body.role, actor=principal.name)
    return {"name": record.name, "role": record.role, "key": key}


@router.get("/keys", response_model=Page[KeyInfo], responses=problems())
def list_keys(
    _: CanAdminister,
    services: ServicesDep,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> dict:
    """Keys by name, with their role (never the keys)."""
    rows = sorted((record.to_json() for record in services.key_store.all()), key=lambda row: row["name"])
    return page_of(rows, key="name", cursor=cursor, limit=limit)


@router.delete("/keys/{name}", response_model=KeyInfo, responses=problems(404))
def revoke(principal: CanAdminister, services: ServicesDep, name: str) -> dict:
    """Revokes a key: every worker refuses it from its next request."""
    return keys.revoke_key(services, name=name, actor=principal.name).to_json()
