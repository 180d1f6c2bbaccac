"""Hot swap for long-lived processes: a new champion is served between requests, without a restart.

Every request resolves its adapter from the `champion` alias when it starts (one indexed row read) and
keeps it to the end, so requests in flight finish on the adapter they started with. A `ChampionWatcher`
thread polls the alias and loads a newly promoted adapter before any request asks for it, so the first
request on the new champion does not pay the load (materialising, checksum and PEFT injection); it also
keeps `previous` loaded, so a rollback (or re-promotion) needs no load at all. Loading takes the model
lock (PEFT injects layers into the live model), so under load it waits for the forward pass in progress.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kbservice.services import Services

log = logging.getLogger("kbservice.hot_swap")


@dataclass(frozen=True)
class Swap:
    version: str | None
    seen_at: float  # time.perf_counter() when the watcher saw the alias move
    ready_at: float  # ... and when the adapter was loaded and ready


class ChampionWatcher:
    def __init__(self, services: Services, *, interval_s: float = 0.05, preload_previous: bool = True) -> None:
        self.services = services
        self.interval_s = interval_s
        self.preload_previous = preload_previous
        self.swaps: list[Swap] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="champion-watcher")
        self._current: str | None = None
        self._encoder: str | None = None

    def start(self) -> ChampionWatcher:
        self._current = self.services.serving_adapter(None)
        self._preload_previous()
        self._thread.start()
        return self

    def _preload_previous(self) -> None:
        previous = self.services.registry.store.alias("previous") if self.preload_previous else None
        if previous is not None:
            self.services.serving_adapter(previous)

    def _follow_encoder(self) -> None:
        """A new champion encoder's image index is built here, off the request path; requests keep the
        previous encoder's until it is ready, then switch at once."""
        encoder = self.services.encoders.champion_version()
        if encoder != self._encoder:
            if encoder is not None:
                self.services.image_similarity.current(wait=False)
            self._encoder = encoder

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                champion = self.services.registry.champion()
                if champion != self._current:
                    seen = time.perf_counter()
                    self.services.serving_adapter(champion)
                    self.swaps.append(Swap(champion, seen, time.perf_counter()))
                    log.info("champion is now %s", champion or "the base model")
                    self._current = champion
                    self._preload_previous()
                self._follow_encoder()
            except Exception:  # keep watching; requests still resolve the alias themselves
                log.exception("champion watcher")
