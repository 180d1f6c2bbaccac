"""Key routes (admin): create (the key is in the response, once), list, revoke — as `kbservice keys`."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from kbservice import keys
from kbservice.api.pagination import MAX_LIMIT
from kbservice.api.routes.common import CanAdminister, ServicesDep, page_of, problems
from kbservice.api.schemas import Page

router = APIRouter(tags=["keys"])


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    role: Literal["reader", "clinician", "curator", "trainer", "auditor", "admin"]


class KeyInfo(BaseModel):
    name: str
    role: str
    created_at: str
    created_by: str
    revoked_at: str | None


class NewKey(BaseModel):
    name: str
    role: str
    key: str = Field(description="Shown once; only its hash is stored.")


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
