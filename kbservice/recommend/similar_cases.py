"""`images similar`: prior cases whose images are nearest to the given ones, at a knowledge version."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kbservice.services import Services
    from kbservice.types import RequestImage

NO_ENCODER = "no image encoder has been trained yet, so images cannot be compared (see `kbservice encoders list`)"


def similar_cases(
    services: Services, images: tuple[RequestImage, ...], *, k: int, as_of: int | None = None
) -> dict[str, Any]:
    """The k most similar prior cases (one row each, best image first) valid at `as_of` (default: newest)."""
    version = services.retriever.resolve_version(as_of)
    if version is None:
        return {
            "encoder_version": None,
            "knowledge_version": None,
            "similar": [],
            "note": "the knowledge base is empty",
        }
    encoder_version, hits = services.image_similarity.similar([image.pixels for image in images], k=k, as_of=version)
    cases = services.case_store.by_case_ids([hit.case_id for hit in hits])
    return {
        "encoder_version": encoder_version,
        "knowledge_version": version,
        "note": None if encoder_version else NO_ENCODER,
        "similar": [
            {
                "image_id": hit.image_id,
                "case_id": hit.case_id,
                "case": cases[hit.case_id].id,
                "diagnosis": cases[hit.case_id].diagnosis,
                "score": round(hit.score, 6),
            }
            for hit in hits
            if hit.case_id in cases
        ],
    }
