"""Cases with images: read, de-identified and stored with the case in one version, or nothing at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sqlalchemy import func, select

from kbservice.db.schema import images, knowledge_versions
from kbservice.errors import IngestError
from kbservice.services import Services
from tests.conftest import write
from tests.helpers import cases_jsonl, ingest_case_file
from tests.imaging.images import write_dicom, write_nifti, write_png


def test_dicom_png_and_nifti_images_are_stored_deidentified(services: Services, tmp_path: Path) -> None:
    write_dicom(tmp_path / "scans" / "ct.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8), window=(40, 400))
    write_png(tmp_path / "scans" / "Jane Doe chest.png", np.full((8, 8), 120, dtype=np.uint8))
    write_nifti(tmp_path / "scans" / "head.nii.gz", np.ones((4, 4, 3), dtype=np.int16), description=b"Jane Doe 1970")
    path = cases_jsonl(
        tmp_path,
        "cases.jsonl",
        {
            "id": "c1",
            "findings": "Cough.",
            "diagnosis": "Pneumonia",
            "images": ["scans/ct.dcm", "scans/Jane Doe chest.png"],
        },
        {"id": "c2", "diagnosis": "Normal", "images": "scans/head.nii.gz"},  # an image-only case
    )
    report = ingest_case_file(services, path)
    assert report.version == 1
    first, second = services.case_store.cases(as_of=1)
    ids = services.image_store.ids_by_case([first.case_id, second.case_id])
    assert ids == {first.case_id: [1, 2], second.case_id: [3]}
    assert second.findings == "" and "Jane" not in json.dumps([first.images, second.images])

    ct = services.image_store.get(1)
    assert ct["format"] == "dicom" and ct["modality"] == "CT" and ct["deidentified"] and ct["case_external_id"] == "c1"
    header = {element["keyword"]: element.get("value") for element in ct["header"]}
    assert header["PatientIdentityRemoved"] == "YES" and header["PatientName"].startswith("ANON-")
    assert "Doe" not in json.dumps(ct["header"]) and "MRN-123456" not in json.dumps(ct["header"])
    stored = pydicom.dcmread(services.settings.images_dir / ct["stored_path"])
    assert stored.PatientIdentityRemoved == "YES" and "Doe" not in str(stored.PatientName)
    assert stored.StudyInstanceUID != "1.2.826.0.1.3680043.8.498.1"

    png = services.image_store.get(2)
    assert png["format"] == "png" and png["stored_path"].endswith(".png") and "Jane" not in png["stored_path"]
    nifti = services.image_store.get(3)
    stored_nifti = (services.settings.images_dir / nifti["stored_path"]).read_bytes()
    assert nifti["format"] == "nifti" and b"Jane Doe" not in stored_nifti
    pixels = services.image_store.pixels([1, 2, 3])
    assert all(p.shape == (services.settings.imaging.size,) * 2 and p.dtype == np.uint8 for p in pixels.values())


@pytest.mark.parametrize(
    ("image", "message"),
    [("missing.png", "cannot read"), ("empty.png", "empty"), ("notes.png", "not a DICOM, PNG, JPEG or NIfTI")],
)
def test_one_bad_image_stops_the_file_and_changes_nothing(
    services: Services, tmp_path: Path, image: str, message: str
) -> None:
    write_png(tmp_path / "good.png", np.zeros((8, 8), dtype=np.uint8))
    write(tmp_path / "empty.png", b"")
    write(tmp_path / "notes.png", "not an image")
    path = write(
        tmp_path / "cases.csv",
        f"id,findings,diagnosis,images\nc1,Cough,Pneumonia,good.png\nc2,Wheeze,Asthma,good.png|{image}\n",
    )
    with pytest.raises(IngestError, match=message) as caught:
        ingest_case_file(services, path)
    assert caught.value.problems[0][0] == "case c2"
    with services.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(images)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(knowledge_versions)).scalar_one() == 0


def test_a_case_needs_findings_or_images(services: Services, tmp_path: Path) -> None:
    path = cases_jsonl(tmp_path, "cases.jsonl", {"id": "c1", "diagnosis": "Asthma"})
    with pytest.raises(IngestError, match="findings, images or both"):
        ingest_case_file(services, path)
