"""Self-supervised pre-training of the CNN encoder: it learns (its own loss falls), its views keep left
and right, it is deterministic, and the update cycle records it with the encoder version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kbservice.config import ImagingSettings
from kbservice.imaging.pretraining import nt_xent, pretrained_network, radiograph_view
from kbservice.learn.update import run_update_cycle
from kbservice.services import Services
from tests.imaging.cases import FAST_IMAGING, ingest_image_cases
from tests.imaging.images import two_class_images

PRETRAIN = {"cnn_pretrain_epochs": 12, "cnn_pretrain_batch_size": 32}


def test_pretraining_lowers_its_contrastive_loss_and_is_deterministic() -> None:
    images, _ = two_class_images(96, seed=2)
    settings = ImagingSettings(**FAST_IMAGING, **PRETRAIN)
    network, record = pretrained_network(images, classes=2, settings=settings, seed=0)
    losses = [entry["loss"] for entry in record.history]
    assert record.epochs_run == 12 and record.images == 96
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.2, losses
    again, repeat = pretrained_network(images, classes=2, settings=settings, seed=0)
    assert repeat.history == record.history
    pairs = zip(network.state_dict().values(), again.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_views_never_mirror_the_image() -> None:
    # Bright on the left half only: every view keeps more light on the left than on the right.
    image = torch.zeros(64, 1, 32, 32)
    image[..., :16] = 0.9
    views = radiograph_view(image, torch.Generator().manual_seed(0))
    left, right = views[..., :16].mean(dim=(1, 2, 3)), views[..., 16:].mean(dim=(1, 2, 3))
    assert bool((left > right + 0.3).all())
    assert not torch.equal(views[0], views[1])  # each image its own random view


def test_nt_xent_is_lowest_when_each_view_finds_its_pair() -> None:
    first = torch.eye(4) * 5
    assert nt_xent(first, first.clone(), 0.2) < nt_xent(first, first.roll(1, dims=0), 0.2)


def _promoted_pretrained_encoder(services: Services, folder: Path, *, unlabelled: int = 0) -> dict:
    """The encoder stage's report after pre-training on 40 labelled image cases and `unlabelled` more."""
    services.settings.imaging = services.settings.imaging.model_copy(update=PRETRAIN)
    ingest_image_cases(services, folder, 40)
    if unlabelled:
        ingest_image_cases(services, folder, unlabelled, prefix="u", seed=3, labelled=False)
    stage = run_update_cycle(services, triggered_by="test", stages=("encoder",)).encoder
    assert stage["status"] == "promoted", stage["gate"]
    return stage


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # about training, not storage
def test_the_update_cycle_pretrains_outside_the_gate_cases_and_records_it(
    imaging_services: Services, tmp_path: Path
) -> None:
    services = imaging_services
    stage = _promoted_pretrained_encoder(services, tmp_path)
    pretraining = stage["pretraining"]
    held_out = stage["gate"]["cases"]
    assert pretraining["images"] == 40 - held_out  # every image except the gate's cases, labelled or not
    assert pretraining["final_loss"] < pretraining["first_loss"]
    row = services.encoder_store.get("e1")
    assert row["hyperparameters"]["pretraining"]["method"] == "simclr"
    assert row["hyperparameters"]["pretraining"]["epochs"] == 12


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # about training, not storage
def test_unlabelled_image_cases_are_pretrained_on_but_never_trained_judged_or_returned(
    imaging_services: Services, tmp_path: Path
) -> None:
    services = imaging_services
    stage = _promoted_pretrained_encoder(services, tmp_path, unlabelled=24)
    assert stage["pretraining"]["images"] == 40 - stage["gate"]["cases"] + 24
    unlabelled = {c.case_id for c in services.case_store.cases(as_of=2) if not c.diagnosis}
    row = services.encoder_store.get("e1")
    assert len(unlabelled) == 24 and not unlabelled & {*row["train_case_ids"], *row["heldout_case_ids"]}
    # Their images are indexed with the rest, yet similar-image search answers with labelled cases only,
    # even for a probe that is one of them.
    probe = services.image_store.pixels(services.image_store.ids_by_case(sorted(unlabelled))[min(unlabelled)])
    _, hits = services.image_similarity.similar(list(probe.values()), k=10, as_of=2)
    assert len(hits) == 10 and not {h.case_id for h in hits} & unlabelled
