"""SIGTERM to `kbservice serve` with work in flight: a streamed recommendation finishes, a running update
cycle stops and frees the update lease, its job is failed with the reason, and the process exits cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kbservice.config import LLMSettings
from kbservice.db.lease import Lease
from kbservice.keys import create_key
from kbservice.learn.lease_guard import UPDATE_LEASE
from kbservice.services import build_services, initialise
from tests.api.conftest import seed
from tests.api.test_workers import _free_port, _wait_ready
from tests.conftest import REPO_ROOT, make_settings


@pytest.mark.slow
def test_sigterm_finishes_requests_in_flight_stops_the_cycle_and_frees_the_lease(
    tmp_path: Path, tiny_lm_dir: Path
) -> None:
    # SQLite only: shutdown is the process's business; the lease and jobs it touches are the same rows on
    # PostgreSQL, whose lease and job stores are tested on both databases elsewhere.
    data_dir = tmp_path / "data"
    database_url = f"sqlite:///{data_dir / 'kb.sqlite3'}"
    settings = make_settings(data_dir, database_url, llm=LLMSettings(model_path=tiny_lm_dir))
    initialise(settings)
    services = build_services(settings)
    seed(services)
    _, key = create_key(services, name="ops", role="admin", actor="test")
    port = _free_port()
    env = os.environ | {
        "KB_DATABASE_URL": database_url,
        "KB_LLM__MODEL_PATH": str(tiny_lm_dir),
        "KB_LEARN__MIN_NEW_CASES": "5",
        "KB_LEARN__EPOCHS": "400",  # the update cycle is still training when SIGTERM comes
        "KB_RECOMMEND__TREATMENT_MAX_NEW_TOKENS": "400",  # the stream is still generating when SIGTERM comes
        "KB_API__SHUTDOWN_GRACE_S": "60",
    }
    command = [sys.executable, "-m", "kbservice", "--data-dir", str(data_dir), "serve", "--port", str(port)]
    server = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        _wait_ready(url, server)
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            job_url = client.post("/v1/updates", json={}).json()["url"]
            deadline = time.monotonic() + 120
            while client.get(job_url).json()["status"] != "running" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert Lease(services.engine, name=UPDATE_LEASE, holder="x", seconds=1).holder_now() is not None
            events = []
            body = {"findings": "Wheeze and night cough; FEV1 up 15% after salbutamol.", "age": 30}
            with client.stream(
                "POST", "/v1/recommendations", json=body, headers={"Accept": "text/event-stream"}
            ) as stream:
                lines = stream.iter_lines()
                for line in lines:
                    if line.startswith("event: "):
                        events.append(line.removeprefix("event: "))
                        if events[-1] == "differential":
                            break
                server.send_signal(signal.SIGTERM)  # mid-stream: the plan is still being generated
                for line in lines:
                    if line.startswith("event: "):
                        events.append(line.removeprefix("event: "))
        assert events[0] == "differential" and events[-1] == "result", events
        # uvicorn shuts down, then re-raises the captured SIGTERM: "killed by SIGTERM" after a clean shutdown.
        assert server.wait(timeout=120) in (0, -signal.SIGTERM)
        log = server.stdout.read().decode() if server.stdout else ""
        assert "Finished server process" in log and "Traceback" not in log, log
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=5)
        job = services.jobs.get(job_url.rsplit("/", 1)[1])
        assert job["status"] == "failed" and "shutting down" in json.dumps(job["error"]), job
        assert Lease(services.engine, name=UPDATE_LEASE, holder="x", seconds=1).holder_now() is None
    finally:
        if server.poll() is None:
            server.kill()
        services.close()
