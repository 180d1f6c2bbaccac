"""RFC 9457 problem details: every error is `application/problem+json` with a stable `type` per kind."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kbservice import errors

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://kbservice.dev/problems/"

# (status, type slug, title) per error class; the first match in order wins (subclasses first).
_KINDS: list[tuple[type[Exception], int, str, str]] = [
    (errors.DuplicateIdentityError, 409, "duplicate-identity", "Already stored"),
    (errors.IngestError, 422, "ingest-rejected", "Input could not be ingested"),
    (errors.UnknownVersionError, 404, "unknown-version", "No such knowledge version"),
    (errors.UnknownDocumentError, 404, "unknown-document", "No such document"),
    (errors.UnknownCaseError, 404, "unknown-case", "No such case"),
    (errors.UnknownAdapterError, 404, "unknown-adapter", "No such adapter version"),
    (errors.UnknownRecommendationError, 404, "unknown-recommendation", "No such recommendation"),
    (errors.UnknownJobError, 404, "unknown-job", "No such job"),
    (errors.UnknownKeyError, 404, "unknown-key", "No such API key"),
    (errors.UnknownImageError, 404, "unknown-image", "No such image"),
    (errors.UnknownEncoderError, 404, "unknown-encoder", "No such image encoder version"),
    (errors.ImageReadError, 422, "unreadable-image", "The image cannot be read"),
    (errors.DuplicateKeyNameError, 409, "duplicate-key-name", "Key name taken"),
    (errors.ConflictError, 409, "conflict", "Conflicts with the current state"),
    (errors.InvalidRequestError, 422, "invalid-request", "Invalid request"),
    (errors.IndexMismatchError, 503, "index-mismatch", "The index disagrees with SQL"),
    (errors.SchemaOutdatedError, 503, "schema-outdated", "The database schema is outdated"),
    (errors.KBError, 400, "bad-request", "The request cannot be carried out"),
]
_HTTP_KINDS = {
    401: ("unauthenticated", "Missing or invalid API key"),
    403: ("forbidden", "The key's role does not allow this"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflicts with the current state"),
    413: ("too-large", "Request too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("invalid-request", "Invalid request"),
}


class Problem(Exception):
    """An error the API answers with directly (auth, idempotency, content negotiation)."""

    def __init__(
        self, status: int, slug: str, title: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    instance: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"type": TYPE_BASE + slug, "title": title, "status": status, "detail": detail, "instance": instance}
    return JSONResponse(body | extra, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def validation_problems(validation_errors: Sequence[Any]) -> list[dict[str, str]]:
    """Pydantic's errors as problem entries: where (`input`) and what; never the offending value, which may
    quote a patient note."""
    return [
        {"input": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")} for e in validation_errors
    ]


def kind_of(exc: errors.KBError) -> tuple[int, str, str]:
    for cls, status, slug, title in _KINDS:
        if isinstance(exc, cls):
            return status, slug, title
    return 400, "bad-request", "The request cannot be carried out"  # pragma: no cover - KBError is last


def install(app: FastAPI) -> None:
    """Registers the handlers that turn every error into a problem document."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, exc.slug, exc.title, exc.detail, instance=request.url.path, headers=exc.headers, **exc.extra
        )

    @app.exception_handler(errors.KBError)
    async def _kb_error(request: Request, exc: errors.KBError) -> JSONResponse:
        status, slug, title = kind_of(exc)
        extra = (
            {"problems": [{"input": p, "message": m} for p, m in exc.problems]}
            if isinstance(exc, errors.IngestError)
            else {}
        )
        return problem_response(status, slug, title, str(exc), instance=request.url.path, **extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = validation_problems(exc.errors())
        detail = "; ".join(f"{p['input']}: {p['message']}" for p in problems)
        return problem_response(
            422, "invalid-request", "Invalid request", detail, instance=request.url.path, problems=problems
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug, title = _HTTP_KINDS.get(exc.status_code, ("http-error", "HTTP error"))
        return problem_response(
            exc.status_code, slug, title, str(exc.detail), instance=request.url.path, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The detail stays generic: an internal message may quote request content.
        return problem_response(
            500,
            "internal-error",
            "Internal error",
            "an unexpected error occurred; see the service log",
            instance=request.url.path,
        )
