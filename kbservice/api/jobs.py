"""Background jobs: long work (large ingests, update cycles) runs on a worker thread while its state lives
in SQL, so `GET /jobs/{id}` answers from any worker process."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kbservice.errors import KBError
from kbservice.services import Services

log = logging.getLogger(__name__)


def accepted(job_id: str) -> dict[str, str]:
    """The 202 body that hands a client its job."""
    return {"job_id": job_id, "status": "queued", "url": f"/v1/jobs/{job_id}"}


class JobRunner:
    def __init__(self, services: Services, *, threads: int = 2) -> None:
        self.services = services
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kb-job")

    def submit(self, kind: str, *, created_by: str, work: Callable[[], Any]) -> str:
        """Records a queued job and runs `work` (returning JSON) in the background; returns the job id."""
        job_id = f"job-{uuid.uuid4().hex[:16]}"
        self.services.jobs.create(job_id=job_id, kind=kind, created_by=created_by)
        self._pool.submit(self._run, job_id, work)
        return job_id

    def _run(self, job_id: str, work: Callable[[], Any]) -> None:
        from kbservice.api.problems import TYPE_BASE, kind_of

        jobs = self.services.jobs
        jobs.start(job_id)
        try:
            result = work()
        except KBError as exc:
            status, slug, title = kind_of(exc)
            jobs.finish(job_id, error={"type": TYPE_BASE + slug, "title": title, "status": status, "detail": str(exc)})
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

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
