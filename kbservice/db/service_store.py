"""SQL of the HTTP service's own state: API keys, idempotency records and background jobs.

Each lives in SQL, not in a process, so every uvicorn worker (and every machine sharing PostgreSQL)
sees the same keys, the same idempotency records and the same jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from kbservice import process_identity
from kbservice.db.engine import write_transaction
from kbservice.db.schema import api_keys, idempotency_keys, jobs
from kbservice.errors import DuplicateKeyNameError, UnknownJobError, UnknownKeyError


@dataclass(frozen=True)
class ApiKeyRecord:
    name: str
    role: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def _key_record(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(row.name, row.role, row.created_at, row.created_by, row.revoked_at)


class ApiKeyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, *, name: str, role: str, key_sha256: str, created_by: str) -> ApiKeyRecord:
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(
                    insert(api_keys).values(
                        name=name, role=role, key_sha256=key_sha256, created_at=datetime.now(UTC), created_by=created_by
                    )
                )
        except IntegrityError as exc:
            raise DuplicateKeyNameError(f"a key named {name!r} already exists; names are never reused") from exc
        return self.get(name)

    def get(self, name: str) -> ApiKeyRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.name == name)).first()
        if row is None:
            raise UnknownKeyError(f"no key named {name!r}; see `kbservice keys list`")
        return _key_record(row)

    def by_hash(self, key_sha256: str) -> ApiKeyRecord | None:
        """The key with this hash, revoked or not (callers decide); read on every request, so a revocation
        takes effect on the key's next request in every worker."""
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_sha256 == key_sha256)).first()
        return _key_record(row) if row else None

    def all(self) -> list[ApiKeyRecord]:
        with self.engine.connect() as conn:
            return [_key_record(r) for r in conn.execute(select(api_keys).order_by(api_keys.c.created_at))]

    def revoke(self, name: str) -> ApiKeyRecord:
        """Revokes the key (revoking a revoked key changes nothing); UnknownKeyError if there is none."""
        self.get(name)
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        return self.get(name)


@dataclass(frozen=True)
class IdempotencyRecord:
    request_sha256: str
    status: str  # running | done
    response_status: int | None
    response_body: Any


class IdempotencyStore:
    """A claim is "running" while its request runs. A process that dies mid-request (killed, crashed,
    restarted) never completes or releases it; such a claim expires when its owner process is certainly
    gone, or `stale_after_s` after it was taken, and the next retry takes it over and runs the request again.
    Running again is safe because what these requests do is itself exactly-once: an ingest commits whole
    or not at all, and re-ingesting what did commit is a no-op (guidelines) or refused (case ids)."""

    def __init__(self, engine: Engine, *, stale_after_s: float = 600.0) -> None:
        self.engine = engine
        self.stale_after_s = stale_after_s

    def claim(self, *, scope: str, request_sha256: str) -> IdempotencyRecord | None:
        """Claims `scope` for this request: None when claimed now (go ahead), else the existing record."""
        owner = process_identity.current()
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(
                    insert(idempotency_keys).values(
                        scope=scope,
                        request_sha256=request_sha256,
                        status="running",
                        created_at=datetime.now(UTC),
                        owner=owner,
                    )
                )
            return None
        except IntegrityError:
            with write_transaction(self.engine) as conn:
                row = conn.execute(select(idempotency_keys).where(idempotency_keys.c.scope == scope)).first()
                if row is None:  # released between our insert and read: let the client retry
                    return IdempotencyRecord(request_sha256, "running", None, None)
                if row.status == "running" and row.request_sha256 == request_sha256 and self._abandoned(row):
                    conn.execute(
                        update(idempotency_keys)
                        .where(idempotency_keys.c.scope == scope)
                        .values(created_at=datetime.now(UTC), owner=owner)
                    )
                    return None  # taken over: this request runs it again
            return IdempotencyRecord(row.request_sha256, row.status, row.response_status, row.response_body)

    def _abandoned(self, row: Any) -> bool:
        claimed_at = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        expired = datetime.now(UTC) - claimed_at > timedelta(seconds=self.stale_after_s)
        return expired or process_identity.is_gone(row.owner)

    def release_job(self, job_id: str) -> int:
        """Forgets the completed claims whose response handed out `job_id` (its job failed without doing its
        work), so that a retry with the same key submits the work again. Returns how many."""
        with write_transaction(self.engine) as conn:
            rows = conn.execute(
                select(idempotency_keys.c.scope, idempotency_keys.c.response_body).where(
                    idempotency_keys.c.status == "done", idempotency_keys.c.response_status == 202
                )
            ).all()
            scopes = [
                r.scope for r in rows if isinstance(r.response_body, dict) and r.response_body.get("job_id") == job_id
            ]
            if scopes:
                conn.execute(idempotency_keys.delete().where(idempotency_keys.c.scope.in_(scopes)))
        return len(scopes)

    def complete(self, *, scope: str, response_status: int, response_body: Any) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(idempotency_keys)
                .where(idempotency_keys.c.scope == scope)
                .values(status="done", response_status=response_status, response_body=response_body)
            )

    def release(self, *, scope: str) -> None:
        """Forgets a claim whose request failed before changing anything, so a retry runs again."""
        with write_transaction(self.engine) as conn:
            conn.execute(idempotency_keys.delete().where(idempotency_keys.c.scope == scope))


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, *, job_id: str, kind: str, created_by: str) -> None:
        """A queued job, run by this process's job threads (its `worker`)."""
        with write_transaction(self.engine) as conn:
            conn.execute(
                insert(jobs).values(
                    id=job_id,
                    kind=kind,
                    status="queued",
                    created_at=datetime.now(UTC),
                    created_by=created_by,
                    worker=process_identity.current(),
                )
            )

    def reap_orphans(self) -> list[str]:
        """Marks failed every queued or running job whose worker process is certainly gone (killed, crashed,
        restarted: its threads died with it). Returns their ids. A job of another machine cannot be checked
        from here and is left alone."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(jobs.c.id, jobs.c.worker).where(jobs.c.status.in_(("queued", "running")))).all()
        reaped = []
        for row in rows:
            if not process_identity.is_gone(row.worker):
                continue
            error = {
                "type": "https://kbservice.dev/problems/worker-died",
                "title": "Worker died",
                "status": 500,
                "detail": f"the process that ran this job ({row.worker}) is gone; the job's work is all-or-nothing, "
                "so nothing of it was kept. Retry the request (the same Idempotency-Key runs it again).",
            }
            with write_transaction(self.engine) as conn:
                done = conn.execute(
                    update(jobs)
                    .where(jobs.c.id == row.id, jobs.c.status.in_(("queued", "running")))
                    .values(status="failed", finished_at=datetime.now(UTC), error=error)
                ).rowcount
            if done:
                reaped.append(row.id)
        return reaped

    def start(self, job_id: str) -> None:
        self._set(job_id, status="running", started_at=datetime.now(UTC))

    def finish(self, job_id: str, *, result: Any = None, error: dict[str, Any] | None = None) -> None:
        status = "failed" if error is not None else "succeeded"
        self._set(job_id, status=status, finished_at=datetime.now(UTC), result=result, error=error)

    def _set(self, job_id: str, **values: Any) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))

    def get(self, job_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise UnknownJobError(f"job {job_id!r} does not exist")
        job = dict(row._mapping)
        for key in ("created_at", "started_at", "finished_at"):
            job[key] = job[key].isoformat() if job[key] else None
        return job
