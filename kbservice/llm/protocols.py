"""The swappable language-model part."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from kbservice.llm.scoring import ContinuationScore


class Generator(Protocol):
    """A local language model: deterministic generation and candidate scoring for one prompt, each with the
    named LoRA adapter (None: the base model)."""

    model_name: str
    model_sha256: str

    def chat_prompt(self, user_message: str, *, system: str | None = None) -> str: ...

    def load_adapter(self, version: str, path: Path) -> None: ...

    def projector_encoder(self, adapter: str | None) -> str | None: ...

    def generate(
        self, prompt: str, *, max_new_tokens: int, adapter: str | None = None, image_vectors: Any = None
    ) -> str: ...

    def stream(self, prompt: str, *, max_new_tokens: int, adapter: str | None = None) -> Iterator[str]: ...

    def score_candidates(
        self,
        prompt: str,
        candidates: Sequence[str],
        *,
        static_head: str | None = None,
        adapter: str | None = None,
        image_vectors: Any = None,
    ) -> list[ContinuationScore]: ...
