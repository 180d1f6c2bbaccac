"""`kbservice scheduler`: update cycles on a schedule, in their own process (APScheduler 3.x).

The job coalesces missed runs into one and never overlaps itself in this process (max_instances=1); the
database lease makes sure that across processes and machines sharing the database only one cycle trains
at a time: a tick that finds the lease held elsewhere does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kbservice.config import LearnSettings
from kbservice.db.lease import Lease
from kbservice.learn.lease_guard import UPDATE_LEASE, LeaseBusyError, hold
from kbservice.learn.update import STAGES, run_update_cycle
from kbservice.process_memory import return_freed_memory
from kbservice.types import UpdateReport

if TYPE_CHECKING:
    from kbservice.services import Services

log = logging.getLogger("kbservice.scheduler")


def holder_name() -> str:
    return f"scheduler@{socket.gethostname()}:{os.getpid()}"


def update_lease(services: Services, holder: str) -> Lease:
    return Lease(services.engine, name=UPDATE_LEASE, holder=holder, seconds=services.settings.learn.lease_seconds)


def run_once_with_lease(
    services: Services, *, holder: str, progress: Any = None, stages: Sequence[str] = STAGES
) -> UpdateReport:
    """One cycle under the update lease (LeaseBusyError if another process holds it); it stops at its next
    check once `services.stopping` is set (graceful shutdown of the service running it). Memory the cycle
    freed is handed back to the system afterwards."""
    try:
        with hold(update_lease(services, holder), stop=services.stopping) as held:
            return run_update_cycle(services, triggered_by=holder, lease=held, progress=progress, stages=stages)
    finally:
        # The cycle's model copy, gradients and activations are freed by now, but the allocator would keep
        # their pages for the life of a serving process (see process_memory).
        return_freed_memory()


def trigger(settings: LearnSettings):  # type: ignore[no-untyped-def]
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if settings.schedule == "cron":
        return CronTrigger.from_crontab(settings.cron)
    return IntervalTrigger(seconds=settings.interval_minutes * 60)


def run_scheduler(
    services: Services,
    *,
    max_cycles: int | None = None,
    run_now: bool = False,
) -> int:
    """Blocks, running cycles on the configured schedule until stopped (or after `max_cycles` ticks).
    Returns the number of ticks."""
    from apscheduler.schedulers.background import BackgroundScheduler

    holder = holder_name()
    ticks = 0
    done = threading.Event()
    lock = threading.Lock()

    def tick() -> None:
        nonlocal ticks
        try:
            report = run_once_with_lease(services, holder=holder)
            log.info("update run %s: %s (%s)", report.run_id, report.status, report.reason)
        except LeaseBusyError as busy:
            log.info("tick skipped: %s", busy)
        except Exception:  # a failed cycle is recorded as a failed run; the scheduler keeps going
            log.exception("update cycle failed")
        with lock:
            ticks += 1
            if max_cycles is not None and ticks >= max_cycles:
                done.set()

    scheduler = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})
    job = scheduler.add_job(tick, trigger(services.settings.learn), id="update-cycle", name="update cycle")
    scheduler.start()
    if run_now:
        job.modify(next_run_time=_now())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        scheduler.shutdown(wait=True)
    return ticks


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)
