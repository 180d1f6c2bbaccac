"""The de-identification key is shared through the database (sealed), on SQLite and PostgreSQL: two replicas
on one database pseudonymise a patient alike; a replica with another key-encryption key or its own older
`deid.key` is refused."""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from kbservice.config import DeidSettings, Settings
from kbservice.db.schema import cases, images
from kbservice.errors import ConfigError, SecretKeyError
from kbservice.services import Services, build_services, initialise
from tests.cli.runner import Cli
from tests.conftest import REPO_ROOT, make_settings
from tests.helpers import cases_jsonl, ingest_case_file
from tests.imaging.images import write_dicom

KEK = secrets.token_hex(32)


def _replica(tmp_path: Path, name: str, database_url: str, kek: str | None = KEK) -> Services:
    settings: Settings = make_settings(tmp_path / name, database_url, deid=DeidSettings(key_encryption_key=kek))
    initialise(settings)
    return build_services(settings)


def _ingest_dicom_case(services: Services, folder: Path, case_id: str) -> dict[str, str]:
    """Ingests one DICOM case of patient MRN-424242; its stored header, keyword -> value."""
    write_dicom(folder / f"{case_id}.dcm", np.full((8, 8), 100, dtype=np.uint16), patient_id="MRN-424242")
    ingest_case_file(
        services,
        cases_jsonl(
            folder, f"{case_id}.jsonl", {"id": case_id, "diagnosis": "Pneumonia", "images": [f"{case_id}.dcm"]}
        ),
    )
    query = select(images.c.id).join(cases, cases.c.case_id == images.c.case_id).where(cases.c.external_id == case_id)
    with services.engine.connect() as conn:
        image_id = conn.execute(query).scalar_one()
    header = services.image_store.get(image_id)["header"]
    return {element["keyword"]: element.get("value") for element in header}


def test_two_replicas_on_one_database_pseudonymise_a_patient_alike(database_url: str, tmp_path: Path) -> None:
    first, second = _replica(tmp_path, "a", database_url), _replica(tmp_path, "b", database_url)
    try:
        key = first.deid_key()
        assert second.deid_key() == key and len(key) == 32
        sealed = first.secret_store.get("deid")
        assert sealed is not None and key not in sealed.wrapped  # stored sealed, never in the clear
        assert not (tmp_path / "a" / "deid.key").exists()  # nothing per data directory any more
        one = _ingest_dicom_case(first, tmp_path / "in-a", "c1")
        other = _ingest_dicom_case(second, tmp_path / "in-b", "c2")
        assert one["PatientID"] == other["PatientID"] != "MRN-424242"
        assert one["StudyInstanceUID"] == other["StudyInstanceUID"]
    finally:
        first.close()
        second.close()


def test_a_replica_with_another_key_encryption_key_is_refused(database_url: str, tmp_path: Path) -> None:
    first = _replica(tmp_path, "a", database_url)
    stranger = _replica(tmp_path, "b", database_url, kek=None)  # unset: its own data-directory key
    try:
        first.deid_key()
        with pytest.raises(SecretKeyError, match=r"give every replica the same deid\.key_encryption_key"):
            stranger.deid_key()
    finally:
        first.close()
        stranger.close()


def test_an_existing_key_file_is_adopted_and_a_disagreeing_one_refused(database_url: str, tmp_path: Path) -> None:
    """Data directories from before the key moved into the database keep their pseudonyms; a second one with
    another key of its own would map the same patient differently, so it is refused."""
    for name, content in (("a", b"a" * 32), ("b", b"b" * 32)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "deid.key").write_bytes(content)
    first, second = _replica(tmp_path, "a", database_url), _replica(tmp_path, "b", database_url)
    try:
        assert first.deid_key() == b"a" * 32
        with pytest.raises(SecretKeyError, match="holds another de-identification key"):
            second.deid_key()
        (tmp_path / "b" / "deid.key").unlink()  # what the message tells the operator to do
        assert second.deid_key() == b"a" * 32
    finally:
        first.close()
        second.close()


def test_a_malformed_key_encryption_key_is_a_configuration_error(tmp_path: Path) -> None:
    services = _replica(tmp_path, "a", f"sqlite:///{tmp_path / 'a' / 'kb.sqlite3'}", kek="too-short")
    try:
        with pytest.raises(ConfigError, match="32 bytes as hex or base64"):
            services.deid_key()
    finally:
        services.close()


def test_serve_refuses_to_start_with_another_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    first = _replica(tmp_path, "a", database_url)
    first.deid_key()
    first.close()
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "b"))
    monkeypatch.setenv("KB_CONFIG", str(REPO_ROOT / "config" / "test.toml"))
    monkeypatch.setenv("KB_DATABASE_URL", database_url)
    monkeypatch.setenv("KB_DEID__KEY_ENCRYPTION_KEY", secrets.token_hex(32))
    _, err = Cli(capsys)("serve", "--port", "1", expect=1)
    assert "give every replica the same deid.key_encryption_key" in err
