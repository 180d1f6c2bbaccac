"""A recommendation request: its fields, and the checks and de-identification it passes before use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from kbservice.control_characters import drop_control_characters
from kbservice.errors import InvalidRequestError, UnknownAdapterError
from kbservice.ingest import deid
from kbservice.types import RequestImage

Mode = Literal["rag", "no-rag"]


@dataclass(frozen=True)
class RecommendationRequest:
    findings: str
    history: str | None = None
    age: int | str | None = None
    sex: str | None = None
    as_of: int | None = None
    adapter: str | None = None  # None: the champion adapter; "none": the base model alone
    mode: Mode = "rag"
    images: tuple[RequestImage, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__) | {"images": [image.to_json() for image in self.images]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecommendationRequest:
        images = tuple(RequestImage.from_json(i) for i in data.get("images") or [])
        return cls(**{k: v for k, v in data.items() if k != "images"}, images=images)


class PatientCase(Protocol):
    """What a stored case (CaseRecord) and a case read from a file (CaseDraft) both say about the patient."""

    @property
    def findings(self) -> str: ...
    @property
    def history(self) -> str | None: ...
    @property
    def age(self) -> str | None: ...
    @property
    def sex(self) -> str | None: ...


def request_for_case(case: PatientCase, *, mode: Mode, as_of: int | None = None) -> RecommendationRequest:
    """The request a new patient presenting like `case` would send (its label and treatment left out)."""
    return RecommendationRequest(
        findings=case.findings, history=case.history, age=case.age, sex=case.sex, as_of=as_of, mode=mode
    )


def clean_request(request: RecommendationRequest, *, max_chars: int) -> RecommendationRequest:
    """The request validated and de-identified: identifiers never reach the prompt or the audit."""
    if not isinstance(request.findings, str) or (not request.findings.strip() and not request.images):
        raise InvalidRequestError("findings are empty; describe the patient's findings or give an image")
    for name in ("findings", "history"):
        value = getattr(request, name)
        if value is not None and not _is_utf8(value):
            raise InvalidRequestError(f"{name} is not valid UTF-8 text")
        if value is not None and len(value) > max_chars:
            raise InvalidRequestError(
                f"{name} is {len(value):,} characters; the limit is {max_chars:,} (ingest.max_case_field_chars)"
            )
    if request.sex is not None and request.sex not in ("F", "M"):
        raise InvalidRequestError(f"sex must be F or M, not {request.sex!r}")
    age = request.age
    if isinstance(age, str) and age.strip().isdigit():
        age = int(age)
    if age is not None:
        if not isinstance(age, int) or not 0 <= age <= 130:
            if age != "90+":
                raise InvalidRequestError(f"age must be a whole number between 0 and 130, not {age!r}")
        elif age > 89:
            age = "90+"
    check_adapter(request.adapter)
    # The one rule for control characters (NUL would also break the prompt's image slot).
    findings = drop_control_characters(request.findings).strip()
    history = drop_control_characters(request.history or "").strip()
    return RecommendationRequest(
        findings=deid.scrub(findings).text if findings else "",
        history=deid.scrub(history).text if history else None,
        age=age,
        sex=request.sex,
        as_of=request.as_of,
        adapter=request.adapter,
        mode=request.mode,
        images=request.images,
    )


def check_adapter(adapter: str | None) -> None:
    """The adapter's name has a version's shape; whether it exists is the registry's question."""
    if adapter is not None and (not adapter.strip() or len(adapter) > 40 or not adapter.isprintable()):
        raise UnknownAdapterError(
            f"adapter version {adapter!r} does not exist; name a version from `kbservice adapters list`, "
            "champion, previous, or none for the base model"
        )


def _is_utf8(text: str) -> bool:
    """False for text holding undecodable bytes (command-line arguments carry them as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
