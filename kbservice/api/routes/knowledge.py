"""Knowledge routes: guidelines (upload, list, retract), versions and their diffs, search."""

from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kbservice.api import metrics, schemas
from kbservice.api.idempotency import body_sha256, run_idempotent
from kbservice.api.pagination import MAX_LIMIT
from kbservice.api.routes.common import (
    MAX_ID,
    CanIngest,
    CanRead,
    DocumentId,
    IdempotencyKey,
    ServicesDep,
    VersionNumber,
    job_owning,
    page_of,
    problems,
    uploaded_files,
    uploads_named_by_client,
    version_or_newest,
)
from kbservice.services import Services

router = APIRouter(tags=["knowledge"])
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")]
Cursor = Annotated[str | None, Query(description="From the previous page's `next_cursor`.")]


def ingest_uploaded_guidelines(
    services: Services, folder: Path, *, source: str | None, message: str | None, skip_bad: bool, author: str
) -> dict:
    from kbservice.ingest.guidelines import ingest_guidelines

    with uploads_named_by_client(folder) as clean_report:
        report = ingest_guidelines(
            [folder],
            **services.ingest_targets(),
            source=source or "upload",
            author=author,
            message=message,
            skip_bad=skip_bad,
        )
        result = clean_report(report.to_json())
    metrics.observe_ingest(result)
    return result


@router.post(
    "/guidelines",
    status_code=201,
    response_model=schemas.IngestReport,
    responses={202: {"model": schemas.JobAccepted, "description": "Large upload: ingesting as a job."}}
    | problems(409, 413),
    summary="Ingest guideline files as one new knowledge version",
)
def post_guidelines(
    principal: CanIngest,
    request: Request,
    services: ServicesDep,
    files: Annotated[list[UploadFile], File(min_length=1, description="Markdown, text, HTML, PDF or JSONL files.")],
    source: Annotated[str | None, Form(max_length=300)] = None,
    message: Annotated[str | None, Form(max_length=2000)] = None,
    skip_bad: Annotated[bool, Form()] = False,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """All files become ONE version, or nothing changes (unless `skip_bad`). Identical documents are skipped;
    a changed document with the same name and source supersedes the old one. Uploads larger than
    `api.async_ingest_bytes` return 202 and a job."""
    with uploaded_files(request, files) as (folder, total):
        uploads = sorted(folder.iterdir())
        digest = body_sha256(
            *(part for p in uploads for part in (p.name.encode(), p.read_bytes())), [source, message, skip_bad]
        )

        def run() -> tuple[int, dict]:
            options = {"source": source, "message": message, "skip_bad": skip_bad, "author": principal.name}
            if total <= services.settings.api.async_ingest_bytes:
                return 201, ingest_uploaded_guidelines(services, folder, **options)
            kept = Path(tempfile.mkdtemp(prefix="kbservice-job-"))  # the request's own folder goes with it
            shutil.copytree(folder, kept, dirs_exist_ok=True)
            work = partial(ingest_uploaded_guidelines, services, kept, **options)
            return 202, job_owning(request, "ingest.guidelines", created_by=principal.name, folder=kept, work=work)

        return run_idempotent(
            services,
            route="POST /guidelines",
            principal=principal,
            key=idempotency_key,
            request_sha256=digest,
            run=run,
        )


@router.get("/guidelines", response_model=schemas.Page[schemas.Document], responses=problems(404))
def list_guidelines(
    _: CanRead,
    services: ServicesDep,
    as_of: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Documents valid at this version (default: newest).")
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> dict:
    """Guideline documents valid at the newest (or `as_of`) version, by document id."""
    version = version_or_newest(services, as_of)
    docs = [d.to_json() for d in services.store.documents(as_of=version)] if version is not None else []
    return page_of(docs, key="document_id", cursor=cursor, limit=limit)


@router.delete("/guidelines/{document_id}", response_model=schemas.Version, responses=problems(404))
def retract_guideline(
    principal: CanIngest,
    services: ServicesDep,
    document_id: DocumentId,
    reason: Annotated[str | None, Query(max_length=2000, description="Recorded as the version message.")] = None,
) -> dict:
    """A new version in which the document is no longer valid; older versions still see it."""
    info = services.store.retract_document(
        document_id, author=principal.name, reason=reason or f"retract document {document_id}"
    )
    return info.to_json()


@router.get("/versions", response_model=schemas.Page[schemas.Version], responses=problems())
def list_versions(
    _: CanRead,
    services: ServicesDep,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> dict:
    """Knowledge versions, oldest first."""
    return page_of([v.to_json() for v in services.store.versions()], key="version", cursor=cursor, limit=limit)


@router.get("/versions/{version}", response_model=schemas.VersionDetail, responses=problems(404))
def get_version(_: CanRead, services: ServicesDep, version: VersionNumber) -> dict:
    """One version and the guideline documents valid at it."""
    info = services.store.version(version)
    docs = services.store.documents(as_of=info.version)
    return info.to_json() | {"documents_valid": [d.to_json() for d in docs]}


@router.get("/versions/{a}/diff/{b}", response_model=schemas.VersionDiff, responses=problems(404))
def diff_versions(_: CanRead, services: ServicesDep, a: VersionNumber, b: VersionNumber) -> dict:
    """Documents and chunks added and removed from version `a` to version `b`."""
    return services.store.diff(a, b).to_json()


@router.get("/search", response_model=schemas.SearchResult, responses=problems(404))
async def search(
    _: CanRead,
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=2000, description="What to look for, in plain words.")],
    k: Annotated[int, Query(ge=1, le=100)] = 10,
    as_of: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Search the knowledge valid at this version.")
    ] = None,
    mode: Literal["dense", "lexical", "hybrid"] = "hybrid",
) -> dict:
    """Guideline passages by hybrid (dense + lexical), dense or lexical search, at the newest or `as_of`.
    Cases are not searched here: they are patient records, shown only to roles that may see them."""
    services: Services = request.app.state.services
    result = await run_in_threadpool(services.retriever.search, q, k=k, as_of=as_of, mode=mode, kind="guideline")
    return {"version": result.version, "mode": result.mode, "hits": [h.to_json() for h in result.hits]}
