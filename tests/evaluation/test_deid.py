"""`eval deid`: the de-identifier's recall on real notes seeded with identifiers, and what it preserves."""

from __future__ import annotations

import pytest

from kbservice.evaluation.deid import evaluate_deid
from tests.conftest import SHARED_DATA


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "mtsamples").exists(), reason="../shared/data/mtsamples not present")
def test_seeded_mtsamples_recall_and_clinical_preservation() -> None:
    result = evaluate_deid(
        notes_csv=SHARED_DATA / "mtsamples" / "mtsamples.csv",
        drugs_csv=SHARED_DATA / "who_eml_gnuhealth" / "who_eml_2017_gnuhealth.csv",
        notes=60,
        seed=23,
    )
    assert result["seeded_identifiers"] > 400
    assert result["recall"] >= 0.98, result
    assert result["clinical_preserved"] >= 0.99, result
