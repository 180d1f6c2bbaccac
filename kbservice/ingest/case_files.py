"""Case files: JSONL or CSV rows read, checked field by field and turned into case drafts (not yet
de-identified). Every problem is reported by line and field."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbservice.control_characters import drop_control_characters_in
from kbservice.errors import IngestError

FIELDS = ("id", "findings", "history", "age", "sex", "diagnosis", "treatment", "images", "labeled_by")
FREE_TEXT_FIELDS = ("findings", "history", "treatment")
_SEX = {"f": "F", "female": "F", "m": "M", "male": "M"}
IMAGE_ONLY_TEXT = "(image-only case: no findings text)"
_LIST_SEPARATOR = re.compile(r"\s*[;|]\s*")  # CSV cells holding several labels or image paths


@dataclass(frozen=True)
class CaseDraft:
    """One validated, de-identified case, before it has a store id."""

    id: str
    findings: str
    history: str | None
    age: str | None
    sex: str | None
    diagnosis: list[str]
    treatment: str | None
    images: list[str]
    labeled_by: str | None

    def embed_text(self) -> str:
        """What similarity search compares: the presentation only, never the label or the treatment."""
        parts = [self.findings or IMAGE_ONLY_TEXT]
        if self.history:
            parts.append(f"History: {self.history}")
        demographics = " ".join(p for p in (f"age {self.age}" if self.age else "", self.sex or "") if p)
        if demographics:
            parts.append(f"Patient: {demographics}")
        return "\n".join(parts)

    def fields(self) -> dict[str, Any]:
        return {
            "external_id": self.id,
            "findings": self.findings,
            "history": self.history,
            "age": self.age,
            "sex": self.sex,
            "diagnoses": self.diagnosis,
            "treatment": self.treatment,
            "images": self.images,
            "labeled_by": self.labeled_by,
        }


class RowError(ValueError):
    pass


def read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, raw record) for each row of a .jsonl or .csv file (for a FHIR Bundle .json: the entry
    number of each case's Encounter or first resource, and the case it maps to)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError([(str(path), f"cannot read: {exc.strerror or exc}")]) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError([(str(path), f"not valid UTF-8 (bad byte at offset {exc.start})")]) from exc
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_rows(path, text)
    if suffix == ".csv":
        return _csv_rows(path, text)
    if suffix == ".json":
        return _bundle_rows(path, text)
    raise IngestError([(str(path), f"unsupported case file type {suffix!r}; use .jsonl, .csv or a FHIR Bundle .json")])


def _bundle_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    from kbservice.ingest.fhir_bundle import bundle_rows, is_bundle

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IngestError([(str(path), f"not valid JSON ({exc.msg} at line {exc.lineno})")]) from exc
    if not is_bundle(data):
        raise IngestError([(str(path), "a .json case file must be a FHIR Bundle (resourceType Bundle)")])
    return bundle_rows(data, where=str(path))


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise IngestError([(f"{path}:{number}", f"not valid JSON ({exc.msg})")]) from exc
        if not isinstance(record, dict):
            raise IngestError([(f"{path}:{number}", "expected a JSON object")])
        rows.append((number, record))
    return rows


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in ("id", "findings", "diagnosis") if c not in columns]
    if missing:
        raise IngestError([(str(path), f"missing column(s): {', '.join(missing)} (header: {', '.join(columns)})")])
    rows = []
    for record in reader:
        # DictReader files surplus cells under the key None and fills missing ones with None.
        if None in record or any(value is None for value in record.values()):
            raise IngestError([(f"{path}:{reader.line_num}", "row has a different number of cells than the header")])
        cells = {key.strip(): value for key, value in record.items()}
        for name in ("diagnosis", "images"):
            if isinstance(cells.get(name), str):
                cells[name] = (
                    [p for p in _LIST_SEPARATOR.split(cells[name].strip()) if p] if cells[name].strip() else []
                )
        rows.append((reader.line_num, {k: (None if v == "" else v) for k, v in cells.items()}))
    return rows


def validate_row(record: dict[str, Any], *, labeled_by: str | None, max_chars: int) -> CaseDraft:
    """A CaseDraft for one raw record (not yet de-identified), or RowError naming the bad field."""
    record = drop_control_characters_in(record)
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        raise RowError(f"unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(FIELDS)}")
    case_id = record.get("id")
    if isinstance(case_id, int) and not isinstance(case_id, bool):
        case_id = str(case_id)
    if not isinstance(case_id, str) or not case_id.strip():
        raise RowError("field 'id' is missing or empty")
    texts = {name: _text_field(record, name, max_chars=max_chars) for name in FREE_TEXT_FIELDS}
    images = _images(record.get("images"))
    if not texts["findings"] and not images:
        raise RowError("field 'findings' is missing or empty (a case needs findings, images or both)")
    return CaseDraft(
        id=case_id.strip(),
        findings=texts["findings"] or "",
        history=texts["history"],
        age=_age(record.get("age")),
        sex=_sex(record.get("sex")),
        diagnosis=_labels(record.get("diagnosis"), has_images=bool(images)),
        treatment=texts["treatment"],
        images=images,
        labeled_by=_optional_name(record.get("labeled_by")) or labeled_by,
    )


def _text_field(record: dict[str, Any], name: str, *, max_chars: int) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowError(f"field {name!r} must be text")
    if len(value) > max_chars:
        raise RowError(f"field {name!r} is {len(value):,} characters; the limit is {max_chars:,}")
    return value.strip() or None


def _age(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        age = int(str(value).strip())
    except ValueError:
        raise RowError(f"field 'age' must be a whole number of years, not {value!r}") from None
    if not 0 <= age <= 130:
        raise RowError(f"field 'age' must be between 0 and 130, not {age}")
    return "90+" if age > 89 else str(age)  # HIPAA Safe Harbor: ages over 89 are generalised


def _sex(value: Any) -> str | None:
    if value is None:
        return None
    sex = _SEX.get(str(value).strip().lower())
    if sex is None:
        raise RowError(f"field 'sex' must be F or M, not {value!r}")
    return sex


def _labels(value: Any, *, has_images: bool) -> list[str]:
    if value is None or value == []:
        if has_images:  # an unlabelled image case: its images still teach the encoder without labels
            return []
        raise RowError(
            "field 'diagnosis' is missing; a case needs at least one label (only a case with images may have "
            "none: it is stored unlabelled, for the image encoder's self-supervised pre-training)"
        )
    labels = [value] if isinstance(value, str) else value
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise RowError("field 'diagnosis' must be a string or a list of strings")
    cleaned = [" ".join(label.split()) for label in labels]
    if not all(cleaned):
        raise RowError("field 'diagnosis' holds a label that is empty or only whitespace")
    if any(len(label) > 200 for label in cleaned):
        raise RowError("field 'diagnosis' holds a label longer than 200 characters")
    return list(dict.fromkeys(cleaned))


def _images(value: Any) -> list[str]:
    if value is None:
        return []
    images = [value] if isinstance(value, str) else value
    if not isinstance(images, list) or not all(isinstance(p, str) and p.strip() for p in images):
        raise RowError("field 'images' must be a path or a list of paths")
    return [p.strip() for p in images]


def _optional_name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowError("field 'labeled_by' must be text")
    return value.strip()[:200] or None


def parse_case_file(path: Path, *, labeled_by: str | None, max_chars: int) -> list[CaseDraft]:
    """Every row validated (not yet de-identified); IngestError lists every bad row by line and field."""
    problems: list[tuple[str, str]] = []
    drafts: list[CaseDraft] = []
    first_line: dict[str, int] = {}
    for number, record in read_rows(path):
        try:
            draft = validate_row(record, labeled_by=labeled_by, max_chars=max_chars)
        except RowError as exc:
            problems.append((f"{path}:{number}", str(exc)))
            continue
        if draft.id in first_line:
            problems.append(
                (
                    f"{path}:{number}",
                    f"field 'id': duplicate case id {draft.id!r} (first on line {first_line[draft.id]})",
                )
            )
            continue
        first_line[draft.id] = number
        drafts.append(draft)
    if problems:
        raise IngestError(problems)
    if not drafts:
        raise IngestError([(str(path), "no cases found")])
    return drafts
