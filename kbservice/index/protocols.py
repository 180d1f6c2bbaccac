"""The swappable parts of retrieval."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

ProgressCallback = Callable[[int], None]  # called with the number of items just finished


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors; `embedder_id` names the exact weights."""

    embedder_id: str
    dimension: int
    max_tokens: int

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def encode(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> np.ndarray: ...


class VectorIndex(Protocol):
    """Inner-product search over vectors keyed by int64 ids. `kind` names how it searches (exact, graph,
    quantised); built and read by index.faiss_index.build_index / read_index."""

    kind: str

    @property
    def size(self) -> int: ...

    @property
    def dimension(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def search(
        self, query: np.ndarray, *, k: int, exclude_ids: np.ndarray | None = None
    ) -> list[tuple[int, float]]: ...

    def ids(self) -> np.ndarray: ...

    def write(self, path: Path) -> None: ...
