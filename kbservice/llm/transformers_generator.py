"""Generator on a local Hugging Face causal LM (transformers), greedy so that replay reproduces output.

LoRA adapters (PEFT) are loaded next to the base weights by version name; every call names the adapter
it runs with (None: the bare base model) and activates it inside the model lock, so concurrent requests
on different adapters never see each other's: a request keeps the adapter it started with even when a
new champion is promoted meanwhile.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kbservice.devices import model_dtype_name, resolve_device
from kbservice.errors import UnknownAdapterError
from kbservice.llm.model_files import BaseModel
from kbservice.llm.scoring import (
    ContinuationScore,
    PrefixCache,
    encode_prefix,
    score_continuations,
    score_continuations_naive,
)
from kbservice.llm.soft_tokens import IMAGE_SLOT, ids_with_slots, strip_slots

if TYPE_CHECKING:
    from kbservice.llm.projector import SoftTokenProjector


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
        device = resolve_device(device)
        dtype = getattr(torch, model_dtype_name(device))
        self.model = AutoModelForCausalLM.from_pretrained(str(base.path), dtype=dtype).to(device).eval()
        self._lock = threading.Lock()  # one forward at a time: the model is shared by request threads
        # The static prompt head's cache per adapter (LoRA on the attention changes the head's keys/values).
        self._heads: dict[str | None, tuple[str, PrefixCache]] = {}
        self._adapters: set[str] = set()
        self._active: str | None = None
        self._projectors: dict[str, tuple[SoftTokenProjector, str]] = {}  # adapter -> (projector, encoder version)

    # ----- adapters -----------------------------------------------------------------------------------

    def load_adapter(self, version: str, path: Path) -> None:
        """Loads a LoRA adapter (idempotent); it runs only when a call names it."""
        if version in self._adapters:
            return
        from peft import PeftModel

        with self._lock:
            if version in self._adapters:
                return
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(path), adapter_name=version)
            else:  # the first adapter wraps the base model; its weights stay shared, untouched
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=version).eval()
            self._adapters.add(version)
            self._activate(self._active)  # loading may switch the active adapter; restore it
            from kbservice.llm.projector import SoftTokenProjector

            found = SoftTokenProjector.load(path)
            if found is not None:
                self._projectors[version] = found

    def projector_encoder(self, adapter: str | None) -> str | None:
        """The image encoder version whose embeddings `adapter`'s projector reads (None: it has none)."""
        found = self._projectors.get(adapter) if adapter else None
        return found[1] if found else None

    def _inputs(self, prompt: str, adapter: str | None, image_vectors: Any):  # type: ignore[no-untyped-def]
        """(token ids, soft-token positions, their embeddings or None) for a prompt that may hold image slots:
        with `image_vectors` and an adapter that has a projector they become soft tokens, else plain text."""
        import torch

        found = self._projectors.get(adapter) if adapter else None
        if found is None or image_vectors is None or IMAGE_SLOT not in prompt:
            ids, _ = ids_with_slots(self.tokenizer, strip_slots(prompt), tokens=0)
            return ids, [], None
        projector = found[0]
        ids, positions = ids_with_slots(self.tokenizer, prompt, tokens=projector.tokens)
        with torch.no_grad():
            mean = torch.as_tensor(np.asarray(image_vectors, dtype=np.float32)).mean(dim=0, keepdim=True)
            tokens = projector(mean)[0]
        slots = len(positions) // len(tokens)
        return ids, positions, tokens.repeat(slots, 1)

    def _activate(self, adapter: str | None) -> None:
        """Makes `adapter` (None: the base model) the one that runs. Call with the lock held."""
        if adapter is not None and adapter not in self._adapters:
            raise UnknownAdapterError(f"adapter {adapter} is not loaded")
        if self._adapters:
            if adapter is None:
                self.model.base_model.disable_adapter_layers()
            else:
                self.model.base_model.enable_adapter_layers()
                self.model.set_adapter(adapter)
        self._active = adapter

    # ----- text -----------------------------------------------------------------------------------------

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

    def generate(
        self, prompt: str, *, max_new_tokens: int, adapter: str | None = None, image_vectors: Any = None
    ) -> str:
        """Greedy continuation of `prompt`; its image slots become soft tokens from `image_vectors` when the
        adapter has a projector."""
        import torch

        with self._lock, torch.no_grad():
            self._activate(adapter)
            ids, positions, soft = self._inputs(prompt, adapter, image_vectors)
            input_ids = torch.tensor([ids], device=self.model.device)
            extra = {}
            if soft is not None:
                embeds = self.model.get_input_embeddings()(input_ids)
                embeds[0, positions] = soft.to(embeds.dtype)
                extra = {"inputs_embeds": embeds}
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self._pad_id(),
                **extra,
            )
        return self.tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True)

    def stream(self, prompt: str, *, max_new_tokens: int, adapter: str | None = None) -> Iterator[str]:
        """The same text as `generate`, yielded in pieces as it is produced."""
        import torch
        from transformers import TextIteratorStreamer

        inputs = self._encode(prompt)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

        def run() -> None:
            with self._lock, torch.no_grad():
                self._activate(adapter)
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
        self,
        prompt: str,
        candidates: Sequence[str],
        *,
        static_head: str | None = None,
        adapter: str | None = None,
        image_vectors: Any = None,
    ) -> list[ContinuationScore]:
        """log P(candidate | prompt) for each candidate, in one pass over the prompt and one over all the
        candidates. `static_head`, a start that many prompts share, is run once and its cache kept. The
        prompt's image slots become soft tokens from `image_vectors` when the adapter has a projector."""
        continuations = [self.tokenizer(" " + c.strip(), add_special_tokens=False).input_ids for c in candidates]
        with self._lock:
            self._activate(adapter)
            prompt_ids, positions, soft = self._inputs(prompt, adapter, image_vectors)
            head = self._head_cache(static_head, adapter) if static_head and prompt.startswith(static_head) else None
            return score_continuations(
                self.model,
                prompt_ids=prompt_ids,
                continuations=continuations,
                head=head,
                soft=(positions, soft) if soft is not None else None,
            )

    def _head_cache(self, text: str, adapter: str | None) -> PrefixCache:
        cached = self._heads.get(adapter)
        if cached is None or cached[0] != text:
            cached = (text, encode_prefix(self.model, self._encode(text).input_ids[0].tolist()))
            self._heads[adapter] = cached
        return cached[1]

    def score_candidates_naive(self, prompt: str, candidates: Sequence[str]) -> list[ContinuationScore]:
        """The same scores with one full forward per candidate (benchmark baseline only; base model)."""
        prompt_ids = self._encode(prompt).input_ids[0].tolist()
        continuations = [self.tokenizer(" " + c.strip(), add_special_tokens=False).input_ids for c in candidates]
        with self._lock:
            self._activate(None)
            return score_continuations_naive(self.model, prompt_ids=prompt_ids, continuations=continuations)

    def _pad_id(self) -> int:
        return int(
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        )
