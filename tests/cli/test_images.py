"""Images through the real CLI: ingest with images, encoders, similar images, show, recommend and describe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.cli.runner import Cli
from tests.cli.snapshots import check_json_keys
from tests.imaging.cases import ingest_image_cases
from tests.imaging.images import two_class_images, write_dicom, write_png


@pytest.fixture
def run(run_with_images: Cli) -> Cli:
    return run_with_images


def test_image_commands_end_to_end(run: Cli, tmp_path: Path) -> None:
    from kbservice.config import load_settings
    from kbservice.services import build_services

    services = build_services(load_settings())
    try:
        ingest_image_cases(services, tmp_path, 40)
    finally:
        services.close()
    write_dicom(tmp_path / "more" / "scan.dcm", np.arange(256, dtype=np.uint16).reshape(16, 16), modality="CR")
    (tmp_path / "more" / "cases.csv").write_text("id,findings,diagnosis,images\nd1,Cough,Lower opacity,scan.dcm\n")
    report = run.json("ingest", "cases", str(tmp_path / "more" / "cases.csv"))
    assert report["version"] == 2
    check_json_keys("ingest cases with images", report)
    cases = run.json("cases")
    assert cases[-1]["image_ids"] == [41] and cases[0]["image_ids"] == [1]
    check_json_keys("cases with images", cases)
    shown = run.json("images", "show", "41")
    assert shown["format"] == "dicom" and shown["deidentified"] and Path(shown["stored_file"]).exists()
    check_json_keys("images show", shown)
    assert {"PatientIdentityRemoved", "DeidentificationMethod", "StudyInstanceUID"} <= {
        e["keyword"] for e in shown["header"]
    }
    out, _ = run("images", "show", "41")
    assert "PatientIdentityRemoved" in out and "YES" in out
    run("images", "show", "999", expect=1)

    probe = write_png(tmp_path / "probe.png", two_class_images(1, seed=11)[0][0])
    unanswered = run.json("images", "similar", "--image", str(probe))
    assert "no image encoder" in unanswered["note"]
    check_json_keys("images similar without encoder", unanswered)
    check_json_keys("describe without encoder", run.json("describe", "--image", str(probe)))
    out, _ = run("encoders", "list")
    assert "no image encoder yet" in out
    answer = run.json("recommend", "--findings", "Cough.", "--image", str(probe), "--no-treatment")
    assert answer["images"]["used"] is False
    check_json_keys("recommend with unused image", answer)
    _, err = run("recommend", "--image", str(probe), expect=1)
    assert "images only" in err

    cycle = run.json("update", "run-once", "--only", "encoder")
    assert cycle["status"] == "promoted" and cycle["encoder"]["version"] == "e1"
    check_json_keys("update run-once encoder", cycle)
    encoders = run.json("encoders", "list")
    assert encoders[0]["aliases"] == ["champion"]
    check_json_keys("encoders list", encoders)
    similar = run.json("images", "similar", "--image", str(probe), "--k", "3")
    assert similar["encoder_version"] == "e1" and len(similar["similar"]) == 3
    check_json_keys("images similar", similar)
    answer = run.json("recommend", "--image", str(probe), "--no-treatment")
    assert answer["provenance"]["encoder_version"] == "e1"
    assert any(s["kind"] == "image_case" for s in answer["sources"])
    check_json_keys("recommend image only", answer)
    out, _ = run("recommend", "--image", str(probe), "--no-treatment")
    assert "image_case" in out
    described = run.json("describe", "--image", str(probe))
    assert described["encoder_version"] == "e1" and len(described["sources"]) == 3
    check_json_keys("describe", described)
    _, err = run("recommend", "--image", str(tmp_path / "missing.png"), expect=1)
    assert "cannot read" in err
    run("encoders", "rollback", "--reason", "test")
    assert run.json("encoders", "list")[0]["aliases"] == ["previous"]
