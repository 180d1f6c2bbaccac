"""Similar prior cases by image: one FAISS index per encoder version, keyed by image id.

The index of the champion encoder answers; new images are embedded into it on the next use. When the
champion encoder changes, the new version's index is built from the stored pixels in a background thread
while the old one keeps answering, then swapped in at once (a reference assignment), so a request never
sees a half-built index or vectors of two encoders. Retracted cases stay in the index and are filtered
by knowledge version at query time, like text chunks.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kbservice.config import IndexSettings
from kbservice.db.image_store import ImageStore
from kbservice.imaging.protocols import ClassifyingEncoder, ImageEncoder
from kbservice.imaging.registry import EncoderRegistry
from kbservice.index.faiss_index import build_index, read_index
from kbservice.index.protocols import VectorIndex
from kbservice.progress import Advance
from kbservice.types import CASE_KIND


@dataclass(frozen=True)
class ImageHit:
    image_id: int
    case_id: int
    score: float  # cosine similarity of the embeddings


@dataclass
class _Built:
    encoder: ImageEncoder
    index: VectorIndex
    # FAISS may not be searched while vectors are added; each index has its own lock, so building a new
    # encoder's index never blocks searches of the one that is answering.
    lock: threading.Lock = field(default_factory=threading.Lock)


class ImageSimilarity:
    def __init__(self, *, registry: EncoderRegistry, images: ImageStore, index_dir: Path) -> None:
        self.registry = registry
        self.images = images
        self.index_dir = index_dir / "images"
        self._current: _Built | None = None
        self._lock = threading.Lock()  # one build at a time (in the background or for the first request)
        self._building: threading.Thread | None = None

    def path(self, version: str) -> Path:
        return self.index_dir / f"{version}.faiss"

    # ----- which index answers --------------------------------------------------------------------

    def current(self, *, wait: bool = True, progress: Advance | None = None) -> _Built | None:
        """The champion encoder and its caught-up index; None when no encoder exists yet. A serving process
        (`wait=False`) keeps the previous pair while a new champion's index builds in the background."""
        version = self.registry.champion_version()
        if version is None:
            return None
        built = self._current
        if built is None or built.encoder.version != version:
            if built is not None and not wait:
                self.rebuild_in_background(version)
                return self._catch_up(built)
            with self._lock:  # concurrent first requests build it once
                built = self._current
                if built is None or built.encoder.version != version:
                    built = self._open(version, progress=progress)
                    self._current = built
        return self._catch_up(built)

    def rebuild_in_background(self, version: str) -> threading.Thread:
        """Builds `version`'s index off the request path, then makes it the current one at once."""
        if self._building is not None and self._building.is_alive():
            return self._building

        def build() -> None:
            with self._lock:
                if self._current is None or self._current.encoder.version != version:
                    self._current = self._open(version)

        self._building = threading.Thread(target=build, name=f"image-index-{version}", daemon=True)
        self._building.start()
        return self._building

    def _open(self, version: str, progress: Advance | None = None) -> _Built:
        encoder = self.registry.load(version)
        path = self.path(version)
        settings = IndexSettings(kind="flat")
        if path.exists():
            index = read_index(path, kind="flat", settings=settings)
            if index.dimension == encoder.dim:
                return _Built(encoder, index)
        index = build_index(dimension=encoder.dim, kind="flat", settings=settings)
        built = _Built(encoder, index)
        self._embed_new(built, progress=progress)
        return built

    def _catch_up(self, built: _Built) -> _Built:
        self._embed_new(built)
        return built

    def _embed_new(self, built: _Built, progress: Advance | None = None) -> int:
        """Embeds stored images the index lacks (ids only grow) and saves the index atomically."""
        with built.lock:
            have = built.index.ids()
            last = int(have.max()) if len(have) else 0
            added = 0
            for ids, pixels in self.images.all_pixels(after_id=last):
                built.index.add(np.asarray(ids, dtype=np.int64), built.encoder.encode(pixels))
                added += len(ids)
                if progress:
                    progress(len(ids))
            if added or not self.path(built.encoder.version).exists():
                self.index_dir.mkdir(parents=True, exist_ok=True)
                partial = self.path(built.encoder.version).with_suffix(".partial")
                built.index.write(partial)
                partial.replace(self.path(built.encoder.version))
            return added

    # ----- search ---------------------------------------------------------------------------------

    def similar(
        self,
        images: Sequence[np.ndarray],
        *,
        k: int,
        as_of: int,
        exclude_case_ids: Sequence[int] = (),
        wait: bool = False,
    ) -> tuple[str | None, list[ImageHit]]:
        """(encoder version, best-first images of labelled cases valid at `as_of`, one per case, nearest to any
        of `images`). (None, []) when no encoder exists yet. Right after a new champion encoder, the
        previous one answers until its index is built (`wait`: build it now instead)."""
        built = self.current(wait=wait)
        if built is None or not len(images):
            return None, []
        return built.encoder.version, self.search(
            built, built.encoder.encode(images), k=k, as_of=as_of, exclude_case_ids=exclude_case_ids
        )

    def head(self, images: Sequence[np.ndarray], *, version: str) -> list[list]:
        """[label, mean probability over `images`] for each label encoder `version`'s class head was trained on;
        [] without images or for an encoder without a head (a Hugging Face one)."""
        encoder = self.registry.load(version)
        if not len(images) or not isinstance(encoder, ClassifyingEncoder):
            return []
        probabilities = encoder.class_probabilities(list(images)).mean(axis=0)
        return [[label, float(p)] for label, p in zip(encoder.labels, probabilities, strict=True)]

    def search(
        self, built: _Built, vectors: np.ndarray, *, k: int, as_of: int, exclude_case_ids: Sequence[int] = ()
    ) -> list[ImageHit]:
        # Unlabelled cases' images are indexed (an encoder may learn from them) but never returned: they
        # have no diagnosis to vote for.
        valid = dict(self.images.valid(as_of=as_of, kind=CASE_KIND))
        excluded = set(exclude_case_ids)
        best: dict[int, ImageHit] = {}
        with built.lock:
            invalid = np.setdiff1d(built.index.ids(), np.fromiter(valid, dtype=np.int64, count=len(valid)))
            invalid = np.union1d(invalid, [i for i, c in valid.items() if c in excluded]).astype(np.int64)
            found = [built.index.search(vector, k=k * 4, exclude_ids=invalid) for vector in vectors]
        for hits in found:
            for image_id, score in hits:
                case_id = valid[image_id]
                if case_id not in best or score > best[case_id].score:
                    best[case_id] = ImageHit(image_id=image_id, case_id=case_id, score=score)
        return sorted(best.values(), key=lambda h: (-h.score, h.image_id))[:k]
