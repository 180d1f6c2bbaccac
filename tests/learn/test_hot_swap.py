"""A long-lived process picks up a new champion between requests, with clients sending all the while."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from kbservice.learn.update import run_update_cycle
from kbservice.recommend.answer import recommend, replay
from kbservice.recommend.request import RecommendationRequest
from kbservice.services import Services
from tests.conftest import DEMO_CASES
from tests.helpers import ingest_case_file


def test_promotion_reaches_running_clients_between_requests(learn_services: Services, tmp_path: Path) -> None:
    services = learn_services
    ingest_case_file(services, DEMO_CASES)
    assert run_update_cycle(services, triggered_by="test").status == "promoted"
    services.adapter_store.rollback(audit=services.audit, actor="test", reason="serve the base model first")
    assert services.registry.champion() is None

    served: list[tuple[float, float, str | None]] = []  # (started, finished, adapter)
    failures: list[BaseException] = []
    stop = threading.Event()

    def client(n: int) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                response = recommend(
                    services,
                    RecommendationRequest(findings=f"wheeze and cough at night {n}"),
                    actor="client",
                    with_treatment=False,
                )
            except BaseException as error:
                failures.append(error)
                return
            served.append((started, time.perf_counter(), response.provenance.adapter_version))

    clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for c in clients:
        c.start()
    time.sleep(1.0)
    promoted_at = time.perf_counter()
    services.adapter_store.promote("a1", audit=services.audit, actor="test", reason="swap")
    deadline = time.time() + 30
    while not any(adapter == "a1" for _, _, adapter in served) and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)
    stop.set()
    for c in clients:
        c.join()

    assert not failures
    before = [a for s, f, a in served if f < promoted_at]
    after = [a for s, f, a in served if s > promoted_at + 0.05]  # started after the alias moved (+ one poll)
    assert before and set(before) == {None}
    assert after and set(after) == {"a1"}
    first_new = min(f for s, f, a in served if a == "a1")
    assert first_new - promoted_at < 5.0
    # Each response names the adapter it ran on, and replays identically on it.
    answer = recommend(services, RecommendationRequest(findings="night wheeze"), actor="t", with_treatment=False)
    last = services.recommendations.get(answer.id)
    assert last["response"]["provenance"]["adapter_version"] == "a1"
    assert replay(services, last["id"], actor="t").identical
