"""Generator on a local Hugging Face causal LM (transformers), greedy so that replay reproduces output."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence

from kbservice.llm.model_files import BaseModel
from kbservice.llm.scoring import (
    ContinuationScore,
    PrefixCache,
    encode_prefix,
    score_continuations,
    score_continuations_naive,
)


class TransformersGenerator:
    """Chat-formatted, greedy generation and batched candidate scoring with one loaded model."""

    def __init__(self, base: BaseModel, *, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.model_name = base.name
        self.model_sha256 = base.sha256
        self.tokenizer = AutoTokenizer.from_pretrained(str(base.path))
        self.model = AutoModelForCausalLM.from_pretrained(str(base.path), dtype=torch.float32).to(device).eval()
        self._lock = threading.Lock()  # one forward at a time: the model is shared by request threads
        self._head: tuple[str, PrefixCache] | None = None  # the static prompt head's cache, reused

    def chat_prompt(self, user_message: str, *, system: str | None = None) -> str:
        """`user_message` in the model's chat template, ending where the assistant's answer begins."""
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user_message}
        ]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def _encode(self, prompt: str):  # type: ignore[no-untyped-def]
        return self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.model.device)

    def generate(self, prompt: str, *, max_new_tokens: int) -> str:
        import torch

        inputs = self._encode(prompt)
        with self._lock, torch.no_grad():
            output = self.model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self._pad_id()
            )
        return self.tokenizer.decode(output[0, inputs.input_ids.shape[1] :], skip_special_tokens=True)

    def stream(self, prompt: str, *, max_new_tokens: int) -> Iterator[str]:
        """The same text as `generate`, yielded in pieces as it is produced."""
        import torch
        from transformers import TextIteratorStreamer

        inputs = self._encode(prompt)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

        def run() -> None:
            with self._lock, torch.no_grad():
                self.model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=self._pad_id(),
                    streamer=streamer,
                )

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        yield from streamer
        worker.join()

    def score_candidates(
        self, prompt: str, candidates: Sequence[str], *, static_head: str | None = None
    ) -> list[ContinuationScore]:
        """log P(candidate | prompt) for each candidate, in one pass over the prompt and one over all the
        candidates. `static_head`, a start that many prompts share, is run once and its cache kept."""
        prompt_ids = self._encode(prompt).input_ids[0].tolist()
        continuations = [self.tokenizer(" " + c.strip(), add_special_tokens=False).input_ids for c in candidates]
        with self._lock:
            head = self._head_cache(static_head) if static_head and prompt.startswith(static_head) else None
            return score_continuations(self.model, prompt_ids=prompt_ids, continuations=continuations, head=head)

    def _head_cache(self, text: str) -> PrefixCache:
        if self._head is None or self._head[0] != text:
            self._head = (text, encode_prefix(self.model, self._encode(text).input_ids[0].tolist()))
        return self._head[1]

    def score_candidates_naive(self, prompt: str, candidates: Sequence[str]) -> list[ContinuationScore]:
        """The same scores with one full forward per candidate (benchmark baseline only)."""
        prompt_ids = self._encode(prompt).input_ids[0].tolist()
        continuations = [self.tokenizer(" " + c.strip(), add_special_tokens=False).input_ids for c in candidates]
        with self._lock:
            return score_continuations_naive(self.model, prompt_ids=prompt_ids, continuations=continuations)

    def _pad_id(self) -> int:
        return int(
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        )
