"""What an update cycle reads before it trains anything, frozen for the rest of the cycle: the labelled cases
new since the champion's data watermark, and the cases an adapter candidate trains and is judged on."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kbservice.config import LearnSettings
from kbservice.learn.split import split_new_cases
from kbservice.learn.train import ImageFusion
from kbservice.types import CaseRecord, CaseSplit, RequestImage

if TYPE_CHECKING:
    from kbservice.services import Services

TREATMENT_TARGET_CHARS = 300  # a recorded treatment is cut to this in the training target


@dataclass(frozen=True)
class NewCases:
    """The labelled cases at knowledge version `version`, and those added since the champion adapter's data
    watermark (the frozen evaluation set is never new: it only judges)."""

    version: int
    champion: str | None  # None: the base model serves
    data_watermark: int
    frozen_ids: frozenset[int]
    labelled: list[CaseRecord]
    new: list[CaseRecord]


@dataclass(frozen=True)
class AdapterPlan:
    """The cases one adapter candidate trains on (new + a replay sample of older ones) and is judged on
    (held-out new ones + the frozen set), fixed before any training starts."""

    train: list[CaseRecord]
    heldout: list[CaseRecord]
    replay: list[CaseRecord]
    frozen: list[CaseRecord]

    @property
    def split(self) -> CaseSplit:
        return CaseSplit(
            train=len(self.train), heldout=len(self.heldout), replay=len(self.replay), frozen=len(self.frozen)
        )

    @property
    def training_cases(self) -> list[CaseRecord]:
        return self.train + self.replay

    @property
    def gate_cases(self) -> list[CaseRecord]:
        return self.heldout + self.frozen


def read_new_cases(services: Services, *, version: int) -> NewCases:
    """The labelled cases valid at `version` and the new ones among them (see NewCases)."""
    store = services.adapter_store
    champion = services.registry.champion()
    watermark = store.get(champion)["data_watermark"] if champion else 0
    frozen_ids = frozenset(store.frozen_case_ids())
    labelled = [c for c in services.case_store.cases(as_of=version) if c.diagnosis]
    new = [c for c in labelled if c.version_added > watermark and c.case_id not in frozen_ids]
    return NewCases(
        version=version,
        champion=champion,
        data_watermark=watermark,
        frozen_ids=frozen_ids,
        labelled=labelled,
        new=new,
    )


def plan_adapter_data(data: NewCases, *, settings: LearnSettings) -> AdapterPlan:
    """The new cases split into training and held-out (deterministically), a seeded replay sample of the
    older cases (so earlier knowledge is kept), and the frozen evaluation set."""
    train, heldout = split_new_cases(data.new, fraction=settings.heldout_fraction, seed=settings.seed)
    new_ids = {c.case_id for c in data.new}
    older = [c for c in data.labelled if c.case_id not in new_ids and c.case_id not in data.frozen_ids]
    replay = sorted(
        random.Random(f"{settings.seed}:{data.version}").sample(older, min(settings.replay_cases, len(older))),
        key=lambda c: c.case_id,
    )
    frozen = [c for c in data.labelled if c.case_id in data.frozen_ids]
    return AdapterPlan(train=train, heldout=heldout, replay=replay, frozen=frozen)


def training_target(case: CaseRecord) -> str:
    """What the model learns to write after "Diagnosis:" (scoring reads the diagnosis part)."""
    target = " " + "; ".join(case.diagnosis)
    if case.treatment:
        target += "\nTreatment: " + " ".join(case.treatment.split())[:TREATMENT_TARGET_CHARS]
    return target


def case_images(services: Services, cases: Sequence[CaseRecord]) -> dict[int, tuple[RequestImage, ...]]:
    """Each case's stored images as request images (what a new patient's request would carry)."""
    ids = services.image_store.ids_by_case([c.case_id for c in cases])
    if not ids:
        return {}
    pixels = services.image_store.pixels([i for found in ids.values() for i in found])
    return {case_id: tuple(RequestImage.of(pixels[i]) for i in found) for case_id, found in ids.items()}


def image_fusion(
    services: Services, cases: Sequence[CaseRecord], images: dict[int, tuple[RequestImage, ...]]
) -> tuple[ImageFusion | None, dict[int, np.ndarray]]:
    """What the projector trains on: the champion encoder's embeddings of the training cases' images (none
    when no encoder exists or no training case has an image)."""
    with_images = [c for c in cases if images.get(c.case_id)]
    encoder_version = services.encoders.champion_version() if with_images else None
    if encoder_version is None:
        return None, {}
    encoder = services.encoders.load(encoder_version)
    vectors = {c.case_id: encoder.encode([i.pixels for i in images[c.case_id]]) for c in with_images}
    tokens = services.settings.imaging.soft_tokens
    return ImageFusion(encoder_version=encoder_version, encoder_dim=encoder.dim, tokens=tokens), vectors
