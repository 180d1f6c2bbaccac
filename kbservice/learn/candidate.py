"""Building an adapter candidate: every case's leave-one-out evidence, then LoRA training (with the image
projector when cases have images) into a partial directory, published under its version once whole."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from kbservice.classifier.model import CaseClassifier
from kbservice.devices import resolve_device
from kbservice.learn.cycle_data import AdapterPlan, training_target
from kbservice.learn.gate import Judged
from kbservice.learn.lease_guard import HeldLease
from kbservice.learn.train import ImageFusion, TrainingExample, TrainingResult, train_lora
from kbservice.progress import Progress
from kbservice.recommend.request import request_for_case
from kbservice.types import CaseRecord, RequestImage

if TYPE_CHECKING:
    from kbservice.services import Services


@dataclass(frozen=True)
class TrainedCandidate:
    """A published candidate: its files are in place under its version, not yet judged."""

    version: str
    checksum: str  # of the adapter directory (checksums.directory_sha256)
    archive: bytes  # the same files as a tar, stored in SQL so other machines can load it
    training: TrainingResult
    train_s: float


def judge_every_case(
    services: Services,
    cases: Sequence[CaseRecord],
    *,
    version: int,
    images: dict[int, tuple[RequestImage, ...]],
    progress: Progress,
    classifier: CaseClassifier | None = None,
) -> dict[int, Judged]:
    """Each case with its evidence at `version`, retrieved as a new patient's would be: without itself, and
    with its stored images, scored by the case `classifier` (None: none). Computed once per cycle and shared
    by training, the poisoning guard and the gate."""
    recommender = services.recommender
    judged: dict[int, Judged] = {}
    with progress.task("Retrieving context for training and evaluation cases", total=len(cases)) as advance:
        for case in cases:
            request = replace(request_for_case(case, mode="rag", as_of=version), images=images.get(case.case_id, ()))
            found = recommender.evidence(request, exclude_chunk_ids=[case.chunk_id], classifier=classifier)
            judged[case.case_id] = Judged(case, found)
            advance(1)
    return judged


def train_candidate(
    services: Services,
    *,
    version: str,
    champion: str | None,
    plan: AdapterPlan,
    judged: dict[int, Judged],
    fusion: ImageFusion | None,
    image_vectors: dict[int, np.ndarray],
    lease: HeldLease | None,
    progress: Progress,
) -> TrainedCandidate:
    """Trains adapter `version` from the champion's weights (else fresh) on the plan's training cases, each
    example the exact prompt `recommend` scores; publishes its files and loads it (and the champion) into
    the generator, ready to be judged. The lease is checked after every step and before publishing."""
    registry = services.registry
    started = time.perf_counter()
    examples = [
        TrainingExample(
            case_id=c.case_id,
            prompt=judged[c.case_id].evidence.prompt,
            target=training_target(c),
            image_vectors=image_vectors.get(c.case_id),
        )
        for c in plan.training_cases
    ]
    result = train_lora(
        services.base_model.path,
        examples,
        settings=services.settings.learn,
        init_adapter=registry.verified_path(champion) if champion else None,
        out_dir=registry.partial_path(version),
        progress=progress,
        on_step=lambda _step: lease.check() if lease else None,
        fusion=fusion,
        projector_learning_rate=services.settings.imaging.projector_learning_rate,
        device=resolve_device(services.settings.llm.device),
    )
    train_s = time.perf_counter() - started
    if lease:
        lease.check()
    checksum, archive = registry.publish(version)
    # The candidate's row has no checksum until it is final: load it from the files just published.
    services.generator.load_adapter(version, registry.path(version))
    if champion:
        services.load_adapter(champion)
    return TrainedCandidate(version=version, checksum=checksum, archive=archive, training=result, train_s=train_s)
