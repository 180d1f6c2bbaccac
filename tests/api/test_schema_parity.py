"""Every API schema that mirrors a dataclass has the dataclass's fields, with the same types in their JSON
form, so a field added to an output cannot silently drop out of a response (or the other way round).

A schema that mirrors nothing (requests, pages, problems, API-only views) is listed with the reason; a new
schema must be added to one list or the other.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from datetime import datetime
from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest
from pydantic import BaseModel

from kbservice import types as kb_types
from kbservice.api import schemas
from kbservice.db.service_store import ApiKeyRecord
from kbservice.retrieve import SearchResult

# schema -> the dataclass whose `to_json()` it describes.
MIRRORS: dict[type[BaseModel], type] = {
    schemas.Version: kb_types.VersionInfo,
    schemas.Document: kb_types.DocumentInfo,
    schemas.VersionDiff: kb_types.VersionDiff,
    schemas.SearchHit: kb_types.Hit,
    schemas.SearchResult: SearchResult,
    schemas.IngestReport: kb_types.IngestReport,
    schemas.Case: kb_types.CaseRecord,
    schemas.AuditEntry: kb_types.AuditEntry,
    schemas.AuditVerification: kb_types.AuditVerification,
    schemas.Recommendation: kb_types.Recommendation,
    schemas.DifferentialEntry: kb_types.DifferentialEntry,
    schemas.Treatment: kb_types.TreatmentPlan,
    schemas.PlanSentence: kb_types.PlanSentence,
    schemas.Source: kb_types.Source,
    schemas.Provenance: kb_types.Provenance,
    schemas.ImagesUsed: kb_types.ImagesUsed,
    schemas.StoredRecommendation: kb_types.StoredRecommendation,
    schemas.Replay: kb_types.ReplayResult,
    schemas.KeyInfo: ApiKeyRecord,
}
API_ONLY = {
    "Page": "a page of any listing (items + cursor)",
    "ProblemDetails": "RFC 9457 error documents",
    "VersionDetail": "a Version plus the documents valid at it, composed by the route",
    "JobAccepted": "the 202 body of a background job",
    "Job": "a background job's row (api/jobs.py), an API concept",
    "CaseIn": "a request body: one case as in a JSONL line",
    "RecommendationIn": "a request body: the fields of `kbservice recommend`",
    "AdapterSummary": "the adapter registry's listing rows (dicts), not a dataclass",
    "AdapterDetail": "the adapter registry's detail (a dict), not a dataclass",
    "AliasChange": "champion and previous after a promotion or rollback",
    "UpdateIn": "a request body",
    "Health": "liveness probe",
    "Readiness": "readiness probe",
    "KeyIn": "a request body",
    "NewKey": "the one response that carries a new key",
    "ImageInfo": "an image row's metadata (imaging/metadata.py, a dict)",
    "SimilarImage": "a row of recommend.similar_cases (a dict)",
    "SimilarImages": "recommend.similar_cases's answer (a dict)",
    "DescribeSource": "a source of recommend.describe_images (a dict)",
    "ImageDescription": "recommend.describe_images's answer (a dict)",
    "EncoderVersion": "the encoder registry's listing rows (dicts), like AdapterSummary",
    "SimilarIn": "a request part",
    "DescribeIn": "a request part",
}
# Where the JSON form of a field differs from its Python type on purpose: (dataclass, field) -> JSON type.
JSON_FORMS: dict[tuple[type, str], Any] = {
    # The payload is kept as the canonical JSON text that was hashed; to_json parses it.
    (kb_types.AuditEntry, "payload"): dict[str, Any],
    # A stored answer is returned exactly as stored and hashed (older answers keep their older shape); the
    # schema documents the shape of current answers.
    (kb_types.StoredRecommendation, "response"): kb_types.Recommendation,
}
# Fields the schema may leave out (None by default) because answers stored before they existed lack them.
OLDER_ANSWERS_LACK = {(schemas.Recommendation, "images"), (schemas.Provenance, "candidates")}
# Fields a route adds to the dataclass's JSON from another store (a case's image ids come from the images).
ROUTE_ADDS = {(schemas.Case, "image_ids")}


def _json_type(annotation: Any) -> str:
    """A type in the form its JSON value takes, with each mirrored dataclass named by its schema."""
    schema_of = {dataclass: schema for schema, dataclass in MIRRORS.items()}
    if annotation in schema_of:
        return schema_of[annotation].__name__
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation.__name__
    if annotation is datetime:
        return "str"
    if annotation is Any:
        return "Any"
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(sorted({type(a).__name__ for a in args}))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(sorted({_json_type(a) for a in args}))
    if origin in (list, tuple) or (origin is not None and origin.__name__ == "Sequence"):
        items = {_json_type(a) for a in args if a is not Ellipsis}
        return f"list[{' | '.join(sorted(items))}]"
    if origin is dict:
        return f"dict[{_json_type(args[0])}, {_json_type(args[1])}]"
    if annotation is type(None):
        return "None"
    return annotation.__name__


def _dataclass_fields(dataclass: type) -> dict[str, str]:
    hints = get_type_hints(dataclass)
    internal = set(getattr(dataclass, "INTERNAL_FIELDS", ()))
    return {
        f.name: _json_type(JSON_FORMS.get((dataclass, f.name), hints[f.name]))
        for f in dataclasses.fields(dataclass)
        if f.name not in internal
    }


def _schema_fields(schema: type[BaseModel]) -> dict[str, str]:
    found = {}
    for name, info in schema.model_fields.items():
        annotation = info.annotation
        if (schema, name) in OLDER_ANSWERS_LACK:
            assert info.default is None, f"{schema.__name__}.{name} must default to None for older answers"
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        found[name] = _json_type(annotation)
    return found


@pytest.mark.parametrize("schema", list(MIRRORS), ids=lambda s: s.__name__)
def test_schema_has_the_fields_and_types_of_its_dataclass(schema: type[BaseModel]) -> None:
    declared = {name: kind for name, kind in _schema_fields(schema).items() if (schema, name) not in ROUTE_ADDS}
    assert declared == _dataclass_fields(MIRRORS[schema])


def test_every_schema_mirrors_a_dataclass_or_says_why_not() -> None:
    declared = {
        name
        for name, value in vars(schemas).items()
        if inspect.isclass(value) and issubclass(value, BaseModel) and value.__module__ == schemas.__name__
    }
    mirrored = {schema.__name__ for schema in MIRRORS}
    assert declared - mirrored - set(API_ONLY) - {"_Open"} == set()
    assert set(API_ONLY) <= declared and mirrored <= declared


def test_the_check_catches_a_dropped_or_retyped_field() -> None:
    @dataclasses.dataclass(frozen=True)
    class Widened:
        version: int
        extra: str

    class Narrow(BaseModel):
        version: int

    class Retyped(BaseModel):
        version: str
        extra: str

    assert _schema_fields(Narrow) != _dataclass_fields(Widened)
    assert _schema_fields(Retyped) != _dataclass_fields(Widened)
    assert _schema_fields(type("Same", (Narrow,), {"__annotations__": {"extra": str}})) == _dataclass_fields(Widened)
