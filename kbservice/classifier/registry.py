"""Stored classifier versions as runnable classifiers, loaded once per process and checked against their
checksum and the embedder they were trained with."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

from kbservice.classifier.model import CaseClassifier
from kbservice.db.classifier_store import ClassifierStore
from kbservice.errors import IndexMismatchError


class ClassifierRegistry:
    def __init__(self, *, store: ClassifierStore, embedder_id: Callable[[], str]) -> None:
        self.store = store
        self.embedder_id = embedder_id  # a call: reading it loads the embedder, which only scoring needs
        self._loaded: dict[str, CaseClassifier] = {}
        self._lock = threading.Lock()

    def champion_version(self) -> str | None:
        return self.store.alias("champion")

    def load(self, version: str) -> CaseClassifier:
        with self._lock:
            if version not in self._loaded:
                self._loaded[version] = self._materialise(version)
            return self._loaded[version]

    def _materialise(self, version: str) -> CaseClassifier:
        row = self.store.get(version)
        if row["embedder"] != self.embedder_id():
            raise IndexMismatchError(
                f"classifier {version} was trained on embeddings of {row['embedder']}; the configured embedder is "
                f"{self.embedder_id()}: run an update cycle to train a classifier for it"
            )
        blob = self.store.artifact(version)
        if blob is None or hashlib.sha256(blob).hexdigest() != row["artifact_sha256"]:
            raise IndexMismatchError(f"classifier {version}'s stored model is missing or does not match its checksum")
        return CaseClassifier.from_bytes(blob)
