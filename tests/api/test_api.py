"""The HTTP API through a real server on both databases: roles, problems, pagination, idempotency, jobs,
streaming, FHIR, metrics and the audit trail of requests."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading

import pytest

from kbservice import keys
from kbservice.keys import ROLE_PERMISSIONS, ROLES
from tests.api.conftest import LiveServer, wait_for_job
from tests.helpers import WIDE_GATE

PUBLIC = None
# Every route, a request that is cheap once admitted, and the permissions that admit it.
ROUTE_MATRIX = [
    ("POST", "/v1/guidelines", "/v1/guidelines", {"data": {"source": "x"}}, {keys.INGEST}),
    ("GET", "/v1/guidelines", "/v1/guidelines", {}, {keys.READ}),
    ("DELETE", "/v1/guidelines/{document_id}", "/v1/guidelines/999999", {}, {keys.INGEST}),
    ("GET", "/v1/versions", "/v1/versions", {}, {keys.READ}),
    ("GET", "/v1/versions/{version}", "/v1/versions/1", {}, {keys.READ}),
    ("GET", "/v1/versions/{a}/diff/{b}", "/v1/versions/1/diff/2", {}, {keys.READ}),
    ("GET", "/v1/search", "/v1/search?q=asthma", {}, {keys.READ}),
    ("POST", "/v1/cases", "/v1/cases", {"json": []}, {keys.INGEST}),
    ("GET", "/v1/cases", "/v1/cases?limit=1", {}, {keys.RECOMMEND, keys.AUDIT}),
    ("POST", "/v1/recommendations", "/v1/recommendations", {"json": {}}, {keys.RECOMMEND}),
    (
        "GET",
        "/v1/recommendations/{recommendation_id}",
        "/v1/recommendations/rec-none",
        {},
        {keys.RECOMMEND, keys.AUDIT},
    ),
    ("POST", "/v1/recommendations/{recommendation_id}/replay", "/v1/recommendations/rec-none/replay", {}, {keys.AUDIT}),
    ("GET", "/v1/images/{image_id}", "/v1/images/999999", {}, {keys.READ}),
    ("GET", "/v1/images/{image_id}/preview", "/v1/images/999999/preview", {}, {keys.READ}),
    ("POST", "/v1/images/similar", "/v1/images/similar", {"json": {}}, {keys.READ}),
    ("POST", "/v1/describe", "/v1/describe", {"json": {}}, {keys.RECOMMEND}),
    ("GET", "/v1/encoders", "/v1/encoders", {}, {keys.READ}),
    ("POST", "/v1/updates", "/v1/updates", {"json": {"unknown": 1}}, {keys.TRAIN}),
    ("GET", "/v1/jobs/{job_id}", "/v1/jobs/job-none", {}, {keys.READ}),
    ("GET", "/v1/adapters", "/v1/adapters", {}, {keys.READ}),
    ("GET", "/v1/adapters/{version}", "/v1/adapters/a999", {}, {keys.READ}),
    ("POST", "/v1/adapters/{version}/promote", "/v1/adapters/a999/promote", {}, {keys.TRAIN}),
    ("POST", "/v1/adapters/rollback", "/v1/adapters/rollback", {}, {keys.TRAIN}),
    ("GET", "/v1/audit", "/v1/audit?limit=2", {}, {keys.AUDIT}),
    ("GET", "/v1/audit/verify", "/v1/audit/verify", {}, {keys.AUDIT}),
    ("GET", "/v1/keys", "/v1/keys", {}, {keys.ADMIN}),
    ("POST", "/v1/keys", "/v1/keys", {"json": {}}, {keys.ADMIN}),
    ("DELETE", "/v1/keys/{name}", "/v1/keys/nobody", {}, {keys.ADMIN}),
    ("GET", "/v1/metrics", "/v1/metrics", {}, {keys.READ}),
    ("GET", "/v1/healthz", "/v1/healthz", {}, PUBLIC),
    ("GET", "/v1/readyz", "/v1/readyz", {}, PUBLIC),
    # Issue 15: the probes and metrics also at the root, where orchestrators look.
    ("GET", "/metrics", "/metrics", {}, {keys.READ}),
    ("GET", "/healthz", "/healthz", {}, PUBLIC),
    ("GET", "/readyz", "/readyz", {}, PUBLIC),
]


def problem(response) -> dict:  # type: ignore[no-untyped-def]
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    body = response.json()
    assert body["status"] == response.status_code and body["type"].startswith("https://kbservice.dev/problems/")
    return body


def test_the_matrix_covers_every_route_in_the_openapi(live: LiveServer) -> None:
    with live.client() as client:
        spec = client.get("/openapi.json").json()
    documented = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    assert documented == {(method, template) for method, template, *_ in ROUTE_MATRIX}


@pytest.mark.parametrize("role", [*ROLES, "no key"])
def test_every_route_checks_its_role(live: LiveServer, role: str) -> None:
    for method, template, url, kwargs, needed in ROUTE_MATRIX:
        with live.client(None if role == "no key" else role) as client:
            response = client.request(method, url, **kwargs)
        where = f"{role} {method} {template}: {response.status_code} {response.text[:200]}"
        if needed is PUBLIC:
            assert response.status_code in (200, 503), where
        elif role == "no key":
            assert response.status_code == 401 and problem(response)["type"].endswith("/unauthenticated"), where
            assert response.headers["www-authenticate"] == "Bearer"
        elif ROLE_PERMISSIONS[role] & needed:
            assert response.status_code not in (401, 403, 500), where
        else:
            assert response.status_code == 403 and problem(response)["type"].endswith("/forbidden"), where


def test_a_wrong_key_is_401_and_a_revoked_key_fails_on_its_next_request(live: LiveServer) -> None:
    with live.client() as client:
        bad = client.get("/v1/versions", headers={"Authorization": "Bearer kb_not-a-key"})
        assert bad.status_code == 401 and problem(bad)["detail"] == "the key is unknown or has been revoked"
    with live.client("admin") as admin:
        created = admin.post("/v1/keys", json={"name": "short-lived", "role": "reader"})
        assert created.status_code == 201
        key = created.json()["key"]
        listed = admin.get("/v1/keys").json()["items"]
        assert {"name": "short-lived", "role": "reader"}.items() <= next(
            k for k in listed if k["name"] == "short-lived"
        ).items()
        assert all("key" not in k for k in listed)
        with live.client() as client:
            headers = {"Authorization": f"Bearer {key}"}
            assert client.get("/v1/versions", headers=headers).status_code == 200
            assert admin.delete("/v1/keys/short-lived").json()["revoked_at"] is not None
            assert client.get("/v1/versions", headers=headers).status_code == 401
        duplicate = admin.post("/v1/keys", json={"name": "short-lived", "role": "reader"})
        assert duplicate.status_code == 409 and problem(duplicate)["type"].endswith("/duplicate-key-name")


def test_errors_are_problem_details_with_stable_types(live: LiveServer) -> None:
    with live.client("admin") as client:
        assert problem(client.get("/v1/versions/999"))["type"].endswith("/unknown-version")
        assert problem(client.get("/v1/adapters/a999"))["type"].endswith("/unknown-adapter")
        assert problem(client.get("/v1/recommendations/rec-none"))["type"].endswith("/unknown-recommendation")
        invalid = problem(client.get("/v1/search", params={"q": "x", "k": 0}))
        assert invalid["type"].endswith("/invalid-request") and invalid["problems"][0]["input"] == "query.k"
        bad_rows = client.post("/v1/cases", json=[{"id": "x", "findings": "cough"}])
        assert problem(bad_rows)["problems"][0]["input"].endswith("diagnosis")
        # In an uploaded case file, an image path would name a file on the server: refused, nothing read.
        row = {"id": "x", "findings": "Wheeze.", "diagnosis": "Asthma", "images": ["/etc/hostname"]}
        upload = {"file": ("cases.jsonl", json.dumps(row).encode() + b"\n", "application/x-ndjson")}
        with_image = client.post("/v1/cases", files=upload)
        assert with_image.status_code == 422
        assert "not among the uploaded `images` parts" in problem(with_image)["problems"][0]["message"]
        assert problem(client.get("/v1/versions", params={"cursor": "garbage"}))["type"].endswith("/invalid-cursor")


def test_list_routes_paginate_with_a_cursor(live: LiveServer) -> None:
    with live.client("admin") as client:
        every = client.get("/v1/cases", params={"limit": 500}).json()["items"]
        seen, cursor = [], None
        while True:
            page = client.get("/v1/cases", params={"limit": 7, "cursor": cursor} if cursor else {"limit": 7}).json()
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [c["case_id"] for c in seen] == [c["case_id"] for c in every] and len(every) > 7
        first = client.get("/v1/audit", params={"limit": 3}).json()
        second = client.get("/v1/audit", params={"limit": 3, "cursor": first["next_cursor"]}).json()
        assert [e["seq"] for e in first["items"] + second["items"]] == list(range(1, 7))


CASES = [
    {
        "id": "api-1",
        "findings": "Fever, productive cough and crackles at the right base.",
        "diagnosis": "Pneumonia",
        "labeled_by": "dr-a",
    },
    {
        "id": "api-2",
        "findings": "Wheeze at night, better with salbutamol.",
        "diagnosis": "Asthma",
        "labeled_by": "dr-a",
    },
]


def test_idempotent_case_ingest(live: LiveServer) -> None:
    with live.client("curator") as client:
        versions_before = len(client.get("/v1/versions").json()["items"])
        headers = {"Idempotency-Key": "cases-batch-1"}
        first = client.post("/v1/cases", json=CASES, headers=headers)
        assert first.status_code == 201, first.text
        retry = client.post("/v1/cases", json=CASES, headers=headers)
        assert retry.status_code == 201 and retry.json() == first.json()
        assert retry.headers["idempotent-replayed"] == "true"
        assert len(client.get("/v1/versions").json()["items"]) == versions_before + 1
        other = client.post("/v1/cases", json=CASES[:1], headers=headers)
        assert other.status_code == 422 and problem(other)["type"].endswith("/idempotency-key-reused")
        # Without a key a repeat is a new request: the case ids are taken, so it is refused whole.
        again = client.post("/v1/cases", json=CASES)
        assert again.status_code == 409 and problem(again)["type"].endswith("/duplicate-identity")


def test_a_retry_while_the_first_is_running_is_409(live: LiveServer) -> None:
    from kbservice.api.idempotency import body_sha256

    body = [{"id": "api-3", "findings": "Pleuritic chest pain after a long flight.", "diagnosis": "Pulmonary embolism"}]
    data = "".join(json.dumps(c) + "\n" for c in body).encode()
    # The state a first request leaves while it runs: its claim, not yet completed.
    live.services.idempotency.claim(
        scope="POST /cases|curator-key|running-key", request_sha256=body_sha256(b".jsonl", data, [None])
    )
    with live.client("curator") as client:
        busy = client.post("/v1/cases", json=body, headers={"Idempotency-Key": "running-key"})
    assert busy.status_code == 409 and problem(busy)["type"].endswith("/idempotency-in-progress")


def test_a_rejected_upload_names_the_file_as_sent_never_a_server_path(live: LiveServer) -> None:
    # Issue 15, defect 6: the problem details showed the server's temporary upload folder.
    import tempfile

    with live.client("curator") as client:
        bad = client.post("/v1/guidelines", files=[("files", ("empty.md", b"", "text/markdown"))])
        no_label = b'{"id": "p-1", "findings": "cough"}\n'
        rows = client.post("/v1/cases", files={"file": ("../../mine.jsonl", no_label, "application/x-ndjson")})
        skipped = client.post(
            "/v1/guidelines",
            files=[
                ("files", ("empty.md", b"", "text/markdown")),
                ("files", ("ok.md", b"# Ok\n\nFine.\n", "text/markdown")),
            ],
            data={"skip_bad": "true", "source": "skip-test"},
        )
    assert bad.status_code == 422 and rows.status_code == 422 and skipped.status_code == 201, skipped.text
    for text in (bad.text, rows.text, skipped.text):
        assert tempfile.gettempdir() not in text and "kbservice-" not in text, text
    assert problem(bad)["problems"][0]["input"] == "empty.md"
    assert problem(rows)["problems"][0]["input"].startswith("mine.jsonl")
    assert skipped.json()["rejected"] == [["empty.md", "empty file"]]


def _die_holding(live: LiveServer, code: str) -> None:
    """Runs `code` (with `services` built on the live server's settings) in a process that then dies without
    cleaning up, as a `serve` worker killed mid-request would."""
    program = (
        "import os\n"
        "from kbservice.services import build_services\n"
        "from kbservice.config import Settings\n"
        f"services = build_services(Settings.model_validate_json({live.services.settings.model_dump_json()!r}))\n"
        f"{code}\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", program], check=True, timeout=120)


def test_a_claim_left_by_a_killed_process_is_retried_and_ingests_once(live: LiveServer) -> None:
    # Issue 15, defect 2: kill `serve` during a POST /v1/guidelines with an Idempotency-Key; after the restart
    # every retry was 409 idempotency-in-progress forever, although nothing had committed.
    from kbservice.api.idempotency import body_sha256

    name, data = "crashed.md", b"# Scabies\n\nPermethrin 5% cream, repeated after 7 days.\n"
    digest = body_sha256(name.encode(), data, ["crash-test", None, False])
    _die_holding(
        live, f"services.idempotency.claim(scope='POST /guidelines|curator-key|crash-key', request_sha256={digest!r})"
    )
    headers = {"Idempotency-Key": "crash-key"}
    with live.client("curator") as client:
        upload = {"files": [("files", (name, data, "text/markdown"))], "data": {"source": "crash-test"}}
        retry = client.post("/v1/guidelines", **upload, headers=headers)
        assert retry.status_code == 201, retry.text
        assert retry.json()["added"] == ["crash-test:crashed.md"]
        again = client.post("/v1/guidelines", **upload, headers=headers)
        assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
        assert again.json() == retry.json()
    titles = [d.title for d in live.services.store.documents(as_of=live.services.store.head().version)]
    assert titles.count("Scabies") == 1


def test_a_claim_of_a_live_process_still_answers_409_until_it_is_stale(live: LiveServer) -> None:
    from kbservice.db.service_store import IdempotencyStore

    scope = "POST /cases|curator-key|slow-key"
    assert live.services.idempotency.claim(scope=scope, request_sha256="a" * 64) is None  # this process: alive
    held = live.services.idempotency.claim(scope=scope, request_sha256="a" * 64)
    assert held is not None and held.status == "running"
    impatient = IdempotencyStore(live.services.engine, stale_after_s=0.0)  # a timeout that has passed
    assert impatient.claim(scope=scope, request_sha256="a" * 64) is None


def test_a_job_whose_worker_died_is_failed_and_its_key_can_be_retried(live: LiveServer) -> None:
    # Issue 15, defect 6: a background job whose worker died stayed "running" forever.
    code = (
        "services.jobs.create(job_id='job-orphan', kind='ingest.guidelines', created_by='curator-key')\n"
        "services.jobs.start('job-orphan')\n"
        "services.idempotency.claim(scope='POST /guidelines|curator-key|orphan-key', request_sha256='b' * 64)\n"
        "services.idempotency.complete(scope='POST /guidelines|curator-key|orphan-key', response_status=202,"
        " response_body={'job_id': 'job-orphan', 'status': 'queued', 'url': '/v1/jobs/job-orphan'})"
    )
    _die_holding(live, code)
    with live.client("reader") as client:
        job = client.get("/v1/jobs/job-orphan").json()
    assert job["status"] == "failed" and job["error"]["type"].endswith("/worker-died"), job
    assert (
        live.services.idempotency.claim(scope="POST /guidelines|curator-key|orphan-key", request_sha256="b" * 64)
        is None
    )


def test_concurrent_retries_ingest_once(live: LiveServer) -> None:
    body = [{"id": "api-4", "findings": "Polyuria, thirst and HbA1c 61 mmol/mol.", "diagnosis": "Type 2 diabetes"}]
    statuses: list[int] = []

    def send() -> None:
        with live.client("curator") as client:
            statuses.append(client.post("/v1/cases", json=body, headers={"Idempotency-Key": "race"}).status_code)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(statuses) <= {201, 409} and 201 in statuses
    stored = [c for c in live.services.case_store.cases(as_of=live.services.store.head().version) if c.id == "api-4"]
    assert len(stored) == 1


def test_guideline_upload_small_is_201_large_is_a_job(live: LiveServer) -> None:
    small = ("note.md", b"# Gout\n\nAcute gout is treated with colchicine or an NSAID.\n", "text/markdown")
    large_text = "# Shingles\n\n" + "Shingles is treated with aciclovir within 72 hours of the rash. " * 100
    with live.client("curator") as client:
        done = client.post("/v1/guidelines", files=[("files", small)], data={"source": "api-test"})
        assert done.status_code == 201 and done.json()["added"] == ["api-test:note.md"]
        headers = {"Idempotency-Key": "big-upload"}
        files = [("files", ("shingles.md", large_text.encode(), "text/markdown"))]
        accepted = client.post("/v1/guidelines", files=files, data={"source": "api-test"}, headers=headers)
        assert accepted.status_code == 202, accepted.text
        job = wait_for_job(client, accepted.json()["url"])
        assert job["status"] == "succeeded" and job["result"]["added"] == ["api-test:shingles.md"]
        retry = client.post("/v1/guidelines", files=files, data={"source": "api-test"}, headers=headers)
        assert retry.status_code == 202 and retry.json()["job_id"] == accepted.json()["job_id"]
        document_id = next(
            d["document_id"]
            for d in client.get("/v1/guidelines", params={"limit": 500}).json()["items"]
            if d["source_key"] == "api-test:shingles.md"
        )
        retracted = client.delete(f"/v1/guidelines/{document_id}", params={"reason": "test retract"})
        assert retracted.status_code == 200 and retracted.json()["message"] == "test retract"
        diff = client.get(f"/v1/versions/{retracted.json()['parent']}/diff/{retracted.json()['version']}").json()
        assert [d["document_id"] for d in diff["documents_removed"]] == [document_id]


def test_control_characters_are_dropped_by_one_rule_on_both_databases(live: LiveServer) -> None:
    # Issue 15, defect 3: a NUL in a case's findings or a JSONL guideline was a 500 on PostgreSQL (stored on
    # SQLite), and the CLI's traceback printed SQL parameters holding case text.
    case = {"id": "nul-1", "findings": "fever\u0000 cough\x0cand chills", "diagnosis": "Influenza\u0000"}
    guideline = json.dumps({"id": "nul-g", "title": "Flu\u0000", "text": "Oseltamivir\u0000 within 48 h."})
    with live.client("curator") as client:
        stored = client.post("/v1/cases", json=[case])
        assert stored.status_code == 201, stored.text
        uploaded = client.post("/v1/guidelines", files=[("files", ("flu.jsonl", guideline.encode(), "text/plain"))])
        assert uploaded.status_code == 201, uploaded.text
    version = live.services.store.head().version
    found = next(c for c in live.services.case_store.cases(as_of=version) if c.id == "nul-1")
    assert (found.findings, found.diagnosis) == ("fever cough\nand chills", ["Influenza"])
    document = next(d for d in live.services.store.documents(as_of=version) if d.title == "Flu")
    assert "\x00" not in document.title
    with live.client("clinician") as client:
        answer = client.post("/v1/recommendations", json={"findings": "fever\u0000 and cough", "with_treatment": False})
    assert answer.status_code in (200, 201), answer.text


def _events(text: str) -> list[tuple[int, str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return events


def test_streamed_recommendation_matches_the_stored_answer(live: LiveServer) -> None:
    body = {"findings": "Wheeze and cough at night, worse after exercise; FEV1 improves with salbutamol.", "age": 30}
    with (
        live.client("clinician") as client,
        client.stream("POST", "/v1/recommendations", json=body, headers={"Accept": "text/event-stream"}) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = _events(stream.read().decode())
    ids, kinds = [e[0] for e in events], [e[1] for e in events]
    assert ids == list(range(1, len(events) + 1))
    assert kinds[0] == "differential" and kinds[-1] == "result" and "plan_text" in kinds
    result = events[-1][2]
    assert events[0][2]["differential"] == result["differential"]
    assert [e[2] for e in events if e[1] == "plan_sentence"] == result["treatment"]["sentences"]
    with live.client("auditor") as auditor:
        stored = auditor.get(f"/v1/recommendations/{result['id']}").json()
        assert stored["intact"] and stored["response"] == result
        replayed = auditor.post(f"/v1/recommendations/{result['id']}/replay").json()
        assert replayed["identical"], replayed["differences"]


def test_fhir_guidance_response_validates(live: LiveServer) -> None:
    import fhir.resources
    from fhir.resources.guidanceresponse import GuidanceResponse as Validated

    assert fhir.resources.__fhir_version__ == "5.0.0"  # R5

    body = {"findings": "Productive cough, fever 38.9 C and crackles at the left base for three days."}
    with live.client("clinician") as client:
        response = client.post("/v1/recommendations", json=body, headers={"Accept": "application/fhir+json"})
        plain = client.get(f"/v1/recommendations/{response.json()['id']}").json()["response"]
    assert response.headers["content-type"].startswith("application/fhir+json")
    resource = Validated.model_validate(response.json())
    contained = {r.__resource_type__: r for r in resource.contained}
    assert set(contained) == {"Device", "CarePlan", "Provenance"}
    assert [r.concept.text for r in resource.reason] == [d["diagnosis"] for d in plain["differential"]]
    probabilities = [r.extension[0].valueDecimal for r in resource.reason]
    assert [float(p) for p in probabilities] == [d["probability"] for d in plain["differential"]]
    assert resource.result[0].reference == "#treatment" and contained["CarePlan"].intent == "proposal"
    device_versions = {v.type.text: v.value for v in contained["Device"].version}
    assert device_versions["knowledge-version"] == str(plain["provenance"]["knowledge_version"])
    assert device_versions["adapter-version"] == (plain["provenance"]["adapter_version"] or "none")
    assert contained["Provenance"].agent[0].who.reference == "#kbservice"
    assert len(contained["Provenance"].entity) == len(plain["sources"])


def test_update_job_then_promote_and_rollback(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # About the job and the alias routes, not the gate's verdict on the tiny model: see helpers.WIDE_GATE.
    settings = live.services.settings
    monkeypatch.setattr(settings, "learn", settings.learn.model_copy(update=WIDE_GATE))
    with live.client("trainer") as client:
        refused = client.post("/v1/adapters/rollback")  # nothing promoted yet
        assert refused.status_code == 409 and problem(refused)["type"].endswith("/conflict")
        accepted = client.post("/v1/updates", json={"reason": "api test"})
        assert accepted.status_code == 202
        requested = live.services.audit.store.latest(kinds=("update.requested",), limit=1)[0]
        assert requested.actor == "trainer-key" and json.loads(requested.payload) == {
            "job_id": accepted.json()["job_id"],
            "reason": "api test",
        }
        job = wait_for_job(client, accepted.json()["url"], timeout=600)
        assert job["status"] == "succeeded", job
        assert job["result"]["status"] == "promoted", job
        adapters = client.get("/v1/adapters").json()["items"]
        version = job["result"]["adapter_version"]
        assert next(a for a in adapters if a["version"] == version)["aliases"] == ["champion"]
        assert client.get(f"/v1/adapters/{version}").json()["artifact_sha256"]
        back = client.post("/v1/adapters/rollback", params={"reason": "test"}).json()
        assert back == {"champion": None, "previous": version}
        again = client.post(f"/v1/adapters/{version}/promote").json()
        assert again == {"champion": version, "previous": None}
        with live.client("reader") as reader:
            metrics = reader.get("/v1/metrics").text
        assert 'kb_update_runs{status="promoted"} 1.0' in metrics


def test_metrics_use_route_templates_and_no_request_content(live: LiveServer) -> None:
    with live.client("admin") as client:
        client.get("/v1/search", params={"q": "findings of patient Zebedee Quarrington"})
        client.get("/v1/versions/1")
        text = client.get("/v1/metrics").text
    assert 'route="/v1/versions/{version}"' in text and 'route="/v1/search"' in text
    assert "Zebedee" not in text and "Quarrington" not in text
    for name in (
        "kb_http_request_duration_seconds_bucket",
        "kb_recommendation_duration_seconds_count",
        "kb_ingest_chunks_total",
        "kb_index_vectors",
        "kb_outbox_lag",
        "kb_champion_adapter",
        "kb_update_runs",
        "kb_knowledge_version",
    ):
        assert name in text, name
    ingested = re.search(r"^kb_ingest_chunks_total (\S+)$", text, re.M)
    assert ingested and float(ingested.group(1)) > 0  # earlier tests ingested through the API


def test_every_request_is_audited_by_key_name_never_the_key(live: LiveServer) -> None:
    with live.client("reader") as client:
        client.get("/v1/search", params={"q": "asthma inhaler"})
    entries = [e for e in live.services.audit.store.entries() if e.kind == "api.request"]
    last = entries[-1]
    assert last.actor == "reader-key" and json.loads(last.payload)["route"] == "/v1/search"
    assert "asthma" not in last.payload  # the query text is not audited
    everything = " ".join(e.payload + e.actor for e in live.services.audit.store.entries())
    assert not any(key in everything for key in live.keys.values())
    with live.client("auditor") as auditor:
        assert auditor.get("/v1/audit/verify").json()["ok"]


def test_readiness_reports_each_check(live: LiveServer) -> None:
    with live.client() as client:
        ready = client.get("/v1/readyz").json()
    assert ready["ready"] and set(ready["checks"]) == {"database", "index", "model"}
