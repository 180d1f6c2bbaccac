"""The `--json` output of the commands no other CLI test runs, checked against the key snapshot.

The evaluations run here on tiny synthetic stand-ins for their data sets (a PneumoniaMNIST-shaped .npz, a
COVID-19 chest X-ray folder with the real metadata columns): fast, and what matters is the output's shape.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kbservice.learn import update
from kbservice.learn.judging import Verdict
from tests.cli.runner import Cli
from tests.cli.snapshots import check_json_keys
from tests.conftest import SHARED_DATA
from tests.imaging.images import two_class_images, write_png

MEDQUAD = SHARED_DATA / "medquad" / "medquad_answered.jsonl"
MTSAMPLES = SHARED_DATA / "mtsamples" / "mtsamples.csv"
WHO_EML = SHARED_DATA / "who_eml_gnuhealth" / "who_eml_2017_gnuhealth.csv"


@pytest.fixture
def run(run_with_images: Cli) -> Cli:
    return run_with_images


@pytest.fixture(autouse=True)
def quick_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_IMAGING__CNN_EPOCHS", "3")


def test_models_show_and_search_benchmark(run: Cli) -> None:
    check_json_keys("models show", run.json("models", "show"))
    result = run.json("bench", "search", "--vectors", "3000", "--queries", "5", "--kinds", "flat")
    check_json_keys("bench search", result)


@pytest.mark.shared_data
def test_ingest_benchmark_and_retrieval_eval(run: Cli, tmp_path: Path) -> None:
    if not MEDQUAD.exists():
        pytest.skip("../shared/data/medquad is absent")
    corpus = tmp_path / "medquad_head.jsonl"  # the evaluation samples from the whole file: ingest all of it
    with MEDQUAD.open(encoding="utf-8") as handle:
        corpus.write_text("".join(next(handle) for _ in range(30)), encoding="utf-8")
    check_json_keys("bench ingest", run.json("bench", "ingest", "--corpus", str(corpus)))
    result = run.json("eval", "retrieval", "--corpus", str(corpus), "--sample", "5")
    check_json_keys("eval retrieval", result)


@pytest.mark.shared_data
def test_deid_eval(run: Cli) -> None:
    if not (MTSAMPLES.exists() and WHO_EML.exists()):
        pytest.skip("../shared/data/mtsamples or who_eml_gnuhealth is absent")
    result = run.json("eval", "deid", "--notes", str(MTSAMPLES), "--drugs", str(WHO_EML), "--notes-count", "3")
    check_json_keys("eval deid", result)


def _pneumonia_like(path: Path) -> Path:
    """train/val/test splits of 28 x 28 two-class images, shaped like pneumoniamnist.npz."""
    arrays = {}
    for split, count, seed in (("train", 40, 1), ("val", 12, 2), ("test", 10, 3)):
        images, labels = two_class_images(count, seed=seed, size=28)
        arrays[f"{split}_images"] = np.stack(images)
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.uint8)[:, None]
    np.savez(path, **arrays)
    return path


def test_image_benchmark(run: Cli, tmp_path: Path) -> None:
    result = run.json("bench", "images", "--data", str(_pneumonia_like(tmp_path / "pneumonia.npz")))
    assert result["test"]["cases"] == 10
    check_json_keys("bench images", result)


def _covid_like(folder: Path) -> Path:
    """A chest X-ray folder with the real metadata columns: 3 classes, one or two images per patient, and
    4 more images whose finding is "todo" (unlabelled)."""
    images, labels = two_class_images(40, seed=5)
    findings = ("COVID-19", "No Finding", "Pneumonia/Viral/SARS")
    columns = [
        "patientid",
        "finding",
        "clinical_notes",
        "age",
        "sex",
        "image_png",
        "temperature",
        "pO2_saturation",
        "leukocyte_count",
        "lymphocyte_count",
        "view",
    ]
    with (folder / "xray_licensed_metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for n, (image, label) in enumerate(zip(images, labels, strict=True)):
            finding = "todo" if n >= 36 else findings[0] if label else findings[1 + n % 2]
            write_png(folder / "images256" / f"{n}.png", image)
            writer.writerow(
                {
                    "patientid": str(n // 2),
                    "finding": finding,
                    "clinical_notes": f"Cough for {n % 5 + 1} days.",
                    "age": str(40 + n),
                    "sex": "MF"[n % 2],
                    "image_png": f"{n}.png",
                    "temperature": "38.5",
                    "pO2_saturation": "",
                    "leukocyte_count": "",
                    "lymphocyte_count": "",
                    "view": "PA",
                }
            )
    return folder


def test_image_fusion_eval_pretrains_on_unlabelled_films(
    run: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "covid").mkdir()
    films, _ = two_class_images(6, seed=8)
    np.savez(tmp_path / "films.npz", train_images=np.stack(films))
    monkeypatch.setenv("KB_IMAGING__CNN_PRETRAIN_EPOCHS", "2")
    monkeypatch.setenv("KB_IMAGING__CNN_PRETRAIN_BATCH_SIZE", "8")
    npz = str(tmp_path / "films.npz")
    data = str(_covid_like(tmp_path / "covid"))
    result = run.json("eval", "image-fusion", "--data", data, "--unlabelled", "todo", "--unlabelled", npz)
    check_json_keys("eval image-fusion", result)
    assert result["ingest"]["unlabelled_images"] == [{"source": "todo", "images": 4}, {"source": npz, "images": 6}]
    pretraining = result["update_cycle"]["encoder_pretraining"]
    # Every training image outside the encoder's held-out cases (the adapter's: each case is new to both
    # stages), plus the 10 unlabelled films.
    outside_gate = result["split"]["train_images"] - result["split"]["calibration_cases"]
    assert pretraining["images"] == outside_gate + 10 and pretraining["epochs_run"] == 2
    _, error = run("eval", "image-fusion", "--data", data, "--unlabelled", "films.zip", expect=2)
    assert "--unlabelled" in error and "films.zip" in error


def test_a_split_whose_adapter_the_gate_rejects_is_scored_on_the_base_model(
    run: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With vitals-only text the adapter gate rejected 2 of 5 COVID-19 splits (ECE worse by more than the
    # margin); the service then answers with the base model and the promoted encoder, and so must the eval.
    judge = update.judge_candidate

    def rejecting(*args: Any, **kwargs: Any) -> Verdict:
        verdict = judge(*args, **kwargs)
        return replace(verdict, gate=replace(verdict.gate, passed=False, reasons=["rejected by the test"]))

    monkeypatch.setattr(update, "judge_candidate", rejecting)
    (tmp_path / "covid").mkdir()
    result = run.json("eval", "image-fusion", "--data", str(_covid_like(tmp_path / "covid")))
    assert "error" not in result, result.get("error")
    assert result["update_cycle"]["adapter_status"] == "rejected" and result["served_adapter"] is None
    assert result["update_cycle"]["encoder"] == "promoted"
    assert result["split"]["calibration_cases"] > 0
    image_weights = result["conditions"]["image"]["weights"]
    assert any(image_weights[name] for name in ("image_vote", "image_best", "image_best_sharp"))


def test_image_fusion_eval_over_repeated_splits_with_vitals_only(run: Cli, tmp_path: Path) -> None:
    (tmp_path / "covid").mkdir()
    data = str(_covid_like(tmp_path / "covid"))
    features = tmp_path / "features"
    result = run.json(
        "eval", "image-fusion", "--data", data, "--seeds", "2", "--text", "vitals", "--features-out", str(features)
    )
    check_json_keys("eval image-fusion --seeds", result)
    assert result["seeds"] == [0, 1] and result["text"] == "vitals" and len(result["splits"]) == 2
    assert sorted(p.name for p in features.iterdir()) == ["split-0.pkl", "split-1.pkl"]
    for single in ("text", "image"):
        for metric in ("accuracy", "macro_f1"):
            interval = result["fused_minus"][single][metric]
            assert interval["ci95_low"] <= interval["difference"] <= interval["ci95_high"]
    _, error = run("eval", "image-fusion", "--data", data, "--text", "gossip", expect=2)
    assert "choose one of notes, vitals" in error


def test_skipped_update_and_empty_listings(run: Cli) -> None:
    run("init")
    check_json_keys("update run-once skipped empty", run.json("update", "run-once"))
    for command in (("adapters", "list"), ("encoders", "list"), ("keys", "list"), ("versions",), ("cases",)):
        assert run.json(*command) == []
    check_json_keys("index verify empty", run.json("index", "verify"))
    assert json.dumps(run.json("audit", "list"))
