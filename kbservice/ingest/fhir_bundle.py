"""A FHIR R4 or R5 Bundle (collection, transaction or searchset) as case rows, like the rows of a JSONL file.

One case per Encounter (per Patient when resources name no Encounter). What becomes what:
- Condition, verification `confirmed` and clinical status `active` or `resolved` -> the case's diagnosis;
  a Condition of category `problem-list-item` (any status) -> history; other Conditions are not labels.
- Observation -> a findings line (`name: value unit`); category `social-history` -> history.
- DiagnosticReport `conclusion` and plain-text `presentedForm` -> findings.
- Patient -> age at the encounter (from the birth date) and sex; never a name, identifier, address or the
  birth date itself.
- MedicationRequest, Procedure -> treatment. ImagingStudy -> its images, fetched through the PACS client
  (`dicomweb:STUDY_UID`).
The rows then go through the same checks and de-identification as any case file. The Bundle is validated
with `fhir.resources` first (R5, else R4B); every bad entry is named by its position and resource.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from datetime import date
from typing import Any

from kbservice.errors import IngestError

_GENDER = {"male": "M", "female": "F"}
_UNITS_TEXT = ("value", "unit")


def is_bundle(data: Any) -> bool:
    return isinstance(data, dict) and data.get("resourceType") == "Bundle"


def _concept_text(concept: Any) -> str | None:
    """A CodeableConcept (or R5 CodeableReference) as text: its text, else its first coding's display or code."""
    if not isinstance(concept, dict):
        return None
    concept = concept.get("concept", concept)
    if concept.get("text"):
        return str(concept["text"]).strip()
    for coding in concept.get("coding") or []:
        shown = coding.get("display") or coding.get("code")
        if shown:
            return str(shown).strip()
    return None


def _codes(concept: Any) -> set[str]:
    return {str(c.get("code")) for c in (concept or {}).get("coding") or [] if c.get("code")}


def _categories(resource: dict[str, Any]) -> set[str]:
    found = resource.get("category") or []
    return set().union(*(_codes(c) for c in (found if isinstance(found, list) else [found])))


def _value(observation: dict[str, Any]) -> str | None:
    if "valueQuantity" in observation:
        quantity = observation["valueQuantity"]
        return " ".join(str(quantity[k]) for k in _UNITS_TEXT if quantity.get(k) is not None) or None
    if "valueCodeableConcept" in observation:
        return _concept_text(observation["valueCodeableConcept"])
    for key in ("valueString", "valueInteger", "valueBoolean", "valueDateTime"):
        if key in observation:
            return str(observation[key])
    return None


def _reference(resource: dict[str, Any], field: str) -> str | None:
    target = resource.get(field)
    return target.get("reference") if isinstance(target, dict) else None


def _validate(bundle: dict[str, Any]) -> list[str]:
    """Problems that make the Bundle not valid FHIR (R5, else R4B); [] when one of them accepts it."""
    from fhir.resources import get_fhir_model_class
    from fhir.resources.R4B import get_fhir_model_class as get_r4_model_class
    from pydantic import ValidationError

    errors: list[str] = []
    for getter in (get_fhir_model_class, get_r4_model_class):
        try:
            getter("Bundle").model_validate(bundle)
            return []
        except ValidationError as exc:
            errors = errors or [
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False)[:5]
            ]
        except (KeyError, TypeError, ValueError) as exc:  # the model library's own refusals, e.g. a bad type
            errors = errors or [f"{type(exc).__name__}: {exc}"]
    return errors


class _Entries:
    """The Bundle's resources by every name a reference may use (fullUrl, Type/id)."""

    def __init__(self, bundle: dict[str, Any]) -> None:
        self.resources: list[tuple[int, dict[str, Any]]] = []
        self.by_reference: dict[str, dict[str, Any]] = {}
        for number, entry in enumerate(bundle.get("entry") or [], start=1):
            resource = (entry or {}).get("resource")
            if not isinstance(resource, dict):
                continue
            self.resources.append((number, resource))
            if entry.get("fullUrl"):
                self.by_reference[entry["fullUrl"]] = resource
            if resource.get("id"):
                self.by_reference[f"{resource['resourceType']}/{resource['id']}"] = resource

    def name(self, number: int, resource: dict[str, Any]) -> str:
        return f"entry {number} ({resource.get('resourceType')}/{resource.get('id', '?')})"


def bundle_rows(bundle: dict[str, Any], *, where: str, today: date | None = None) -> list[tuple[int, dict[str, Any]]]:
    """(entry number of the case's Encounter or Patient, case row) for every case in the Bundle, or
    IngestError naming every bad entry (nothing is ingested from a Bundle with one)."""
    from fhir.resources import get_fhir_model_class

    today = today or date.today()
    entries = _Entries(bundle)
    problems = []
    for number, resource in entries.resources:
        try:
            get_fhir_model_class(str(resource.get("resourceType")))
        except (KeyError, ValueError):  # "... is not a valid FHIR Model"
            problems.append((f"{where} {entries.name(number, resource)}", "unknown FHIR resource type"))
    # Named per entry above; the whole-Bundle validation would only repeat them less clearly.
    problems = problems or [(where, f"not a valid FHIR Bundle: {problem}") for problem in _validate(bundle)]
    if problems:
        raise IngestError(problems)
    cases: dict[str, dict[str, Any]] = {}
    for number, resource in entries.resources:
        kind = resource["resourceType"]
        if kind in ("Patient", "Encounter", "Bundle"):
            continue
        key = _reference(resource, "encounter") or _reference(resource, "subject") or _reference(resource, "patient")
        if key is None:
            continue
        case = cases.setdefault(key, {"number": number, "lines": [], "history": [], "dx": [], "tx": [], "images": []})
        try:
            _add(case, resource)
        except ValueError as exc:
            problems.append((f"{where} {entries.name(number, resource)}", str(exc)))
    rows = []
    for key, case in cases.items():
        try:
            rows.append((case["number"], _row(key, case, entries, today=today)))
        except ValueError as exc:
            problems.append((f"{where} {key}", str(exc)))
    if problems:
        raise IngestError(problems)
    if not rows:
        raise IngestError([(where, "the Bundle holds no case (no Condition, Observation or report of a patient)")])
    return rows


def _add(case: dict[str, Any], resource: dict[str, Any]) -> None:
    kind = resource["resourceType"]
    if kind == "Condition":
        name = _concept_text(resource.get("code"))
        if not name:
            raise ValueError("a Condition needs a code (its text, or a coding with a display or code)")
        verified = _codes(resource.get("verificationStatus"))
        clinical = _codes(resource.get("clinicalStatus"))
        if "problem-list-item" in _categories(resource):
            case["history"].append(name)
        elif "confirmed" in verified and clinical & {"active", "resolved"}:
            case["dx"].append(name)
    elif kind == "Observation":
        name, value = _concept_text(resource.get("code")), _value(resource)
        if not name:
            raise ValueError("an Observation needs a code")
        line = f"{name}: {value}" if value else name
        (case["history"] if "social-history" in _categories(resource) else case["lines"]).append(line)
    elif kind == "DiagnosticReport":
        if resource.get("conclusion"):
            case["lines"].append(str(resource["conclusion"]))
        for form in resource.get("presentedForm") or []:
            if str(form.get("contentType", "")).startswith("text/plain") and form.get("data"):
                case["lines"].append(base64.b64decode(form["data"]).decode("utf-8", errors="replace").strip())
    elif kind in ("MedicationRequest", "Procedure"):
        concept = resource.get("medicationCodeableConcept") or resource.get("medication") or resource.get("code")
        if _concept_text(concept):
            case["tx"].append(_concept_text(concept))
    elif kind == "ImagingStudy":
        uids = [
            str(i.get("value", "")).removeprefix("urn:oid:")
            for i in resource.get("identifier") or []
            if i.get("system") == "urn:dicom:uid"
        ]
        if not uids:
            raise ValueError("an ImagingStudy needs its study UID as an identifier (system urn:dicom:uid)")
        case["images"].append(f"dicomweb:{uids[0]}")


def _row(key: str, case: dict[str, Any], entries: _Entries, *, today: date) -> dict[str, Any]:
    target = entries.by_reference.get(key) or {}  # the reference may be `Encounter/id` or a fullUrl
    encounter = target if target.get("resourceType") == "Encounter" else None
    patient = entries.by_reference.get(_reference(encounter, "subject") or "") or {} if encounter else target
    if not case["dx"]:
        raise ValueError(
            "no confirmed diagnosis: a case needs a Condition with verificationStatus confirmed and clinicalStatus "
            "active or resolved"
        )
    row: dict[str, Any] = {
        # The case id names the Encounter or Patient only through a hash: FHIR ids can be record numbers.
        "id": "fhir-" + hashlib.sha256(key.encode()).hexdigest()[:16],
        "findings": "\n".join(_unique(case["lines"])),
        "diagnosis": _unique(case["dx"]),
    }
    if case["history"]:
        row["history"] = "; ".join(_unique(case["history"]))
    if case["tx"]:
        row["treatment"] = "; ".join(_unique(case["tx"]))
    if case["images"]:
        row["images"] = _unique(case["images"])
    if patient.get("gender") in _GENDER:
        row["sex"] = _GENDER[patient["gender"]]
    age = _age(patient.get("birthDate"), _encounter_date(encounter) or today, today=today)
    if age is not None:
        row["age"] = age
    return row


def _encounter_date(encounter: dict[str, Any] | None) -> date | None:
    if not encounter:
        return None
    period = encounter.get("actualPeriod") or encounter.get("period") or {}
    start = str(period.get("start") or "")
    return date.fromisoformat(start[:10]) if len(start) >= 10 else None


def _age(birth: Any, at: date, *, today: date) -> int | None:
    if not birth:
        return None
    text = str(birth)
    born = date(int(text[:4]), int(text[5:7]) if len(text) >= 7 else 7, int(text[8:10]) if len(text) >= 10 else 1)
    if born > today or born > at:
        raise ValueError(f"the Patient's birth date is after {'today' if born > today else 'the encounter'}")
    return at.year - born.year - ((at.month, at.day) < (born.month, born.day))


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))
