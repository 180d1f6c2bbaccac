"""Background jobs: long work (large ingests, update cycles) runs on a worker thread while its state lives
in SQL, so `GET /jobs/{id}` answers from any worker process."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from kbservice.errors import IngestError, KBError
from kbservice.services import Services

log = logging.getLogger(__name__)


def accepted(job_id: str) -> dict[str, str]:
    """The 202 body that hands a client its job."""
    return {"job_id": job_id, "status": "queued", "url": f"/v1/jobs/{job_id}"}


def reap_orphaned_jobs(services: Services) -> list[str]:
    """Fails the jobs whose worker process died (see `JobStore.reap_orphans`) and forgets the idempotency
    records that handed them out, so a retry with the same Idempotency-Key submits the work again."""
    reaped = services.jobs.reap_orphans()
    for job_id in reaped:
        services.idempotency.release_job(job_id)
        log.warning("job %s failed: its worker process is gone", job_id)
    return reaped


class JobRunner:
    def __init__(self, services: Services, *, threads: int = 2) -> None:
        self.services = services
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kb-job")
        self._futures: dict[str, Future] = {}
        self._lock = threading.Lock()

    def submit(self, kind: str, *, created_by: str, work: Callable[[], Any]) -> str:
        """Records a queued job and runs `work` (returning JSON) in the background; returns the job id."""
        job_id = f"job-{uuid.uuid4().hex[:16]}"
        self.services.jobs.create(job_id=job_id, kind=kind, created_by=created_by)
        with self._lock:
            self._futures[job_id] = self._pool.submit(self._run, job_id, work)
        return job_id

    def _run(self, job_id: str, work: Callable[[], Any]) -> None:
        from kbservice.api.problems import TYPE_BASE, kind_of

        jobs = self.services.jobs
        jobs.start(job_id)
        try:
            result = work()
        except KBError as exc:
            status, slug, title = kind_of(exc)
            error = {"type": TYPE_BASE + slug, "title": title, "status": status, "detail": str(exc)}
            if isinstance(exc, IngestError):  # each bad input named, as a synchronous answer names them
                error["problems"] = [{"input": where, "message": message} for where, message in exc.problems]
            jobs.finish(job_id, error=error)
        except Exception:
            log.exception("job %s failed", job_id)
            jobs.finish(
                job_id,
                error={
                    "type": TYPE_BASE + "internal-error",
                    "title": "Internal error",
                    "status": 500,
                    "detail": "the job failed unexpectedly; see the service log",
                },
            )
        else:
            jobs.finish(job_id, result=result)

    def shutdown(self, *, grace_s: float = 30.0) -> None:
        """Graceful stop: jobs not yet started are failed now ("the service stopped", their idempotency keys
        released, so a retry submits them again); running ones get up to `grace_s` to finish (update cycles
        have been asked to stop through `services.stopping`). One still running after that is
        failed by the next start-up, when its worker is gone."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            futures = dict(self._futures)
        for job_id, future in futures.items():
            if future.cancelled():
                self.services.jobs.finish(
                    job_id,
                    error={
                        "type": "https://kbservice.dev/problems/service-stopped",
                        "title": "Service stopped",
                        "status": 503,
                        "detail": "the service stopped before this job started; nothing was changed, retry it",
                    },
                )
                self.services.idempotency.release_job(job_id)
        running = [f for f in futures.values() if not f.done()]
        _, unfinished = wait(running, timeout=grace_s)
        if unfinished:
            log.warning("%d job(s) still running after the %.0f s grace period", len(unfinished), grace_s)
