"""Holding the update lease for the length of a cycle: taken at the start, renewed by a heartbeat thread,
released at the end. A cycle that loses its lease (its heartbeat could not renew in time) stops, and so does
one whose service is shutting down (its `stop` event is set): it fails at its next check, its run and
candidate are recorded as failed, and the lease is released, so the next cycle may start at once elsewhere."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from kbservice.db.lease import Lease
from kbservice.errors import ConflictError, KBError

UPDATE_LEASE = "learn.update"


class LeaseBusyError(ConflictError):
    pass


class LeaseLostError(KBError):
    pass


class CycleStoppedError(KBError):
    pass


class HeldLease:
    def __init__(self, lease: Lease, *, stop: threading.Event | None = None) -> None:
        self.lease = lease
        self.stop_requested = stop or threading.Event()
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="lease-heartbeat")

    def _beat(self) -> None:
        while not self._stop.wait(self.lease.seconds / 3):
            try:
                if not self.lease.renew():
                    self.lost = True
                    return
            except Exception:  # a database hiccup: try again at the next beat, the lease still has time
                continue

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        """Raises if the lease was lost (another process may be training now) or the service is stopping."""
        if self.stop_requested.is_set():
            raise CycleStoppedError("the service is shutting down; the update cycle stopped (run it again later)")
        if self.lost:
            raise LeaseLostError(f"lost the {self.lease.name} lease; stopping so that only one cycle trains")


@contextmanager
def hold(lease: Lease, *, stop: threading.Event | None = None) -> Iterator[HeldLease]:
    """The lease held for the block; `stop`, once set, makes the holder's next check raise."""
    if not lease.acquire():
        raise LeaseBusyError(f"another process ({lease.holder_now()}) is running an update cycle")
    held = HeldLease(lease, stop=stop)
    held.start()
    try:
        yield held
    finally:
        held.stop()
        if not held.lost:
            lease.release()
