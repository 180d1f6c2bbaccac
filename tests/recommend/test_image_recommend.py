"""Recommendations and drafts with images, before and after the update cycle trains an encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kbservice.errors import InvalidRequestError
from kbservice.learn.update import run_update_cycle
from kbservice.llm.soft_tokens import IMAGE_SLOT
from kbservice.recommend import evidence
from kbservice.recommend.answer import recommend, replay
from kbservice.recommend.calibrate import calibrate_examples
from kbservice.recommend.describe import describe_images
from kbservice.recommend.fusion import Fusion
from kbservice.recommend.request import RecommendationRequest
from kbservice.recommend.sources import RetrievalRecord
from kbservice.services import Services
from kbservice.types import RequestImage
from tests.helpers import cases_jsonl, ingest_case_file
from tests.imaging.cases import LABELS, ingest_image_cases
from tests.imaging.images import two_class_images


def _image(seed: int = 7) -> RequestImage:
    images, _ = two_class_images(1, seed=seed)
    return RequestImage.of(images[0])


def test_images_are_unused_until_an_encoder_exists(imaging_services: Services, tmp_path: Path) -> None:
    services = imaging_services
    ingest_image_cases(services, tmp_path, 12)
    request = RecommendationRequest(findings="Cough and fever.", images=(_image(),))
    response = recommend(services, request, actor="test", with_treatment=False).to_json()
    assert response["images"]["used"] is False and "no image encoder" in response["images"]["note"]
    assert all(s["kind"] != "image_case" for s in response["sources"])
    with pytest.raises(InvalidRequestError, match="images only"):
        recommend(services, RecommendationRequest(findings="", images=(_image(),)), actor="test")
    with pytest.raises(InvalidRequestError, match="findings are empty"):
        recommend(services, RecommendationRequest(findings=""), actor="test")


def test_after_a_cycle_images_bring_similar_cases_and_soft_tokens(
    imaging_services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = imaging_services
    ingest_image_cases(services, tmp_path, 40)
    report = run_update_cycle(services, triggered_by="test")
    assert report.encoder["status"] == "promoted" and report.adapter_version == "a1"
    assert report.image_fusion["encoder_version"] == "e1" and report.image_fusion["cases_with_images"] > 0
    adapter_row, encoder_row = services.adapter_store.get("a1"), services.encoder_store.get("e1")
    assert adapter_row["encoder_version"] == "e1"
    # One split serves both stages: the adapter's held-out cases were never seen by the encoder either.
    assert set(adapter_row["heldout_case_ids"]) <= set(encoder_row["heldout_case_ids"])
    assert not set(adapter_row["heldout_case_ids"]) & set(encoder_row["train_case_ids"])
    adapter = services.serving_adapter(None)
    assert services.generator.projector_encoder(adapter) == "e1"

    request = RecommendationRequest(findings="Cough and fever.", images=(_image(),))
    response = recommend(services, request, actor="test", with_treatment=False).to_json()
    image_sources = [s for s in response["sources"] if s["kind"] == "image_case"]
    assert response["images"]["used"] and response["provenance"]["encoder_version"] == "e1"
    assert len(image_sources) == services.settings.imaging.similar_images
    assert all(s["image_id"] and s["case_id"] and s["diagnosis"] for s in image_sources)
    assert response["provenance"]["adapter_version"] == "a1"

    alone = recommend(services, RecommendationRequest(findings="", images=(_image(),)), actor="test").to_json()
    assert {s["kind"] for s in alone["sources"]} == {"image_case"} and alone["differential"]
    again = replay(services, alone["id"], actor="test")
    assert again.identical, again.differences

    # The features see the images: the same findings without the image score differently.
    with_image = services.recommender.features(services.recommender.clean_request(request), adapter="a1")
    without = services.recommender.features(
        services.recommender.clean_request(RecommendationRequest(findings="Cough and fever.")), adapter="a1"
    )
    column = with_image.names.index("image_vote")
    assert with_image.matrix[:, column].sum() > 0 and without.matrix[:, column].sum() == 0
    # The encoder's own class head is evidence only when configured (imaging.head_evidence; off by default) ...
    head = with_image.names.index("image_head_logprob")
    assert with_image.retrieval.image_head == [] and not with_image.matrix[:, head].any()
    # ... then each diagnosis it was trained on gets its log-probability (the best at 0), recorded with the
    # retrieval so replay needs no encoder; nothing without an image.
    monkeypatch.setattr(services.settings.imaging, "head_evidence", True)
    alone = recommend(services, RecommendationRequest(findings="", images=(_image(),)), actor="test").to_json()
    assert replay(services, alone["id"], actor="test").identical
    with_image = services.recommender.features(services.recommender.clean_request(request), adapter="a1")
    without = services.recommender.features(
        services.recommender.clean_request(RecommendationRequest(findings="Cough and fever.")), adapter="a1"
    )
    encoder = services.encoders.load("e1")
    pixels = services.recommender.clean_request(request).images[0].pixels
    log_p = np.log(encoder.class_probabilities([pixels])[0])  # type: ignore[attr-defined]
    assert [label for label, _ in with_image.retrieval.image_head] == encoder.labels  # type: ignore[attr-defined]
    for label, value in zip(encoder.labels, log_p - log_p.max(), strict=True):  # type: ignore[attr-defined]
        assert with_image.matrix[with_image.candidates.index(label), head] == pytest.approx(value, abs=1e-6)
    assert not without.matrix[:, head].any() and without.retrieval.image_head == []
    stored = services.recommendations.get(alone["id"])["request"]["retrieval"]
    assert [label for label, _ in stored["image_head"]] == encoder.labels  # type: ignore[attr-defined]
    # Replay reads the recorded head, whatever the setting is now.
    monkeypatch.setattr(services.settings.imaging, "head_evidence", False)
    replayed = services.recommender.evidence(
        services.recommender.clean_request(RecommendationRequest(findings="", images=(_image(),))),
        recorded=RetrievalRecord.from_json(stored),
    )
    assert replayed.case_matrix[:, head].any()
    assert not services.recommender.evidence(services.recommender.clean_request(request)).case_matrix[:, head].any()
    llm = with_image.names.index("llm_total_logprob")
    assert not (with_image.matrix[:, llm] == without.matrix[:, llm]).all()
    # ... and the model's text-alone scores of the request with the image are exactly the request without it
    # (no image tokens, no similar-image cases in that prompt); without an image they copy the model's.
    text_alone = [with_image.names.index(n) for n in evidence.LLM_TEXT_FEATURES]
    model = [with_image.names.index(n) for n in evidence.LLM_FEATURES]
    np.testing.assert_array_equal(with_image.matrix[:, text_alone], without.matrix[:, model])
    np.testing.assert_array_equal(without.matrix[:, text_alone], without.matrix[:, model])
    # A fusion that gives the text-alone scores no weight does not pay for their model pass.
    passes = []
    score_candidates = services.generator.score_candidates
    monkeypatch.setattr(
        services.generator, "score_candidates", lambda *a, **k: passes.append(a[0]) or score_candidates(*a, **k)
    )
    unweighted = Fusion(weights=dict(evidence.DEFAULT_WEIGHTS))
    cheap = services.recommender.features(services.recommender.clean_request(request), adapter="a1", fusion=unweighted)
    assert len(passes) == 1 and not cheap.matrix[:, text_alone].any()
    np.testing.assert_array_equal(cheap.matrix[:, model], with_image.matrix[:, model])
    services.recommender.features(services.recommender.clean_request(request), adapter="a1")
    assert len(passes) == 3 and passes[2] != passes[1] and IMAGE_SLOT not in passes[2]
    # An image-only request has no text to score alone: one pass, and those columns say nothing.
    image_only = RecommendationRequest(findings="", images=(_image(),))
    only = services.recommender.features(services.recommender.clean_request(image_only), adapter="a1")
    assert len(passes) == 4 and not only.matrix[:, text_alone].any()

    draft = describe_images(services, (_image(),), actor="test")
    assert draft["image_tokens"] and draft["encoder_version"] == "e1" and draft["adapter_version"] == "a1"
    assert len(draft["sources"]) == 3 and all(s["kind"] == "image_case" for s in draft["sources"])
    assert set(draft["citations"]) <= {s["id"] for s in draft["sources"]}
    assert services.audit.store.latest(kinds=["image.describe"], limit=1)

    # Calibration fits the head's weight on cases the encoder never trained on (its scores on those are
    # overconfident), as it does the case classifier's.
    later = cases_jsonl(
        tmp_path, "later.jsonl", *({"id": f"t{n}", "findings": "Cough.", "diagnosis": LABELS[n % 2]} for n in range(12))
    )
    ingest_case_file(services, later)
    report, examples = calibrate_examples(services)
    calibrated = {e.case.case_id for e in examples if e.case is not None}
    assert calibrated and not calibrated & set(encoder_row["train_case_ids"])
    assert report["metrics"]["cases"] == len(calibrated)
