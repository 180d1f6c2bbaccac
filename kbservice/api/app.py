"""The FastAPI application: one Services per worker process, warmed before the first request."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from kbservice import __version__
from kbservice.api import problems
from kbservice.api.body_limit import BodyLimit
from kbservice.api.jobs import JobRunner, reap_orphaned_jobs
from kbservice.api.middleware import API_PREFIX, RequestBookkeeping
from kbservice.api.routes import (
    api_keys,
    audit,
    cases,
    images,
    knowledge,
    learning,
    operations,
    recommendations,
)
from kbservice.api.schemas import CaseIn, DescribeIn, RecommendationIn, SimilarIn
from kbservice.config import Settings, load_settings
from kbservice.services import Services, build_services

log = logging.getLogger(__name__)


def warm(services: Services, *, model_loaded: threading.Event) -> None:
    """Builds every shared part once, before requests arrive (the parts are then only read concurrently):
    database, index (opened, so caught up with SQL), embedder, language model and the champion adapter."""
    for part in (
        "store",
        "audit",
        "key_store",
        "idempotency",
        "jobs",
        "case_store",
        "recommendations",
        "adapter_store",
        "registry",
        "embedder",
        "replica",
        "retriever",
    ):
        getattr(services, part)
    services.embedder.encode(["warm up"])
    services.generator  # noqa: B018 - loads the model
    services.recommender  # noqa: B018
    model_loaded.set()


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> FastAPI:
    """The app for `settings` (default: from files and KB_* environment). Pass `services` to share one."""
    built = services or build_services(settings or load_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from kbservice.learn.hot_swap import ChampionWatcher

        await run_in_threadpool(reap_orphaned_jobs, built)  # jobs of a worker that died before this start
        await run_in_threadpool(warm, built, model_loaded=app.state.model_loaded)
        watcher = ChampionWatcher(built, interval_s=built.settings.api.watch_champion_s)
        await run_in_threadpool(watcher.start)
        try:
            yield
        finally:  # SIGTERM: uvicorn has stopped accepting and let in-flight requests finish
            watcher.stop()
            built.stopping.set()  # an update cycle running as a job stops at its next check and frees the lease
            app.state.jobs.shutdown(grace_s=built.settings.api.shutdown_grace_s)
            if services is None:
                built.close()

    app = FastAPI(
        title="kbservice",
        version=__version__,
        summary="A versioned medical knowledge base with cited, calibrated, audited recommendations "
        "(demonstration software, not a medical device).",
        lifespan=lifespan,
    )
    app.state.services = built
    app.state.jobs = JobRunner(built, threads=built.settings.api.job_threads)
    app.state.model_loaded = threading.Event()
    problems.install(app)
    for module in (knowledge, cases, recommendations, images, learning, audit, api_keys, operations):
        app.include_router(module.router, prefix=API_PREFIX)
    # The probes and metrics also at the root, where orchestrators and scrapers look by convention
    # (Kubernetes /healthz and /readyz, Prometheus /metrics); the /v1 ones stay.
    app.include_router(operations.router)
    from kbservice.api import web

    app.include_router(web.router)
    # Inside the bookkeeping, so a refused upload is counted and audited like any other answer.
    app.add_middleware(BodyLimit, limit_bytes=int(built.settings.api.max_upload_mb * 1024 * 1024))
    app.add_middleware(RequestBookkeeping)
    _document_extra_schemas(app)
    return app


def _document_extra_schemas(app: FastAPI) -> None:
    """Adds schemas that routes reference by hand (routes that parse their own JSON or multipart bodies)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (
                CaseIn,
                RecommendationIn,
                SimilarIn,
                DescribeIn,
            ):  # bodies the routes parse themselves (JSON or multipart)
                components.setdefault(
                    model.__name__, model.model_json_schema(ref_template="#/components/schemas/{model}")
                )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app_from_environment() -> FastAPI:
    """The factory `kbservice serve` hands to uvicorn: each worker builds its own app from the environment."""
    return create_app(load_settings())
