"""A local Hugging Face vision model directory serves as the image encoder through configuration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kbservice.learn.update import run_update_cycle
from kbservice.recommend.answer import recommend
from kbservice.recommend.request import RecommendationRequest
from kbservice.types import RequestImage
from tests.imaging.cases import imaging_services_for, ingest_image_cases
from tests.imaging.images import two_class_images


def test_a_configured_vision_model_is_registered_and_used(
    tmp_path: Path, tiny_lm_dir: Path, tiny_vit_dir: Path
) -> None:
    services = imaging_services_for(
        tmp_path / "data", None, tiny_lm_dir, encoder="huggingface", hf_model_path=tiny_vit_dir
    )
    try:
        ingest_image_cases(services, tmp_path, 12)
        version = services.encoders.champion_version()
        assert version is not None and version.startswith("hf-")
        row = services.encoders.list()[0]
        assert row["kind"] == "huggingface" and row["status"] == "promoted" and row["aliases"] == ["champion"]
        assert services.encoders.champion_version() == version  # registered once
        encoder = services.encoders.load(version)
        vectors = encoder.encode([np.zeros((16, 16), np.uint8), np.full((16, 16), 200, np.uint8)])
        assert vectors.shape == (2, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        probe = services.image_store.pixels([3])[3]
        found, hits = services.image_similarity.similar([probe], k=2, as_of=1)
        assert found == version and hits[0].image_id == 3

        stage = run_update_cycle(services, triggered_by="test", stages=("encoder",)).encoder
        assert stage["status"] == "skipped" and "nothing to train" in stage["reason"]

        images, _ = two_class_images(1, seed=3)
        response = recommend(
            services,
            RecommendationRequest(findings="Cough.", images=(RequestImage.of(images[0]),)),
            actor="test",
            with_treatment=False,
        ).to_json()
        assert response["provenance"]["encoder_version"] == version
        assert any(s["kind"] == "image_case" for s in response["sources"])
    finally:
        services.close()
