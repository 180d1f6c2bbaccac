"""A real uvicorn server on a free port, on a real SQLite file or PostgreSQL database, with the starter
knowledge base, the packaged embedder and the tiny Llama; one API key per role."""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from kbservice.config import ApiSettings, LLMSettings
from kbservice.keys import ROLES, create_key
from kbservice.services import Services, build_services, initialise
from tests.conftest import DEMO_CASES, DEMO_GUIDELINES, PG_ADMIN_URL, make_settings


@dataclass
class LiveServer:
    url: str
    services: Services
    keys: dict[str, str] = field(default_factory=dict)  # role -> key

    def client(self, role: str | None = None, **kwargs) -> httpx.Client:  # type: ignore[no-untyped-def]
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120, **kwargs)


def seed(services: Services) -> None:
    from kbservice.ingest.cases import ingest_cases
    from kbservice.ingest.guidelines import ingest_guidelines

    common = {
        "store": services.store,
        "embedder": services.embedder,
        "replica": services.replica,
        "settings": services.settings,
        "author": "test",
    }
    ingest_guidelines([DEMO_GUIDELINES], source="demo", message="starter guidelines", **common)
    ingest_cases(DEMO_CASES, **common)


def start_server(services: Services) -> tuple[object, threading.Thread, str]:
    import uvicorn

    from kbservice.api.app import create_app

    config = uvicorn.Config(create_app(services=services), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def serve_live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path, **sections: object
) -> Iterator[LiveServer]:
    """A live server on the parametrised database with the starter knowledge; `sections` override settings
    sections (e.g. `imaging=ImagingSettings(...)`)."""
    database_url, dropped = None, None
    if request.param == "postgresql":
        if not request.getfixturevalue("postgres_ok"):
            pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432")
        import psycopg

        dropped = f"kbapi_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {dropped}")
        database_url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{dropped}"
    settings = make_settings(
        tmp_path_factory.mktemp("api") / "data",
        database_url,
        llm=LLMSettings(model_path=tiny_lm_dir),
        api=ApiSettings(async_ingest_bytes=4096, watch_champion_s=0.2),
        **sections,
    )
    initialise(settings)
    services = build_services(settings)
    seed(services)
    keys = {role: create_key(services, name=f"{role}-key", role=role, actor="test")[1] for role in ROLES}
    server, thread, url = start_server(services)
    yield LiveServer(url=url, services=services, keys=keys)
    server.should_exit = True  # type: ignore[attr-defined]
    thread.join(timeout=30)
    services.close()
    if dropped:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {dropped} WITH (FORCE)")


@pytest.fixture(scope="module", params=DATABASES)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path
) -> Iterator[LiveServer]:
    yield from serve_live(request, tmp_path_factory, tiny_lm_dir)


def wait_for_job(client: httpx.Client, job_url: str, *, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(job_url).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_url} did not finish in {timeout}s")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (.ci/run installs the Debian package)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()
