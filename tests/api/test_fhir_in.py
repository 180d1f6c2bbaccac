"""FHIR Bundles in over HTTP: `POST /v1/cases` with `Content-Type: application/fhir+json`, or a Bundle
file in the multipart `cases` part; a bad Bundle is a problem naming its entry, and stores nothing."""

from __future__ import annotations

import json

from tests.api.conftest import LiveServer, wait_for_job
from tests.api.test_api import problem
from tests.ingest.fhir_bundles import PATIENT_MRN, PATIENT_NAME, case_bundle


def test_a_fhir_bundle_is_ingested_as_cases_over_http(live: LiveServer) -> None:
    bundle = case_bundle(encounter_id="enc-http")
    with live.client("curator") as client:
        sent = client.post("/v1/cases", content=json.dumps(bundle), headers={"Content-Type": "application/fhir+json"})
        if sent.status_code == 202:
            job = wait_for_job(client, sent.json()["url"])
            assert job["status"] == "succeeded", job
            report = job["result"]
        else:
            assert sent.status_code == 201, sent.text
            report = sent.json()
        assert len(report["added"]) == 1
        stored = [
            c for c in client.get("/v1/cases", params={"limit": 500}).json()["items"] if c["id"].startswith("fhir-")
        ]
        assert [c["diagnosis"] for c in stored] == [["Community-acquired pneumonia"]]
        assert PATIENT_NAME not in json.dumps(stored) and PATIENT_MRN not in json.dumps(stored)

        bad = case_bundle(encounter_id="enc-bad")
        bad["entry"][2]["resource"].pop("code")  # the confirmed Condition
        versions = client.get("/v1/versions", params={"limit": 500}).json()["items"]
        refused = client.post(
            "/v1/cases", files=[("cases", ("bundle.json", json.dumps(bad).encode(), "application/fhir+json"))]
        )
        found = wait_for_job(client, refused.json()["url"])["error"] if refused.status_code == 202 else problem(refused)
        assert found["status"] == 422 and any("Condition needs a code" in p["message"] for p in found["problems"])
        assert all("/tmp" not in p["input"] for p in found["problems"])
        assert client.get("/v1/versions", params={"limit": 500}).json()["items"] == versions
