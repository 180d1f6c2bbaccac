"""Reads of stored cases and of the diagnosis labels the knowledge base knows, at a knowledge version."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, select

from kbservice.db.knowledge_versions import valid_at
from kbservice.db.schema import cases, chunks, documents
from kbservice.types import CaseRecord


def _select_cases():  # type: ignore[no-untyped-def]
    return (
        select(cases, chunks.c.id.label("chunk_id"), documents.c.content_hash)
        .join(documents, documents.c.id == cases.c.document_id)
        .join(chunks, chunks.c.document_id == cases.c.document_id)
        .order_by(cases.c.case_id)
    )


class CaseStore:
    """Cases are documents of kind "case" with one chunk; this reads their structured fields."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._labels: dict[int, list[str]] = {}  # a committed version never changes, so neither do its labels

    def cases(self, *, as_of: int) -> list[CaseRecord]:
        """Every case valid at version `as_of`, in the order they were stored."""
        with self.engine.connect() as conn:
            return [_case(row) for row in conn.execute(_select_cases().where(valid_at(documents, as_of)))]

    def by_chunk_ids(self, chunk_ids: Sequence[int]) -> dict[int, CaseRecord]:
        return self._keyed(chunks.c.id, chunk_ids, key="chunk_id")

    def by_case_ids(self, case_ids: Sequence[int]) -> dict[int, CaseRecord]:
        return self._keyed(cases.c.case_id, case_ids, key="case_id")

    def _keyed(self, column, ids: Sequence[int], *, key: str) -> dict[int, CaseRecord]:  # type: ignore[no-untyped-def]
        if not ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(_select_cases().where(column.in_(list(ids))))
            return {getattr(row, key): _case(row) for row in rows}

    def labels(self, *, as_of: int) -> list[str]:
        """Candidate diagnoses: every case label and every condition a guideline names, valid at `as_of`.

        Guidelines name their conditions in front matter (`condition:` or `conditions:`)."""
        if as_of not in self._labels:
            self._labels[as_of] = self._read_labels(as_of)
        return list(self._labels[as_of])

    def _read_labels(self, as_of: int) -> list[str]:
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            for (labels,) in conn.execute(
                select(cases.c.diagnoses)
                .join(documents, documents.c.id == cases.c.document_id)
                .where(valid_at(documents, as_of))
            ):
                for label in labels:
                    found.setdefault(label.casefold(), label)
            for (meta,) in conn.execute(
                select(documents.c.meta).where(valid_at(documents, as_of), documents.c.kind == "guideline")
            ):
                for label in guideline_conditions(meta or {}):
                    found.setdefault(label.casefold(), label)
        return sorted(found.values(), key=str.casefold)


def guideline_conditions(meta: dict) -> list[str]:
    """The conditions a guideline's metadata names: a string (comma-separated allowed) or a list."""
    named = meta.get("conditions", meta.get("condition"))
    if isinstance(named, str):
        named = named.split(",")
    if not isinstance(named, list):
        return []
    return [str(label).strip() for label in named if str(label).strip()]


def _case(row) -> CaseRecord:  # type: ignore[no-untyped-def]
    return CaseRecord(
        case_id=row.case_id,
        id=row.external_id,
        findings=row.findings,
        history=row.history,
        age=row.age,
        sex=row.sex,
        diagnosis=list(row.diagnoses),
        treatment=row.treatment,
        images=list(row.images),
        labeled_by=row.labeled_by,
        version_added=row.version_added,
        document_id=row.document_id,
        chunk_id=row.chunk_id,
        content_hash=row.content_hash,
    )
