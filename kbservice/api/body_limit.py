"""A request body larger than `api.max_upload_mb` is refused while it arrives, never read whole first.

A declared Content-Length above the limit is answered 413 before one byte of the body is read; a body
sent without one (chunked) is counted as it streams and refused at the first byte past the limit. So a
200 MB upload costs the server what it read up to the limit, not 200 MB of memory or temporary files.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kbservice.api.problems import problem_response


def _too_large_detail(limit: int) -> str:
    return f"request bodies are limited to {limit:,} bytes (api.max_upload_mb)"


class BodyLimit:
    def __init__(self, app: ASGIApp, *, limit_bytes: int) -> None:
        self.app = app
        self.limit = limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised into whatever is reading the body (a form parser, FastAPI's JSON body): an
                    # HTTPException passes through both and becomes a 413 problem.
                    raise HTTPException(413, _too_large_detail(self.limit))
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The unread body is left on the connection: closing it is the only safe answer.
        response = problem_response(
            413,
            "too-large",
            "Request too large",
            _too_large_detail(self.limit),
            instance=scope.get("path", ""),
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
