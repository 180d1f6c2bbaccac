"""MedQuAD answers as guideline documents: the corpus of `bench ingest` and `eval retrieval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kbservice.errors import KBError

MEDQUAD_SOURCE = "medquad"
MEDQUAD_FILE = "medquad.jsonl"


def medquad_documents(corpus: Path, *, limit: int | None = None) -> list[dict[str, Any]]:
    """MedQuAD answers as kbservice JSONL records: one document per answer, titled by its focus.

    The question is not part of the document, so retrieving an answer for its question is a real test.
    """
    if not corpus.exists():
        raise KBError(f"{corpus} not found (the MedQuAD file from ../shared/data/medquad)")
    records = []
    with corpus.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle):
            if limit is not None and len(records) >= limit:
                break
            row = json.loads(line)
            records.append(
                {
                    "id": f"a{line_number}",
                    "title": row.get("focus") or row["qtype"],
                    "text": row["answer"],
                    "url": row.get("url"),
                    "publisher": row.get("source"),
                    "qtype": row.get("qtype"),
                }
            )
    return records


def write_jsonl(records: list[dict[str, Any]], folder: Path) -> Path:
    path = folder / MEDQUAD_FILE
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
