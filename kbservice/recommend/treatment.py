"""Treatment plan: one cited sentence per treatment source, generated from that source alone.

Writing each sentence from a single fenced source makes its citation true by construction. A generated
sentence that is not grounded in its source (most of its content words absent from it) is replaced by
the source's own most treatment-bearing sentence, and the plan says which sentences were extracted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from kbservice.config import RecommendSettings
from kbservice.llm.protocols import Generator
from kbservice.recommend.citations import (
    first_sentence,
    is_grounded,
    remove_citation_markers,
    strip_unknown_citations,
)
from kbservice.recommend.prompts import TREATMENT_SYSTEM, PromptSource, treatment_message
from kbservice.types import PlanSentence, TreatmentPlan

# Receives progress events of a recommendation as they happen: (kind, data). Used to stream answers.
Listener = Callable[[str, dict[str, Any]], None]

_TREATMENT_CUES = re.compile(
    r"\b(treat\w*|therap\w*|first[- ]line|manage\w*|prescri\w*|dose|mg|give|start|offer|recommend\w*|"
    r"antibiotic\w*|inhal\w*|drug\w*|medication\w*|surgery|surgical)\b",
    re.I,
)


class TreatmentPlanner:
    def __init__(self, *, generator: Generator, settings: RecommendSettings) -> None:
        self.generator = generator
        self.settings = settings

    def plan(
        self,
        diagnosis: str,
        sources: list[PromptSource],
        *,
        allowed_ids: set[str],
        adapter: str | None = None,
        listener: Listener | None = None,
    ) -> TreatmentPlan:
        """A plan for `diagnosis` from `sources` (guideline treatment passages first, then the treatments
        of similar cases). Deterministic: greedy decoding. With `listener`, the generated text is reported as
        it is produced (`plan_text`) and each finished sentence as it is decided (`plan_sentence`)."""
        if not sources:
            return TreatmentPlan.of(diagnosis, [], note="no retrieved source describes a treatment")
        sentences: list[PlanSentence] = []
        for source in sources[: self.settings.treatment_sources]:
            prompt = self.generator.chat_prompt(
                treatment_message(diagnosis, source, passage_chars=self.settings.passage_chars),
                system=TREATMENT_SYSTEM,
            )
            raw = self._generate(prompt, source_id=source.id, adapter=adapter, listener=listener)
            text, _ = strip_unknown_citations(first_sentence(raw), allowed_ids)
            # Any marker the model wrote is replaced by the true one: the sentence came from this source.
            text = remove_citation_markers(text)
            method = "generated"
            if not is_grounded(text, source.text, ignore=diagnosis):
                text, method = extract_treatment_sentence(source.text, diagnosis), "extracted"
            if text and all(text != s.text for s in sentences):
                sentences.append(PlanSentence(text=text, citations=[source.id], method=method))
                if listener is not None:
                    listener("plan_sentence", asdict(sentences[-1]))
        return TreatmentPlan.of(diagnosis, sentences)

    def _generate(self, prompt: str, *, source_id: str, adapter: str | None, listener: Listener | None) -> str:
        max_new_tokens = self.settings.treatment_max_new_tokens
        if listener is None:
            return self.generator.generate(prompt, max_new_tokens=max_new_tokens, adapter=adapter)
        pieces = []
        for piece in self.generator.stream(prompt, max_new_tokens=max_new_tokens, adapter=adapter):
            pieces.append(piece)
            if piece:
                listener("plan_text", {"source": source_id, "text": piece})
        return "".join(pieces)


def extract_treatment_sentence(text: str, diagnosis: str) -> str:
    """The source sentence with the most treatment cues (ties: mentions the diagnosis, then earliest)."""
    candidates = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if len(s.strip()) > 15]
    if not candidates:
        return ""
    words = {w for w in re.findall(r"[a-z]{4,}", diagnosis.lower())}

    def score(item: tuple[int, str]) -> tuple[int, int, int]:
        position, sentence = item
        lowered = sentence.lower()
        return (len(_TREATMENT_CUES.findall(sentence)), sum(w in lowered for w in words), -position)

    best = max(enumerate(candidates), key=score)[1]
    best = best.lstrip("-•* ").strip()
    return best if best.endswith((".", "!", "?")) else best + "."
