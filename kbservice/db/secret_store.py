"""SQL of the shared, sealed keys (service_secrets): read one, or store one unless another process was first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from kbservice.db.schema import service_secrets


@dataclass(frozen=True)
class SealedSecret:
    name: str
    wrapped: bytes
    kek_fingerprint: str
    created_at: datetime
    created_by: str


class SecretStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, name: str) -> SealedSecret | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(service_secrets).where(service_secrets.c.name == name)).first()
        return SealedSecret(**row._asdict()) if row else None

    def add_unless_present(self, *, name: str, wrapped: bytes, kek_fingerprint: str, created_by: str) -> SealedSecret:
        """Stores the sealed secret unless one named `name` exists; returns whichever is stored afterwards, so
        two replicas starting at once both end with the first one's key."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(service_secrets).values(
                        name=name,
                        wrapped=wrapped,
                        kek_fingerprint=kek_fingerprint,
                        created_at=datetime.now(UTC),
                        created_by=created_by,
                    )
                )
        except IntegrityError:
            pass  # another process stored it first; its key wins
        stored = self.get(name)
        assert stored is not None
        return stored
