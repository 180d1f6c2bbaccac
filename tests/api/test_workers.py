"""`kbservice serve --workers 2` on one database: ingest, search and recommendations at the same time,
no errors, and no reader ever sees a half-applied version (every search at version v returns exactly the
chunks valid at v, from whichever worker answers)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from kbservice.config import EmbedderSettings, LLMSettings
from kbservice.keys import create_key
from kbservice.services import build_services, initialise
from tests.conftest import DEMO_GUIDELINES, REPO_ROOT, make_settings

UPLOADS = 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_workers_serve_concurrent_ingest_search_and_recommendations(
    tmp_path: Path, database_url: str, tiny_lm_dir: Path, tiny_embedder_dir: Path
) -> None:
    from kbservice.ingest.guidelines import ingest_guidelines

    data_dir = tmp_path / "data"
    settings = make_settings(
        data_dir,
        database_url,
        llm=LLMSettings(model_path=tiny_lm_dir),
        embedder=EmbedderSettings(model_path=tiny_embedder_dir),
    )
    initialise(settings)
    services = build_services(settings)
    ingest_guidelines(
        [DEMO_GUIDELINES],
        store=services.store,
        embedder=services.embedder,
        replica=services.replica,
        settings=settings,
        source="demo",
        author="test",
    )
    _, key = create_key(services, name="ops", role="admin", actor="test")

    port = _free_port()
    env = os.environ | {
        "KB_DATABASE_URL": database_url,
        "KB_LLM__MODEL_PATH": str(tiny_lm_dir),
        "KB_EMBEDDER__MODEL_PATH": str(tiny_embedder_dir),
        "KB_INDEX__EXACT_BELOW": "5000",
    }
    command = [
        sys.executable,
        "-m",
        "kbservice",
        "--data-dir",
        str(data_dir),
        "serve",
        "--workers",
        "2",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(
        command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        _wait_ready(url, server)
        searches: list[tuple[int, set[int]]] = []
        failures: list[str] = []
        done = threading.Event()

        def uploader() -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
                for i in range(UPLOADS):
                    text = f"# Condition {i}\n\nCondition {i} is treated with rest and fluids for {i + 2} days.\n"
                    files = [("files", (f"c{i}.md", text.encode(), "text/markdown"))]
                    response = client.post("/v1/guidelines", files=files, data={"source": "load"})
                    if response.status_code != 201:
                        failures.append(f"upload {i}: {response.status_code} {response.text[:200]}")
                cases = [
                    {"id": f"w-{i}", "findings": f"Cough for {i + 1} days.", "diagnosis": "Asthma"} for i in range(5)
                ]
                response = client.post("/v1/cases", json=cases)
                if response.status_code != 201:
                    failures.append(f"cases: {response.status_code} {response.text[:200]}")
            done.set()

        def searcher() -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
                while not done.is_set():
                    response = client.get("/v1/search", params={"q": "treatment", "k": 100, "mode": "dense"})
                    if response.status_code != 200:
                        failures.append(f"search: {response.status_code} {response.text[:200]}")
                        continue
                    body = response.json()
                    searches.append((body["version"], {hit["chunk_id"] for hit in body["hits"]}))

        def recommender() -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
                while not done.is_set():
                    response = client.post("/v1/recommendations", json={"findings": "night cough and wheeze"})
                    if response.status_code != 200:
                        failures.append(f"recommend: {response.status_code} {response.text[:200]}")

        threads = [threading.Thread(target=t) for t in (uploader, searcher, searcher, searcher, recommender)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        assert not failures, failures
        versions = {v for v, _ in searches}
        assert len(searches) > 20 and len(versions) >= 3, (len(searches), versions)
        for version, chunk_ids in searches:
            expected = {
                chunk["id"]
                for doc in services.store.documents(as_of=version)
                for chunk in services.store.document_chunks(doc.document_id)
            }
            assert chunk_ids == expected, f"version {version}: {len(chunk_ids)} chunks served, {len(expected)} valid"
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            metrics = client.get("/v1/metrics").text
            counted = sum(
                float(m)
                for m in re.findall(
                    r'kb_http_requests_total\{method="GET",route="/v1/search",status="200"\} (\S+)', metrics
                )
            )
            # Both workers' counters are summed, whichever worker answers the scrape.
            assert counted == len(searches)
            assert all(client.get("/v1/readyz").json()["ready"] for _ in range(4))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        services.close()


def _wait_ready(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"server exited: {server.stdout.read() if server.stdout else ''}")
        try:
            if httpx.get(f"{url}/v1/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("server not ready in 180 s")
