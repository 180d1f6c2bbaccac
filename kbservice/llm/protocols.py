"""The swappable language-model part."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class ContinuationScore:
    """A continuation's log-likelihood given a prompt (kept free of torch: importing the protocol must not
    import the model stack)."""

    total_logprob: float  # sum over the continuation's tokens
    tokens: int

    @property
    def mean_logprob(self) -> float:
        return self.total_logprob / max(self.tokens, 1)


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
