"""A stored image's metadata as JSON: what `images show --json` prints and `GET /v1/images/{id}` returns."""

from __future__ import annotations

from typing import Any


def image_metadata(row: dict[str, Any]) -> dict[str, Any]:
    """The de-identified metadata of an image row (ImageStore.get): ids, format, shape, checksum, how it
    was de-identified and, for DICOM, every header element as stored. `stored_path` is relative to the
    data directory's images folder."""
    return {
        "id": row["id"],
        "case_id": row["case_id"],
        "case_external_id": row["case_external_id"],
        "ordinal": row["ordinal"],
        "format": row["format"],
        "modality": row["modality"],
        "source_shape": row["source_shape"],
        "pixel_size": row["pixel_size"],
        "sha256": row["sha256"],
        "stored_path": row["stored_path"],
        "deidentified": row["deidentified"],
        "deid_method": row["deid_method"],
        "created_at": row["created_at"].isoformat() if row["created_at"] else None,
        "header": row["header"],
    }
