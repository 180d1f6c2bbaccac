"""A named lease in the database: at most one holder at a time, across processes and machines.

Taking, renewing and releasing run inside the serialised write transaction (BEGIN IMMEDIATE on SQLite, an
advisory transaction lock on PostgreSQL), so two contenders can never both see the lease free. A holder
that dies simply stops renewing; its lease lapses after `seconds` and may then be taken over. Expiry uses
each machine's clock: keep `seconds` far above any clock skew between them.

A lease names one acquisition, not a person: the stored holder is the given name (for humans) plus the
process, host and a random token drawn per `Lease` object. Two commands run by the same user, or two API
calls with the same key, are different holders; only the object that took the lease renews or releases it.
"""

from __future__ import annotations

import os
import secrets
import socket
import time

from sqlalchemy import Engine, insert, select, update

from kbservice.db.engine import write_transaction
from kbservice.db.schema import leases


class Lease:
    def __init__(self, engine: Engine, *, name: str, holder: str, seconds: float) -> None:
        self.engine = engine
        self.name = name
        self.holder = f"{holder} (pid {os.getpid()} on {socket.gethostname()}) #{secrets.token_hex(8)}"
        self.seconds = seconds

    def acquire(self) -> bool:
        """Takes the lease if it is free, lapsed or already held by this object; False if anyone else holds
        it (another process, or another acquisition by the same user)."""
        now = time.time()
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(leases).where(leases.c.name == self.name)).first()
            if row is None:
                conn.execute(
                    insert(leases).values(
                        name=self.name, holder=self.holder, expires_at=now + self.seconds, acquired_at=now
                    )
                )
                return True
            if row.holder != self.holder and row.expires_at > now:
                return False
            conn.execute(
                update(leases)
                .where(leases.c.name == self.name)
                .values(holder=self.holder, expires_at=now + self.seconds, acquired_at=now)
            )
            return True

    def renew(self) -> bool:
        """Extends our lease; False if it lapsed and someone else took it meanwhile."""
        with write_transaction(self.engine) as conn:
            return (
                conn.execute(
                    update(leases)
                    .where(leases.c.name == self.name, leases.c.holder == self.holder)
                    .values(expires_at=time.time() + self.seconds)
                ).rowcount
                == 1
            )

    def release(self) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(leases).where(leases.c.name == self.name, leases.c.holder == self.holder).values(expires_at=0.0)
            )

    def holder_now(self) -> str | None:
        """Who holds the lease now (None when it is free or lapsed)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(leases).where(leases.c.name == self.name)).first()
        return row.holder if row is not None and row.expires_at > time.time() else None
