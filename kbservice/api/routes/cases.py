"""Case routes: add labelled cases (a JSON list, or an uploaded CSV/JSONL file, with image files) and list
them."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from kbservice.api import metrics, schemas
from kbservice.api.fhir import FHIR_MEDIA_TYPE
from kbservice.api.idempotency import body_sha256, run_idempotent
from kbservice.api.multipart import (
    IMAGE_PART,
    ImageParts,
    invalid,
    is_multipart,
    multipart_form,
    save_image_parts,
)
from kbservice.api.pagination import MAX_LIMIT
from kbservice.api.problems import Problem, validation_problems
from kbservice.api.routes.common import (
    MAX_ID,
    CanIngest,
    CanRecommendOrAudit,
    IdempotencyKey,
    ServicesDep,
    job_owning,
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
            "application/fhir+json": {
                "schema": {
                    "type": "object",
                    "description": "A FHIR R4 or R5 Bundle (collection, transaction or searchset): one case per "
                    "Encounter, as `kbservice ingest cases bundle.json` reads it.",
                }
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "cases": {
                            "type": "string",
                            "format": "binary",
                            "description": "The cases: a .jsonl or .csv file, a FHIR Bundle (.json), or a JSON "
                            "list (as a field or a .json file). Required (`file` is accepted as its older name).",
                        },
                        "images": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Image files (DICOM, PNG, JPEG, NIfTI) under the names the rows' "
                            "`images` fields use. Every image must be named by a row, and every name a row uses "
                            "must be sent.",
                        },
                        "labeled_by": {"type": "string"},
                    },
                },
                "encoding": {"images": {"contentType": "application/octet-stream"}},
            },
        },
    }
}
_CASE_FILE_SUFFIXES = (".jsonl", ".csv", ".json")


def ingest_case_file(
    services: Services,
    path: Path,
    *,
    labeled_by: str | None,
    author: str,
    uploaded_images: dict[str, Path],
) -> dict[str, Any]:
    from kbservice.ingest.cases import ingest_cases

    # A row's images can only name the files uploaded with it: paths would name this server's files.
    with uploads_named_by_client(path.parent) as clean_report:
        report = ingest_cases(
            path,
            **services.ingest_targets(),
            labeled_by=labeled_by,
            author=author,
            uploaded_images=uploaded_images,
        )
        result = clean_report(report.to_json())
    metrics.observe_ingest(result)
    return result


@dataclass
class _CasesUpload:
    name: str  # the case file's name in the upload folder
    data: bytes
    labeled_by: str | None
    images: ImageParts


def _json_list_as_jsonl(raw: bytes) -> bytes:
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
    return "".join(json.dumps(c.model_dump(exclude_none=True), ensure_ascii=False) + "\n" for c in cases).encode()


async def _read_multipart_cases(request: Request, folder: Path) -> _CasesUpload:
    async with multipart_form(request, allowed={"cases", "file", IMAGE_PART, "labeled_by"}) as form:
        if "cases" in form and "file" in form:
            raise invalid("send the cases as one part, `cases` (or its older name `file`), not both", part="file")
        named = "cases" if "cases" in form else "file"
        upload = form.get(named)
        labeled_by = form.get("labeled_by")
        if upload is None:
            raise invalid("the multipart body needs a `cases` part (a .jsonl/.csv file or a JSON list)", part="cases")
        if isinstance(upload, str):  # a JSON list sent as a plain field
            name, data = "cases.jsonl", _json_list_as_jsonl(upload.encode())
        else:
            suffix = Path(upload.filename or "").suffix.lower()
            if suffix not in _CASE_FILE_SUFFIXES:
                raise invalid(
                    f"the `{named}` file must be .jsonl, .csv or .json (a JSON list or a FHIR Bundle)", part=named
                )
            data = await upload.read()
            if suffix == ".json" and data.lstrip().startswith(b"{"):  # a FHIR Bundle, not a JSON list
                name = "bundle.json"
            elif suffix == ".json":
                name, data = "cases.jsonl", _json_list_as_jsonl(data)
            else:
                name = safe_upload_name(upload.filename, suffix)
        images = await save_image_parts(form, folder)
        return _CasesUpload(name, data, labeled_by if isinstance(labeled_by, str) else None, images)


async def _read_cases(request: Request, folder: Path) -> _CasesUpload:
    """The case file (a JSON list becomes cases.jsonl, a FHIR Bundle bundle.json) and any uploaded images,
    written into `folder`."""
    content_type = request.headers.get("content-type", "")
    if is_multipart(request):
        return await _read_multipart_cases(request, folder)
    if content_type.split(";")[0].strip() == FHIR_MEDIA_TYPE:  # a FHIR Bundle, read as a .json case file
        return _CasesUpload("bundle.json", await request.body(), None, ImageParts())
    if content_type.split(";")[0].strip() in ("application/json", ""):
        return _CasesUpload("cases.jsonl", _json_list_as_jsonl(await request.body()), None, ImageParts())
    raise Problem(
        415,
        "unsupported-media-type",
        "Unsupported media type",
        "send application/json, application/fhir+json (a FHIR Bundle) or multipart/form-data",
    )


@router.post(
    "/cases",
    status_code=201,
    response_model=schemas.IngestReport,
    responses={202: {"model": schemas.JobAccepted, "description": "Large upload: ingesting as a job."}}
    | problems(409, 413, 415),
    openapi_extra=_CASE_BODY,
    summary="Ingest labelled cases (and their images) as one new knowledge version",
)
async def post_cases(
    principal: CanIngest,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Cases and their images are de-identified before storage. Any bad row (named by line and field), bad
    image (named by its part) or already stored case id rejects the whole request: nothing is stored."""
    services: Services = request.app.state.services
    folder = Path(tempfile.mkdtemp(prefix="kbservice-cases-"))
    handed_to_job = False
    try:
        upload = await _read_cases(request, folder)
        extra = [upload.images.sha256] if upload.images.files else []  # JSON bodies hash as they always did
        digest = body_sha256(Path(upload.name).suffix.encode(), upload.data, [upload.labeled_by], *extra)

        def run() -> tuple[int, dict]:
            nonlocal handed_to_job
            path = folder / upload.name
            path.write_bytes(upload.data)
            options = {
                "labeled_by": upload.labeled_by,
                "author": principal.name,
                "uploaded_images": upload.images.files,
            }
            if len(upload.data) + upload.images.total_bytes <= services.settings.api.async_ingest_bytes:
                return 201, ingest_case_file(services, path, **options)
            handed_to_job = True
            work = partial(ingest_case_file, services, path, **options)
            return 202, job_owning(request, "ingest.cases", created_by=principal.name, folder=folder, work=work)

        return await run_in_threadpool(
            run_idempotent,
            services,
            route="POST /cases",
            principal=principal,
            key=idempotency_key,
            request_sha256=digest,
            run=run,
        )
    finally:
        if not handed_to_job:
            shutil.rmtree(folder, ignore_errors=True)


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
    """Stored cases (after de-identification) with their image ids, by store id."""
    version = version_or_newest(services, as_of)
    found = services.case_store.cases(as_of=version) if version is not None else []
    page = page_of([c.to_json() for c in found], key="case_id", cursor=cursor, limit=limit)
    image_ids = services.image_store.ids_by_case([row["case_id"] for row in page["items"]])
    page["items"] = [row | {"image_ids": image_ids.get(row["case_id"], [])} for row in page["items"]]
    return page
