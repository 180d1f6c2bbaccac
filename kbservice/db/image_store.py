"""Reads of stored case images: metadata, normalised pixels, and which images are valid at a version."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from kbservice.db.knowledge_versions import valid_at
from kbservice.db.schema import cases, documents, images
from kbservice.errors import UnknownImageError

_METADATA = [c for c in images.c if c.name != "pixels"]


def _pixels(row: Any) -> np.ndarray:
    return np.frombuffer(row.pixels, dtype=np.uint8).reshape(row.pixel_size, row.pixel_size)


class ImageStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, image_id: int) -> dict[str, Any]:
        """One image's stored metadata (DICOM: every header element as stored) and its case's ids."""
        query = (
            select(*_METADATA, cases.c.external_id.label("case_external_id"))
            .join(cases, cases.c.case_id == images.c.case_id)
            .where(images.c.id == image_id)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise UnknownImageError(f"no image with id {image_id}; `kbservice cases --json` lists image_ids")
        return dict(row._mapping)

    def ids_by_case(self, case_ids: Sequence[int]) -> dict[int, list[int]]:
        """Image ids per case id, in the order the case listed them."""
        if not case_ids:
            return {}
        found: dict[int, list[int]] = {}
        query = (
            select(images.c.case_id, images.c.id)
            .where(images.c.case_id.in_(list(case_ids)))
            .order_by(images.c.case_id, images.c.ordinal)
        )
        with self.engine.connect() as conn:
            for case_id, image_id in conn.execute(query):
                found.setdefault(case_id, []).append(image_id)
        return found

    def case_ids(self, image_ids: Sequence[int]) -> dict[int, int]:
        """image id -> case id."""
        if not image_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(images.c.id, images.c.case_id).where(images.c.id.in_(list(image_ids))))
            return {image_id: case_id for image_id, case_id in rows}

    def pixels(self, image_ids: Sequence[int]) -> dict[int, np.ndarray]:
        if not image_ids:
            return {}
        query = select(images.c.id, images.c.pixel_size, images.c.pixels).where(images.c.id.in_(list(image_ids)))
        with self.engine.connect() as conn:
            return {row.id: _pixels(row) for row in conn.execute(query)}

    def valid(self, *, as_of: int, kind: str | None = None) -> list[tuple[int, int]]:
        """(image id, case id) of every image whose case is valid at version `as_of`, by image id; with
        `kind`, of cases of that document kind only ("case": the labelled ones, which are evidence)."""
        query = (
            select(images.c.id, images.c.case_id)
            .join(cases, cases.c.case_id == images.c.case_id)
            .join(documents, documents.c.id == cases.c.document_id)
            .where(valid_at(documents, as_of))
            .order_by(images.c.id)
        )
        if kind is not None:
            query = query.where(documents.c.kind == kind)
        with self.engine.connect() as conn:
            return [(image_id, case_id) for image_id, case_id in conn.execute(query)]

    def all_pixels(self, *, after_id: int = 0, batch: int = 2048) -> Any:
        """Every stored image (retracted cases' too: the index filters by version at query time) as
        (ids, uint8 arrays) batches in id order, for (re-)embedding."""
        last = after_id
        while True:
            query = (
                select(images.c.id, images.c.pixel_size, images.c.pixels)
                .where(images.c.id > last)
                .order_by(images.c.id)
                .limit(batch)
            )
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return
            yield [row.id for row in rows], [_pixels(row) for row in rows]
            last = rows[-1].id
