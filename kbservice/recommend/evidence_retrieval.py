"""What a request retrieves before the model runs: guideline passages, similar cases by text (each ranker
unfused, so replay can recompute the evidence) and, for a request with images, similar cases by image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from kbservice.classifier.model import case_text
from kbservice.config import ImagingSettings, RecommendSettings
from kbservice.db.case_store import CaseStore
from kbservice.errors import InvalidRequestError
from kbservice.recommend.request import RecommendationRequest
from kbservice.recommend.sources import RetrievalRecord
from kbservice.retrieve import Retriever
from kbservice.types import CASE_KIND, ImagesUsed

if TYPE_CHECKING:
    from kbservice.imaging.similarity import ImageSimilarity

NO_ENCODER_NOTE = (
    "images were not used: no image encoder has been trained yet (the update cycle trains one once "
    "enough labelled image cases exist; see `kbservice encoders list`); this answer is from the text alone"
)


def gather(
    request: RecommendationRequest,
    *,
    version: int,
    exclude_chunk_ids: Sequence[int],
    retriever: Retriever,
    case_store: CaseStore,
    images: ImageSimilarity | None,
    settings: RecommendSettings,
    imaging: ImagingSettings,
) -> RetrievalRecord:
    """The retrieval record of a cleaned request at `version`, never returning `exclude_chunk_ids` (a case
    evaluated as a new patient is retrieved without itself, by text and by image)."""
    query = case_text(request)
    guideline: list[list] = []
    dense_rows: list[list] = []
    lexical_rows: list[list] = []
    if query:  # an image-only request has no text to search with
        guideline_hits = retriever.search(
            query, k=max(settings.guideline_passages, 1), as_of=version, kind="guideline"
        ).hits[: settings.guideline_passages]
        dense, lexical = retriever.rankings(
            query, version=version, depth=settings.evidence_depth, kind=CASE_KIND, exclude_chunk_ids=exclude_chunk_ids
        )
        guideline = [[h.chunk_id, h.score, h.dense_rank, h.lexical_rank] for h in guideline_hits]
        dense_rows = [[cid, score] for cid, score in dense]
        lexical_rows = [[cid, score] for cid, score in lexical]
    encoder_version, image_rows, head = None, [], []
    if request.images and images is not None:
        excluded = [c.case_id for c in case_store.by_chunk_ids(list(exclude_chunk_ids)).values()]
        encoder_version, hits = images.similar(
            [image.pixels for image in request.images],
            k=imaging.similar_images,
            as_of=version,
            exclude_case_ids=excluded,
        )
        image_rows = [[hit.image_id, hit.case_id, hit.score] for hit in hits]
        if encoder_version is not None and imaging.head_evidence:
            head = images.head([image.pixels for image in request.images], version=encoder_version)
    if not query and encoder_version is None:
        raise InvalidRequestError(
            "this request has images only, and no image encoder has been trained yet, so there is nothing "
            "to answer from: add --findings, or let the update cycle train an encoder first"
        )
    return RetrievalRecord(
        guideline=guideline,
        dense=dense_rows,
        lexical=lexical_rows,
        images=image_rows,
        encoder_version=encoder_version,
        image_head=head,
    )


def image_summary(request: RecommendationRequest, retrieval: RetrievalRecord) -> ImagesUsed:
    """The response's account of the request's images: whether they were used, and by which encoder."""
    unused = bool(request.images) and retrieval.encoder_version is None and request.mode == "rag"
    return ImagesUsed(
        given=len(request.images),
        sha256=[image.sha256 for image in request.images],
        used=bool(request.images) and retrieval.encoder_version is not None,
        encoder_version=retrieval.encoder_version,
        note=NO_ENCODER_NOTE if unused else None,
    )
