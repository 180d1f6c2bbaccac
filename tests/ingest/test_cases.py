"""Cases: validated row by row, de-identified before storage, versioned, embedded and retrievable."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from kbservice.errors import IngestError
from kbservice.services import Services
from tests.conftest import write
from tests.helpers import cases_jsonl, ingest_case_file, store_fingerprint
from tests.imaging.images import write_png

IDENTIFIED = {
    "id": "c-1",
    "findings": "Maria Gonzalez (MRN 4471923, phone 617-555-0199, maria.g@example.org) seen on 03/14/2024 with "
    "wheeze and cough; takes salbutamol 100 mcg.",
    "history": "Lives at 12 Elm Street, Springfield. Visit portal https://portal.example.org from 10.1.2.3.",
    "age": 93,
    "sex": "female",
    "diagnosis": ["Asthma", "Allergic rhinitis"],
    "treatment": "Budesonide-formoterol 200/6 two puffs as needed; call Dr. Peter Novak on 617-555-0142.",
    "images": ["xr/chest-1.png"],
    "labeled_by": "Dr. Reviewer",
}
IDENTIFIERS = (
    "Maria",
    "Gonzalez",
    "4471923",
    "617-555-0199",
    "maria.g@example.org",
    "03/14/2024",
    "12 Elm Street",
    "portal.example.org",
    "10.1.2.3",
    "Novak",
    "617-555-0142",
)


def test_cases_are_deidentified_versioned_and_similar_case_searchable(services: Services, tmp_path: Path) -> None:
    second = {
        "id": "c-2",
        "findings": "Fever, productive cough and crackles at the right base.",
        "diagnosis": "Pneumonia",
    }
    write_png(tmp_path / "xr" / "chest-1.png", np.full((8, 8), 90, dtype=np.uint8))
    report = ingest_case_file(services, cases_jsonl(tmp_path, "cases.jsonl", IDENTIFIED, second), labeled_by="Curator")
    assert report.version == 1 and report.added == ["case:c-1", "case:c-2"]
    stored = services.case_store.cases(as_of=1)
    first = stored[0].to_json()
    assert first["id"] == "c-1" and first["version_added"] == 1 and first["case_id"] == stored[0].case_id
    assert first["age"] == "90+" and first["sex"] == "F"
    assert first["diagnosis"] == ["Asthma", "Allergic rhinitis"]
    # The submitter's file name is not kept (it can name the patient): the stored file's content address is.
    assert len(first["images"]) == 1 and re.fullmatch(r"[0-9a-f]{64}\.png", first["images"][0])
    assert first["labeled_by"] == "Dr. Reviewer" and stored[1].labeled_by == "Curator"
    assert "salbutamol 100 mcg" in first["findings"] and "Budesonide-formoterol 200/6" in first["treatment"]
    # Nothing identifying anywhere in SQL: the case row, the document, the chunk the index embeds.
    with services.engine.connect() as conn:
        dumped = " ".join(
            str(row)
            for table in ("cases", "documents", "chunks")
            for row in conn.execute(text(f"SELECT * FROM {table}"))  # fixed table names, not input
        )
    for identifier in IDENTIFIERS:
        assert identifier not in dumped, identifier
    assert "[NAME]" in first["findings"] and "[PHONE]" in first["findings"]
    # Retrievable as a similar case, and only where cases are asked for.
    hits = services.retriever.search("cough fever crackles", kind="case").hits
    assert hits[0].title == "Case c-2" and hits[0].kind == "case"
    assert services.retriever.search("cough fever crackles", kind="guideline").hits == []
    assert services.case_store.labels(as_of=1) == ["Allergic rhinitis", "Asthma", "Pneumonia"]
    assert services.store.documents(as_of=1) == []  # `documents` lists guidelines; cases have their own listing


def test_csv_cases_with_several_labels(services: Services, tmp_path: Path) -> None:
    for name, value in (("a", 10), ("b", 200)):
        write_png(tmp_path / "img" / f"{name}.png", np.full((8, 8), value, dtype=np.uint8))
    path = write(
        tmp_path / "cases.csv",
        "id,findings,diagnosis,age,sex,images\n"
        'a1,"Polyuria, thirst",Type 2 diabetes; Hypertension,55,M,img/a.png|img/b.png\n'
        "a2,Dysuria and frequency,Urinary tract infection,,F,\n",
    )
    ingest_case_file(services, path)
    first, second = services.case_store.cases(as_of=1)
    assert first.diagnosis == ["Type 2 diabetes", "Hypertension"] and len(first.images) == 2
    assert services.image_store.ids_by_case([first.case_id, second.case_id]) == {first.case_id: [1, 2]}
    assert first.age == "55" and second.age is None and second.images == []


def test_a_case_with_images_and_no_diagnosis_is_stored_unlabelled_and_never_retrieved_as_evidence(
    services: Services, tmp_path: Path
) -> None:
    write_png(tmp_path / "img" / "u.png", np.full((8, 8), 40, dtype=np.uint8))
    write_png(tmp_path / "img" / "v.png", np.full((8, 8), 80, dtype=np.uint8))
    ingest_case_file(
        services,
        cases_jsonl(
            tmp_path,
            "cases.jsonl",
            {"id": "labelled", "findings": "Productive cough and fever", "diagnosis": "Pneumonia"},
            {"id": "awaiting", "findings": "Productive cough and fever", "images": ["img/u.png"]},
        ),
    )
    ingest_case_file(services, write(tmp_path / "more.csv", "id,findings,diagnosis,images\nfilm,,,img/v.png\n"))
    by_id = {c.id: c for c in services.case_store.cases(as_of=2)}
    assert by_id["awaiting"].diagnosis == [] and by_id["film"].diagnosis == []
    assert services.case_store.labels(as_of=2) == ["Pneumonia"]
    # Searched as similar cases, only the labelled twin comes back; a plain search still finds both.
    cases = services.retriever.search("Productive cough and fever", k=5, as_of=2, kind="case").hits
    assert [h.title for h in cases] == ["Case labelled"]
    everything = services.retriever.search("Productive cough and fever", k=5, as_of=2).hits
    assert {h.title for h in everything} >= {"Case labelled", "Case awaiting"}


BAD_FILES = {
    "missing label column": ("bad.csv", "id,findings\n1,cough\n", "missing column(s): diagnosis"),
    "whitespace label": (
        "bad.jsonl",
        '{"id": "1", "findings": "cough", "diagnosis": "   "}\n',
        ":1: field 'diagnosis'",
    ),
    "missing label": ("bad.jsonl", '{"id": "1", "findings": "cough"}\n', ":1: field 'diagnosis' is missing"),
    "empty label cell": ("bad.csv", "id,findings,diagnosis\n1,cough,\n", ":2: field 'diagnosis' is missing"),
    "duplicate ids": (
        "bad.jsonl",
        '{"id": "7", "findings": "a", "diagnosis": "X"}\n{"id": "7", "findings": "b", "diagnosis": "Y"}\n',
        ":2: field 'id': duplicate case id '7' (first on line 1)",
    ),
    "empty findings": ("bad.jsonl", '{"id": "1", "findings": " ", "diagnosis": "X"}\n', ":1: field 'findings'"),
    "100 KB findings": (
        "bad.jsonl",
        '{"id": "1", "findings": "' + "a" * 100_000 + '", "diagnosis": "X"}\n',
        "field 'findings' is 100,000 characters; the limit is 20,000",
    ),
    "non-UTF-8": ("bad.jsonl", b'{"id": "1", "findings": "caf\xe9", "diagnosis": "X"}\n', "not valid UTF-8"),
    "bad age": ("bad.jsonl", '{"id": "1", "findings": "a", "diagnosis": "X", "age": "old"}\n', ":1: field 'age'"),
    "unknown field": ("bad.jsonl", '{"id": "1", "findings": "a", "diagnosis": "X", "ssn": "1"}\n', "'ssn'"),
    "not JSON": ("bad.jsonl", "{oops\n", ":1: not valid JSON"),
    "ragged CSV": ("bad.csv", "id,findings,diagnosis\n1,a,X,extra\n", ":2: row has a different number of cells"),
    "empty file": ("bad.jsonl", "", "no cases found"),
    "unknown type": ("bad.txt", "id,findings\n", "unsupported case file type '.txt'"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_file_names_line_and_field_and_changes_nothing(services: Services, tmp_path: Path, name: str) -> None:
    ingest_case_file(services, cases_jsonl(tmp_path, "good.jsonl", {"id": "g", "findings": "ok", "diagnosis": "X"}))
    before = store_fingerprint(services)
    filename, content, message = BAD_FILES[name]
    with pytest.raises(IngestError, match=None) as caught:
        ingest_case_file(services, write(tmp_path / filename, content))
    assert message in str(caught.value)
    assert store_fingerprint(services) == before


def test_a_stored_case_id_cannot_be_ingested_again(services: Services, tmp_path: Path) -> None:
    ingest_case_file(services, cases_jsonl(tmp_path, "a.jsonl", {"id": "1", "findings": "a", "diagnosis": "X"}))
    before = store_fingerprint(services)
    with pytest.raises(IngestError, match="case:1: already stored"):
        ingest_case_file(services, cases_jsonl(tmp_path, "b.jsonl", {"id": "1", "findings": "b", "diagnosis": "Y"}))
    assert store_fingerprint(services) == before
