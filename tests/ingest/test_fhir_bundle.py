"""Issue 17: a FHIR Bundle (R4 or R5; collection, transaction or searchset) ingested as cases through the
CLI, on SQLite and PostgreSQL: what maps to what, nothing identifying stored, every bad entry named and the
store left as it was."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.cli.conftest import run as run  # a fixture, used by name
from tests.cli.runner import Cli
from tests.ingest.fhir_bundles import PATIENT_MRN, PATIENT_NAME, STREET, case_bundle


def _write(tmp_path: Path, bundle: dict, name: str = "bundle.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(bundle))
    return path


def test_references_by_full_url_find_the_encounter_and_its_patient() -> None:
    from kbservice.ingest.fhir_bundle import bundle_rows

    rows = bundle_rows(case_bundle(version="R4", kind="transaction", full_url_references=True), where="b.json")
    assert [(row["sex"], row["age"], row["diagnosis"]) for _, row in rows] == [
        ("F", 53, ["Community-acquired pneumonia"])
    ]


@pytest.mark.parametrize(("version", "kind"), [("R5", "collection"), ("R4", "transaction"), ("R5", "searchset")])
def test_a_bundle_becomes_one_version_of_de_identified_cases(run: Cli, tmp_path: Path, version: str, kind: str) -> None:
    second = case_bundle(version=version, kind=kind, encounter_id="enc-2")
    bundle = case_bundle(version=version, kind=kind)
    bundle["entry"] += [e for e in second["entry"] if e["resource"]["resourceType"] != "Patient"]
    for entry in bundle["entry"][len(case_bundle()["entry"]) :]:  # the second encounter's own resource ids
        entry["resource"]["id"] += "-b"
        entry["fullUrl"] += "-b"
        for field in ("encounter",):
            if field in entry["resource"]:
                entry["resource"][field]["reference"] = "Encounter/enc-2"
    report = run.json("ingest", "cases", str(_write(tmp_path, bundle)))
    assert report["version"] == 1 and len(report["added"]) == 2
    cases = run.json("cases")
    assert len(cases) == 2
    case = cases[0]
    assert case["diagnosis"] == ["Community-acquired pneumonia"]  # the provisional PE is not a label
    assert "Body temperature: 38.9 Cel" in case["findings"] and "consolidation" in case["findings"]
    assert "Asthma since childhood" in case["history"] and "smoker" in case["history"]
    assert "Amoxicillin" in case["treatment"] and "Oxygen therapy" in case["treatment"]
    assert case["age"] == "53" and case["sex"] == "F"
    shown = json.dumps(cases)
    for identifier in (PATIENT_NAME, PATIENT_MRN, STREET, "1970-05-10", "pat-1", "enc-1"):
        assert identifier not in shown, identifier
    # The same Bundle again: its cases are already stored, so it is refused whole.
    _, err = run("ingest", "cases", str(_write(tmp_path, bundle, "again.json")), expect=1)
    assert "already stored" in err or "duplicate" in err.lower()


def _broken(change: str) -> dict:
    bundle = case_bundle()
    resources = {e["resource"]["id"]: e["resource"] for e in bundle["entry"]}
    if change == "not valid FHIR":
        del bundle["type"]
    elif change == "an unknown resource type":
        bundle["entry"].append({"resource": {"resourceType": "Spaceship", "id": "x"}})
    elif change == "a Condition without a code":
        del resources["dx-1"]["code"]
    elif change == "a birth date in the future":
        resources["pat-1"]["birthDate"] = "2999-01-01"
    elif change == "no confirmed diagnosis":
        resources["dx-1"]["verificationStatus"]["coding"][0]["code"] = "differential"
    return bundle


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("not valid FHIR", "not a valid FHIR Bundle"),
        ("an unknown resource type", "entry 11 (Spaceship/x): unknown FHIR resource type"),
        ("a Condition without a code", "(Condition/dx-1): a Condition needs a code"),
        ("a birth date in the future", "birth date is after today"),
        ("no confirmed diagnosis", "no confirmed diagnosis"),
    ],
)
def test_a_bad_bundle_is_refused_whole_naming_the_entry(run: Cli, tmp_path: Path, change: str, message: str) -> None:
    _, err = run("ingest", "cases", str(_write(tmp_path, copy.deepcopy(_broken(change)))), expect=1)
    assert message in err, err
    assert run.json("versions") == [] and run.json("cases") == []
