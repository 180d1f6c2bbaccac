"""Authentication (API keys as bearer tokens, or the web page's cookie) and per-route permission checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kbservice import keys
from kbservice.api.problems import Problem
from kbservice.services import Services

COOKIE_NAME = "kb_key"
_bearer = HTTPBearer(auto_error=False, description="An API key from `kbservice keys create`.")


@dataclass(frozen=True)
class Principal:
    name: str  # the key's name: what the audit log records, never the key
    role: str


def services_of(request: Request) -> Services:
    return request.app.state.services


def principal_for(request: Request, key: str) -> Principal | None:
    """The caller a key names (None: unknown or revoked); the request's audit row is then written under
    the key's name."""
    record = keys.authenticate(services_of(request), key)
    if record is None:
        return None
    request.state.actor = record.name
    return Principal(name=record.name, role=record.role)


def require(*permissions: str) -> Callable[..., Principal]:
    """A dependency that admits a request whose key's role has any of `permissions`: 401 without a valid
    key (unknown or revoked), 403 with a key whose role lacks them."""

    def check(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        key = credentials.credentials if credentials else request.cookies.get(COOKIE_NAME)
        if not key:
            raise Problem(
                401,
                "unauthenticated",
                "Missing API key",
                "send `Authorization: Bearer KEY`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        principal = principal_for(request, key)
        if principal is None:
            raise Problem(
                401,
                "unauthenticated",
                "Invalid API key",
                "the key is unknown or has been revoked",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not any(keys.allows(principal.role, p) for p in permissions):
            raise Problem(
                403,
                "forbidden",
                "Forbidden",
                f"role {principal.role!r} may not do this (needs: {' or '.join(permissions)})",
            )
        return principal

    return check
