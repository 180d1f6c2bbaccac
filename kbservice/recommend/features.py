"""What the pipeline knows about one request before and after the model runs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kbservice.recommend.sources import RetrievalRecord, RetrievedSource


@dataclass(frozen=True)
class Evidence:
    """What a request brings before the model runs: candidates, similar-case evidence and the prompt."""

    version: int
    candidates: list[str]
    case_matrix: np.ndarray
    sources: list[RetrievedSource]
    prompt: str  # the chat prompt, ending with DIAGNOSIS_ANSWER_PREFIX: the model continues with a diagnosis
    retrieval: RetrievalRecord
    retrieve_s: float
    images: tuple[np.ndarray, ...] = ()  # the request's normalised images (soft tokens, when the adapter can)
    # For a request with images and text: the same prompt without the images (no image slot, no similar-image
    # cases), for the model's text-alone scores (evidence.LLM_TEXT_FEATURES); None otherwise.
    text_prompt: str | None = None


@dataclass(frozen=True)
class Features:
    """Everything the fusion needs for one request: candidates x feature columns, plus what produced it."""

    version: int
    candidates: list[str]
    names: list[str]
    matrix: np.ndarray
    sources: list[RetrievedSource]
    prompt: str
    timings: dict[str, float]
    retrieval: RetrievalRecord
