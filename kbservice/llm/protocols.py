"""The swappable language-model part."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from kbservice.llm.scoring import ContinuationScore


class Generator(Protocol):
    """A local language model: deterministic generation and candidate scoring for one prompt."""

    model_name: str
    model_sha256: str

    def chat_prompt(self, user_message: str, *, system: str | None = None) -> str: ...

    def generate(self, prompt: str, *, max_new_tokens: int) -> str: ...

    def stream(self, prompt: str, *, max_new_tokens: int) -> Iterator[str]: ...

    def score_candidates(
        self, prompt: str, candidates: Sequence[str], *, static_head: str | None = None
    ) -> list[ContinuationScore]: ...
