"""The database lease and the adapter registry's rows and aliases, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest

from kbservice.db.adapter_store import AdapterStore
from kbservice.db.lease import Lease
from kbservice.errors import KBError, UnknownAdapterError
from kbservice.services import Services


def test_lease_is_exclusive_renewable_and_taken_over_after_it_lapses(services: Services) -> None:
    first = Lease(services.engine, name="learn.update", holder="a", seconds=0.5)
    second = Lease(services.engine, name="learn.update", holder="b", seconds=0.5)
    assert first.acquire() and first.holder_now() == first.holder and first.holder.startswith("a (pid ")
    assert not second.acquire()
    assert first.renew() and first.acquire()  # re-entrant for its holder
    time.sleep(0.6)
    assert first.holder_now() is None and second.acquire()  # lapsed: taken over
    assert not first.renew()  # the old holder learns it lost the lease
    second.release()
    assert first.acquire()


def test_two_acquisitions_by_the_same_user_are_different_holders(services: Services) -> None:
    # Issue 15, defect 1: the holder was "cli:{user}@{host}" alone, so a second `update run-once` by the same
    # user took the held lease as its own, reaped the first cycle's live adapter and trained beside it.
    running = Lease(services.engine, name="learn.update", holder="cli:alice@host", seconds=30)
    again = Lease(services.engine, name="learn.update", holder="cli:alice@host", seconds=30)
    assert running.acquire()
    assert not again.acquire()
    assert not again.renew()  # only the acquisition that holds it renews it...
    again.release()  # ...or releases it: this is a no-op
    assert running.holder_now() == running.holder and running.renew()
    running.release()
    assert again.acquire()


def _adapter(store: AdapterStore, version: str, parent: str | None = None) -> None:
    store.start(
        version=version,
        run_id=f"run-{version}",
        parent=parent,
        base_model="tiny",
        base_model_sha256="0" * 64,
        knowledge_version=1,
        data_watermark=1,
        train_case_ids=[1, 2],
        heldout_case_ids=[3],
        replay_case_ids=[],
        frozen_case_ids=[],
        hyperparameters={"lora_r": 8},
        triggered_by="test",
    )


def test_promote_and_rollback_move_aliases_and_write_audit_rows(services: Services) -> None:
    store, audit = services.adapter_store, services.audit
    for version, status in (("a1", "promoted"), ("a2", "promoted"), ("a3", "rejected")):
        _adapter(store, version)
        store.finish(version, status=status, audit=audit, actor="test", metrics={"macro_f1": 0.5}, artifact_sha256="x")
    assert store.aliases() == {"champion": "a2", "previous": "a1"}
    with pytest.raises(KBError, match="a3 is rejected: only versions that passed the gate"):
        store.promote("a3", audit=audit, actor="test", reason="try")
    with pytest.raises(UnknownAdapterError, match="'a9' does not exist"):
        store.promote("a9", audit=audit, actor="test", reason="try")
    assert store.rollback(audit=audit, actor="test", reason="bad answers") == ("a2", "a1")
    assert store.aliases() == {"champion": "a1", "previous": "a2"}
    store.promote("a2", audit=audit, actor="test", reason="fixed")
    assert store.aliases() == {"champion": "a2", "previous": "a1"}
    kinds = [e.kind for e in services.audit.store.entries()]
    # a1 and a2 promoted by the gate, a2 again by hand; one rollback.
    assert kinds.count("adapter.promote") == 3 and kinds.count("adapter.rollback") == 1
    assert services.audit.verify().ok


def test_a_finished_row_is_immutable_and_a_rejected_one_is_never_served(services: Services) -> None:
    store, audit = services.adapter_store, services.audit
    _adapter(store, "a1")
    store.finish("a1", status="rejected", audit=audit, actor="test")
    with pytest.raises(KBError, match="not in training; its row is final"):
        store.finish("a1", status="promoted", audit=audit, actor="test")
    assert store.get("a1")["status"] == "rejected" and store.aliases()["champion"] is None
    with pytest.raises(UnknownAdapterError, match="only versions that passed the promotion gate are served"):
        services.registry.resolve("a1")
    assert services.registry.resolve(None) is None and services.registry.resolve("none") is None


def test_rollback_with_nothing_promoted_is_a_clear_error(services: Services) -> None:
    with pytest.raises(KBError, match="nothing to roll back"):
        services.adapter_store.rollback(audit=services.audit, actor="test", reason="x")


def test_a_stop_request_stops_only_the_cycles_of_the_service_that_asked(services: Services) -> None:
    # Graceful shutdown asks the service's own cycles to stop; a process-wide flag (first version) also
    # stopped every later cycle of any other service in the same process.
    import threading

    from kbservice.learn.lease_guard import CycleStoppedError, hold

    stopping = threading.Event()
    with hold(Lease(services.engine, name="learn.update", holder="a", seconds=30), stop=stopping) as held:
        held.check()
        stopping.set()
        with pytest.raises(CycleStoppedError, match="shutting down"):
            held.check()
    with hold(Lease(services.engine, name="learn.update", holder="b", seconds=30)) as other:
        other.check()  # released by the stopped holder, and not stopped itself
