"""Issue 17: a real PACS (Orthanc + DICOMweb) through the CLI: ping, find, case ingest by study UID,
recommendation by study UID; no identifier from the PACS reaches SQL, the index files, the stored images
or the audit log; a PACS that fails stores nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, select

from kbservice.config import load_settings
from tests.cli.conftest import _environment
from tests.cli.runner import Cli
from tests.ingest.fhir_bundles import PATIENT_MRN, case_bundle
from tests.pacs.conftest import ACCESSION, PASSWORD, PATIENT_ID, STUDY_DATE, USER, Pacs
from tests.pacs.faulty import faulty_pacs

IDENTIFIERS = ("Roe", "Richardine", PATIENT_ID, ACCESSION)


@pytest.fixture
def pacs_cli(  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str, tiny_lm_dir: Path, pacs: Pacs, capsys
) -> Cli:
    _environment(
        monkeypatch,
        tmp_path,
        KB_DATABASE_URL=database_url,
        KB_LLM__MODEL_PATH=str(tiny_lm_dir),
        KB_PACS__URL=pacs.url,
        KB_PACS__USERNAME=USER,
        KB_PACS__PASSWORD=PASSWORD,
    )
    runner = Cli(capsys)
    runner("init")
    return runner


@pytest.fixture
def sqlite_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> Cli:  # type: ignore[no-untyped-def]
    """The CLI on a fresh SQLite data directory: the client's failures do not depend on the database."""
    _environment(monkeypatch, tmp_path, KB_DATABASE_URL=f"sqlite:///{tmp_path / 'kb.sqlite3'}")
    runner = Cli(capsys)
    runner("init")
    return runner


def _cases_file(tmp_path: Path, *images: str, case_id: str = "pacs-1") -> Path:
    row = {"id": case_id, "findings": "Cough and fever.", "diagnosis": "Pneumonia", "images": list(images)}
    path = tmp_path / f"{case_id}.jsonl"
    path.write_text(json.dumps(row) + "\n")
    return path


def _everything_stored_as_text(data_dir: Path) -> str:
    """Every row of every table (SQLite or PostgreSQL), the index files and the stored image files."""
    settings = load_settings()
    engine = create_engine(settings.resolved_database_url)
    metadata = MetaData()
    metadata.reflect(engine)
    parts = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            parts += [repr(tuple(row)) for row in conn.execute(select(table))]
    engine.dispose()
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and ("index" in path.parts or "images" in path.parts):
            parts.append(path.read_bytes().decode("latin-1"))
    return "\n".join(parts)


def test_find_ingest_and_recommend_by_study_uid_keep_no_identifier(pacs_cli: Cli, pacs: Pacs, tmp_path: Path) -> None:
    assert pacs_cli.json("pacs", "ping")["reachable"]
    out, _ = pacs_cli("pacs", "find", "--patient-id", PATIENT_ID)
    studies = pacs_cli.json("pacs", "find", "--accession", ACCESSION)
    assert [s["study_uid"] for s in studies] == [pacs.study_uid]
    study = studies[0]
    assert study["instances"] == pacs.instances and study["modalities"] == ["CR"]
    assert study["series"] == [{"series_uid": pacs.series_uid, "modality": "CR", "instances": pacs.instances}]
    assert study["study_date_shifted"] and study["study_date_shifted"] < STUDY_DATE
    for shown in (out, json.dumps(studies)):
        assert not any(identifier in shown for identifier in IDENTIFIERS), shown

    pacs_cli("ingest", "guidelines", str(Path(__file__).parents[2] / "kbservice" / "demo" / "guidelines"))
    report = pacs_cli.json("ingest", "cases", str(_cases_file(tmp_path, f"dicomweb:{pacs.study_uid}")))
    assert report["version"] is not None
    series_case = _cases_file(tmp_path, f"dicomweb:{pacs.study_uid}/{pacs.series_uid}", case_id="pacs-2")
    pacs_cli.json("ingest", "cases", str(series_case))
    # A FHIR Bundle's ImagingStudy is fetched through the same client.
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(case_bundle(encounter_id="enc-pacs", study_uid=pacs.study_uid)))
    pacs_cli.json("ingest", "cases", str(bundle))
    cases = {c["id"]: c for c in pacs_cli.json("cases")}
    assert len(cases["pacs-1"]["image_ids"]) == pacs.instances == len(cases["pacs-2"]["image_ids"])
    from_bundle = [c for case_id, c in cases.items() if case_id.startswith("fhir-")]
    assert [len(c["image_ids"]) for c in from_bundle] == [pacs.instances]
    shown = pacs_cli.json("images", "show", str(cases["pacs-1"]["image_ids"][0]))
    assert shown["format"] == "dicom" and shown["deidentified"]

    answer = pacs_cli.json("recommend", "--findings", "Cough.", "--study", pacs.study_uid, "--no-treatment")
    assert answer["images"]["given"] == pacs.instances
    pacs_cli("audit", "replay", answer["id"])

    stored = _everything_stored_as_text(load_settings().data_dir)
    bundle_identifiers = (PATIENT_MRN, "Quintessa", "Harbour Lane", "1970-05-10")
    leaked = [i for i in (*IDENTIFIERS, pacs.study_uid, *bundle_identifiers) if i in stored]
    assert not leaked, f"identifiers from the PACS or the Bundle were stored: {leaked}"


@pytest.mark.parametrize(
    "mode",
    ["unknown study", "too many instances", "too many bytes", "down", "error", "hang", "not-dicom", "not configured"],
)
def test_a_pacs_that_fails_gives_a_clear_error_and_stores_nothing(
    sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest, mode: str
) -> None:
    run = sqlite_cli
    monkeypatch.setenv("KB_PACS__TIMEOUT_S", "0.5")
    monkeypatch.setenv("KB_PACS__RETRIES", "1")
    monkeypatch.setenv("KB_PACS__BACKOFF_S", "0")
    cases = _cases_file(tmp_path, "dicomweb:1.2.826.0.1.3680043.8.498.999")
    expected = {
        "unknown study": "knows no instances",
        "too many instances": "has 3 instances, over pacs.max_instances (2)",
        "too many bytes": "the PACS sent more than 2,048 bytes for one study or series",
        "down": "could not be reached",
        "error": "with HTTP 500",
        "hang": "could not be reached",
        "not-dicom": "is not DICOM",
        "not configured": "no PACS is configured",
    }[mode]
    if mode in ("unknown study", "too many instances", "too many bytes"):
        pacs = request.getfixturevalue("pacs")
        monkeypatch.setenv("KB_PACS__URL", pacs.url)
        monkeypatch.setenv("KB_PACS__USERNAME", USER)
        monkeypatch.setenv("KB_PACS__PASSWORD", PASSWORD)
        monkeypatch.setenv("KB_PACS__MAX_INSTANCES", "2" if mode == "too many instances" else "64")
        monkeypatch.setenv("KB_PACS__MAX_STUDY_MB", str(2048 / 1024 / 1024) if mode == "too many bytes" else "256")
        if mode != "unknown study":
            cases = _cases_file(tmp_path, f"dicomweb:{pacs.study_uid}")
        _, err = run("ingest", "cases", str(cases), expect=1)
    elif mode == "down":
        monkeypatch.setenv("KB_PACS__URL", "http://127.0.0.1:9/dicom-web")
        _, err = run("ingest", "cases", str(cases), expect=1)
        _, ping = run("pacs", "ping", expect=1)
        assert "could not be reached" in ping
    elif mode == "not configured":
        _, err = run("ingest", "cases", str(cases), expect=1)
    else:
        with faulty_pacs(mode) as url:
            monkeypatch.setenv("KB_PACS__URL", url)
            _, err = run("ingest", "cases", str(cases), expect=1)
    assert expected in err, err
    assert run.json("versions") == [] and run.json("cases") == []
