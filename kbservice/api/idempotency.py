"""Idempotency-Key handling for POST routes that change knowledge or start work.

A retry with the same key and body gets the first response and changes nothing; the same key with
another body is 422; a retry while the first is still running is 409. Records live in SQL, so this holds
across workers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse

from kbservice.api.auth import Principal
from kbservice.api.problems import Problem
from kbservice.services import Services

REPLAYED_HEADER = "Idempotent-Replayed"


def body_sha256(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def run_idempotent(
    services: Services,
    *,
    route: str,
    principal: Principal,
    key: str | None,
    request_sha256: str,
    run: Callable[[], tuple[int, Any]],
) -> JSONResponse:
    """Runs `run` (returning status and JSON body) at most once per (route, caller, key)."""
    if key is None:
        status, body = run()
        return JSONResponse(body, status_code=status)
    if not 1 <= len(key) <= 200:
        raise Problem(422, "invalid-idempotency-key", "Invalid Idempotency-Key", "the key must be 1-200 characters")
    scope = f"{route}|{principal.name}|{key}"
    existing = services.idempotency.claim(scope=scope, request_sha256=request_sha256)
    if existing is not None:
        if existing.request_sha256 != request_sha256:
            raise Problem(
                422,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "this Idempotency-Key was used with a different request body",
            )
        if existing.status != "done":
            raise Problem(
                409,
                "idempotency-in-progress",
                "Request still in progress",
                "the first request with this Idempotency-Key is still running; retry later",
                headers={"Retry-After": "1"},
            )
        return JSONResponse(
            existing.response_body, status_code=existing.response_status or 200, headers={REPLAYED_HEADER: "true"}
        )
    try:
        status, body = run()
    except BaseException:
        # Failed requests change nothing (ingest is all-or-nothing), so a retry may run again.
        services.idempotency.release(scope=scope)
        raise
    services.idempotency.complete(scope=scope, response_status=status, response_body=body)
    return JSONResponse(body, status_code=status)
