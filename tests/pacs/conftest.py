"""A real PACS for the tests: Orthanc with its DICOMweb plugin (Debian's `orthanc`, `orthanc-dicomweb`),
started on free ports with a throw-away configuration and storage folder, loaded through STOW-RS."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import SHARED_DATA
from tests.imaging.images import write_dicom

ORTHANC = shutil.which("Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "kbservice", "pacs-test-secret"
# The generated study: identifiers that must never reach SQL, the index files or the audit log.
PATIENT_NAME, PATIENT_ID, ACCESSION = "Roe^Richardine", "PAT-424242", "ACC-777001"
STUDY_UID = "1.2.826.0.1.3680043.8.498.424242"
STUDY_DATE = "20240315"


@dataclass(frozen=True)
class Pacs:
    url: str  # the DICOMweb root
    study_uid: str
    series_uid: str
    instances: int
    sample_study_uids: tuple[str, ...]  # the shared DICOM samples' studies


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _generated_study(folder: Path, count: int) -> list[Path]:
    paths = []
    for number in range(count):
        pixels = ((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) + number * 97) * 13) % 4096
        paths.append(
            write_dicom(
                folder / f"generated-{number}.dcm",
                pixels,
                modality="CR",
                patient=PATIENT_NAME,
                patient_id=PATIENT_ID,
                study_date=STUDY_DATE,
                study_uid=STUDY_UID,
                extra={"AccessionNumber": ACCESSION, "InstanceNumber": number + 1},
            )
        )
    return paths


def stow(url: str, paths: list[Path]) -> None:
    """Stores the files through STOW-RS (the DICOMweb upload), as a modality or a router would."""
    import pydicom
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass

    client = DICOMwebClient(url, session=create_session_from_user_pass(USER, PASSWORD))
    client.store_instances([pydicom.dcmread(path) for path in paths])


@contextmanager
def orthanc_running(folder: Path) -> Iterator[str]:
    """An Orthanc with the DICOMweb plugin on free ports, its configuration and storage in `folder`
    (basic auth USER / PASSWORD); yields the DICOMweb root, stops it afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    http_port = _free_port()
    config = {
        "Name": "kbservice-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": http_port,
        "DicomPort": _free_port(),
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{http_port}"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    process = subprocess.Popen([str(ORTHANC), str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/system", auth=(USER, PASSWORD), timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"{base}/dicom-web"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="session")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    if ORTHANC is None or not DICOMWEB_PLUGIN.exists():
        if os.environ.get("CI"):
            pytest.fail("Orthanc and its DICOMweb plugin are required in CI (.ci/run installs them)")
        pytest.skip("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    folder = tmp_path_factory.mktemp("orthanc")
    with orthanc_running(folder) as url:
        generated = _generated_study(folder / "generated", 3)
        samples = [SHARED_DATA / "dicom_samples" / name for name in ("CT_small.dcm", "MR_small.dcm")]
        samples = [path for path in samples if path.exists()]
        stow(url, generated + samples)
        import pydicom

        yield Pacs(
            url=url,
            study_uid=STUDY_UID,
            series_uid=STUDY_UID + ".1",
            instances=len(generated),
            sample_study_uids=tuple(str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in samples),
        )
