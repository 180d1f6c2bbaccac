"""Case routes: add labelled cases (a JSON list, or an uploaded CSV/JSONL file) and list them."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from kbservice.api import metrics, schemas
from kbservice.api.idempotency import body_sha256, run_idempotent
from kbservice.api.jobs import accepted
from kbservice.api.pagination import MAX_LIMIT
from kbservice.api.problems import Problem, validation_problems
from kbservice.api.routes.common import (
    MAX_ID,
    CanIngest,
    CanRecommendOrAudit,
    IdempotencyKey,
    ServicesDep,
    page_of,
    problems,
    safe_upload_name,
    uploads_named_by_client,
    version_or_newest,
)
from kbservice.services import Services

router = APIRouter(tags=["cases"])
_CASE_LIST = TypeAdapter(list[schemas.CaseIn])
_CASE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/CaseIn"}}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "A .jsonl or .csv file."},
                        "labeled_by": {"type": "string"},
                    },
                }
            },
        },
    }
}


def ingest_case_file(services: Services, path: Path, *, labeled_by: str | None, author: str) -> dict[str, Any]:
    from kbservice.ingest.cases import ingest_cases

    # Image paths would name files on this server, not the client's: images come through the CLI for now.
    with uploads_named_by_client(path.parent) as clean_report:
        report = ingest_cases(
            path,
            **services.ingest_targets(),
            labeled_by=labeled_by,
            author=author,
            allow_images=False,
        )
        result = clean_report(report.to_json())
    metrics.observe_ingest(result)
    return result


async def _read_cases(request: Request) -> tuple[str, bytes, str | None]:
    """(file name, file bytes, labeled_by) from a JSON list (named cases.jsonl) or a multipart upload (its
    own name, sanitised)."""
    content_type = request.headers.get("content-type", "")
    limit = int(request.app.state.services.settings.api.max_upload_mb * 1024 * 1024)
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload, labeled_by = form.get("file"), form.get("labeled_by")
        if upload is None or isinstance(upload, str):
            raise Problem(
                422, "invalid-request", "Invalid request", "multipart field `file` (a .jsonl or .csv) is required"
            )
        suffix = Path(upload.filename or "").suffix.lower()
        if suffix not in (".jsonl", ".csv"):
            raise Problem(422, "invalid-request", "Invalid request", "the uploaded file must be .jsonl or .csv")
        data = await upload.read()
        if len(data) > limit:
            raise Problem(413, "too-large", "Upload too large", f"uploads are limited to {limit:,} bytes per request")
        return safe_upload_name(upload.filename, suffix), data, labeled_by if isinstance(labeled_by, str) else None
    if content_type.split(";")[0].strip() in ("application/json", ""):
        raw = await request.body()
        if len(raw) > limit:
            raise Problem(413, "too-large", "Upload too large", f"requests are limited to {limit:,} bytes")
        try:
            cases = _CASE_LIST.validate_json(raw)
        except ValidationError as exc:
            raise Problem(
                422,
                "invalid-request",
                "Invalid request",
                "the body is not a list of cases",
                problems=validation_problems(exc.errors()),
            ) from exc
        if not cases:
            raise Problem(422, "invalid-request", "Invalid request", "the list of cases is empty")
        lines = "".join(json.dumps(c.model_dump(exclude_none=True), ensure_ascii=False) + "\n" for c in cases)
        return "cases.jsonl", lines.encode(), None
    raise Problem(
        415, "unsupported-media-type", "Unsupported media type", "send application/json or multipart/form-data"
    )


@router.post(
    "/cases",
    status_code=201,
    response_model=schemas.IngestReport,
    responses={202: {"model": schemas.JobAccepted, "description": "Large upload: ingesting as a job."}}
    | problems(409, 413, 415),
    openapi_extra=_CASE_BODY,
    summary="Ingest labelled cases as one new knowledge version",
)
async def post_cases(
    principal: CanIngest,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Cases are de-identified before storage. Any bad row (named by line and field) or an already stored case
    id rejects the whole request: nothing is stored."""
    services: Services = request.app.state.services
    name, data, labeled_by = await _read_cases(request)
    digest = body_sha256(Path(name).suffix.encode(), data, [labeled_by])

    def run() -> tuple[int, dict]:
        folder = Path(tempfile.mkdtemp(prefix="kbservice-cases-"))
        path = folder / name
        path.write_bytes(data)
        options = {"labeled_by": labeled_by, "author": principal.name}
        if len(data) <= services.settings.api.async_ingest_bytes:
            try:
                return 201, ingest_case_file(services, path, **options)
            finally:
                shutil.rmtree(folder, ignore_errors=True)

        def work() -> dict:
            try:
                return ingest_case_file(services, path, **options)
            finally:
                shutil.rmtree(folder, ignore_errors=True)

        job_id = request.app.state.jobs.submit("ingest.cases", created_by=principal.name, work=work)
        return 202, accepted(job_id)

    return await run_in_threadpool(
        run_idempotent,
        services,
        route="POST /cases",
        principal=principal,
        key=idempotency_key,
        request_sha256=digest,
        run=run,
    )


@router.get("/cases", response_model=schemas.Page[schemas.Case], responses=problems(404))
def list_cases(
    _: CanRecommendOrAudit,
    services: ServicesDep,
    as_of: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Cases valid at this version (default: newest).")
    ] = None,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> dict:
    """Stored cases (after de-identification), by store id."""
    version = version_or_newest(services, as_of)
    rows = [c.to_json() for c in services.case_store.cases(as_of=version)] if version is not None else []
    return page_of(rows, key="case_id", cursor=cursor, limit=limit)
