"""FHIR Bundles for the tests, R5 and R4 shaped, carrying identifiers that must never be stored."""

from __future__ import annotations

import base64
from typing import Any

PATIENT_NAME, PATIENT_MRN, STREET = "Quintessa", "MRN-55500123", "12 Harbour Lane"


def _concept(text: str, code: str | None = None, system: str = "http://snomed.info/sct") -> dict[str, Any]:
    concept: dict[str, Any] = {"text": text}
    if code:
        concept["coding"] = [{"system": system, "code": code, "display": text}]
    return concept


def _status(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": f"http://terminology.hl7.org/CodeSystem/{system}", "code": code}]}


def case_bundle(
    *,
    version: str = "R5",
    kind: str = "collection",
    encounter_id: str = "enc-1",
    study_uid: str | None = None,
    full_url_references: bool = False,
) -> dict[str, Any]:
    """One patient, one encounter: a confirmed pneumonia, a provisional differential (not a label), a
    problem-list asthma and smoking (history), vital signs and a report (findings), amoxicillin and a
    procedure (treatment), and an ImagingStudy when `study_uid` is given."""
    patient, encounter = "Patient/pat-1", f"Encounter/{encounter_id}"
    subject = {"subject": {"reference": patient}, "encounter": {"reference": encounter}}
    period = {"actualPeriod" if version == "R5" else "period": {"start": "2024-03-01T09:00:00Z"}}
    medication = (
        {"medication": {"concept": _concept("Amoxicillin 500 mg three times daily")}}
        if version == "R5"
        else {"medicationCodeableConcept": _concept("Amoxicillin 500 mg three times daily")}
    )
    report = base64.b64encode(b"Chest radiograph: right lower lobe consolidation.").decode()
    resources: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": "pat-1",
            "identifier": [{"system": "urn:hospital:mrn", "value": PATIENT_MRN}],
            "name": [{"family": "Doe", "given": [PATIENT_NAME]}],
            "gender": "female",
            "birthDate": "1970-05-10",
            "address": [{"line": [STREET], "city": "Springfield"}],
        },
        {
            "resourceType": "Encounter",
            "id": encounter_id,
            "status": "completed" if version == "R5" else "finished",
            "subject": {"reference": patient},
            **(
                {"class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}
                if version != "R5"
                else {}
            ),
            **period,
        },
        {
            "resourceType": "Condition",
            "id": "dx-1",
            "clinicalStatus": _status("condition-clinical", "active"),
            "verificationStatus": _status("condition-ver-status", "confirmed"),
            "category": [_status("condition-category", "encounter-diagnosis")],
            "code": _concept("Community-acquired pneumonia", "385093006"),
            **subject,
        },
        {
            "resourceType": "Condition",
            "id": "dx-2",
            "clinicalStatus": _status("condition-clinical", "active"),
            "verificationStatus": _status("condition-ver-status", "provisional"),
            "code": _concept("Pulmonary embolism", "59282003"),
            **subject,
        },
        {
            "resourceType": "Condition",
            "id": "hx-1",
            "clinicalStatus": _status("condition-clinical", "active"),
            "verificationStatus": _status("condition-ver-status", "confirmed"),
            "category": [_status("condition-category", "problem-list-item")],
            "code": _concept("Asthma since childhood", "195967001"),
            **subject,
        },
        {
            "resourceType": "Observation",
            "id": "obs-1",
            "status": "final",
            "code": _concept("Body temperature", "8310-5", "http://loinc.org"),
            "valueQuantity": {"value": 38.9, "unit": "Cel"},
            **subject,
        },
        {
            "resourceType": "Observation",
            "id": "obs-2",
            "status": "final",
            "category": [_status("observation-category", "social-history")],
            "code": _concept("Tobacco smoking status", "72166-2", "http://loinc.org"),
            "valueCodeableConcept": _concept("Current every day smoker"),
            **subject,
        },
        {
            "resourceType": "DiagnosticReport",
            "id": "rep-1",
            "status": "final",
            "code": _concept("Chest X-ray report"),
            "conclusion": "Productive cough for three days; crackles at the right base.",
            "presentedForm": [{"contentType": "text/plain", "data": report}],
            **subject,
        },
        {
            "resourceType": "MedicationRequest",
            "id": "rx-1",
            "status": "active",
            "intent": "order",
            **medication,
            **subject,
        },
        {
            "resourceType": "Procedure",
            "id": "pr-1",
            "status": "completed",
            "code": _concept("Oxygen therapy"),
            **subject,
        },
    ]
    if study_uid:
        resources.append(
            {
                "resourceType": "ImagingStudy",
                "id": "img-1",
                "status": "available",
                "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}],
                **subject,
            }
        )
    entries = []
    for resource in resources:
        entry: dict[str, Any] = {
            "fullUrl": f"urn:uuid:{resource['resourceType'].lower()}-{resource['id']}",
            "resource": resource,
        }
        if kind == "transaction":
            entry["request"] = {"method": "POST", "url": resource["resourceType"]}
        entries.append(entry)
    if full_url_references:  # as transaction Bundles usually reference: by fullUrl, not Type/id
        urls = {f"{e['resource']['resourceType']}/{e['resource']['id']}": e["fullUrl"] for e in entries}
        for entry in entries:
            for field in ("subject", "encounter"):
                target = entry["resource"].get(field)
                if target:  # a new dict: the resources above share their reference dicts
                    entry["resource"][field] = {"reference": urls[target["reference"]]}
    return {"resourceType": "Bundle", "type": kind, "entry": entries}
