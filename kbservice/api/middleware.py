"""Per-request bookkeeping as plain ASGI middleware (streams pass through untouched): Prometheus counts
and latency by route template, and one audit row per request naming the key (never the key itself)."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kbservice.api import metrics

log = logging.getLogger(__name__)
API_PREFIX = "/v1"
# Probes are unauthenticated and frequent; auditing them would bury the log in noise.
UNAUDITED = frozenset({f"{API_PREFIX}/healthz", f"{API_PREFIX}/readyz", "/healthz", "/readyz"})


def _route_template(scope: Scope) -> str:
    """The matched route's template with its router prefix (included routers report theirs without it)."""
    template = getattr(scope.get("route"), "path", None)
    if template is None:
        return "unmatched"
    path: str = scope["path"]
    if path.startswith(API_PREFIX + "/") and not template.startswith(API_PREFIX + "/"):
        template = API_PREFIX + template
    return template


class RequestBookkeeping:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}
        recorded = False

        async def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            seconds = time.perf_counter() - started
            template, method = _route_template(scope), scope["method"]
            metrics.REQUESTS.labels(method, template, str(status["code"])).inc()
            metrics.REQUEST_SECONDS.labels(method, template).observe(seconds)
            if template not in UNAUDITED:
                await self._audit(scope, method, template, status["code"], seconds)

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # Audited before the last byte leaves: a client that has its answer can find its audit row.
                await record()
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            await record()

    async def _audit(self, scope: Scope, method: str, template: str, status: int, seconds: float) -> None:
        state: dict[str, Any] = scope.get("state") or {}
        payload = {
            "method": method,
            "route": template,
            # Path parameters are ids and versions; the query string is left out (search text may quote a note).
            "path_params": {k: str(v) for k, v in (scope.get("path_params") or {}).items()},
            "status": status,
            "ms": round(seconds * 1000, 1),
        }
        services = scope["app"].state.services
        try:
            await run_in_threadpool(
                services.audit.record, "api.request", actor=state.get("actor", "anonymous"), payload=payload
            )
        except Exception:  # the response has gone; a failed audit write must be loud, not fatal
            log.exception("could not audit %s %s", method, template)
