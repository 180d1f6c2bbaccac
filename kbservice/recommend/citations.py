"""Citation checks: generated text may cite only the sources that were actually retrieved."""

from __future__ import annotations

import logging
import re
from collections.abc import Collection

log = logging.getLogger(__name__)

# Bracketed citation-like markers: [S3], [S1, S2], [3], [C4], [source 2] ...
_MARKER = re.compile(r"\[\s*(?:source\s*)?[A-Za-z]{0,2}\d+(?:\s*[,;]\s*(?:source\s*)?[A-Za-z]{0,2}\d+)*\s*\]", re.I)
_ID = re.compile(r"(?:source\s*)?([A-Za-z]{0,2})(\d+)", re.I)
_CONTENT_WORD = re.compile(r"[a-z][a-z0-9-]{2,}")
# Words that say nothing about whether a sentence came from its source.
_FUNCTION_WORDS = (
    "the and for with this that from into are was were has have should may can will not any use used using "
    "patient patients treatment treat treated therapy recommend recommended source sentence one also which "
    "their them they its been being when where than then there these those such more most other only"
)
_COMMON = frozenset(_FUNCTION_WORDS.split())


def strip_unknown_citations(text: str, allowed: Collection[str]) -> tuple[str, list[str]]:
    """`text` without any citation marker naming an id outside `allowed`, and the markers removed.

    Removal is logged: it means the model invented a source or copied one from retrieved text."""
    removed: list[str] = []

    def keep_or_drop(match: re.Match[str]) -> str:
        ids = [f"{prefix.upper() or 'S'}{number}" for prefix, number in _ID.findall(match.group(0))]
        if ids and all(i in allowed for i in ids):
            return match.group(0)
        removed.append(match.group(0))
        return ""

    cleaned = _MARKER.sub(keep_or_drop, text)
    if removed:
        log.warning("stripped %d citation(s) naming sources that were not retrieved: %s", len(removed), removed)
    return re.sub(r"\s{2,}", " ", cleaned).strip(), removed


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    return (match.group(1) if match else text).strip()


def is_grounded(sentence: str, source_text: str, *, ignore: str = "", min_share: float = 0.7) -> bool:
    """True when most content words of `sentence` occur in `source_text` (words of `ignore`, such as the
    diagnosis named in the question, do not count either way)."""
    ignored = set(_CONTENT_WORD.findall(ignore.lower())) | _COMMON
    words = [w for w in _CONTENT_WORD.findall(sentence.lower()) if w not in ignored]
    if len(words) < 2:
        return False
    source_words = set(_CONTENT_WORD.findall(source_text.lower()))
    return sum(w in source_words for w in words) / len(words) >= min_share


def remove_citation_markers(text: str) -> str:
    """`text` without any citation markers (the caller attaches the true citation itself)."""
    return re.sub(r"\s{2,}", " ", _MARKER.sub("", text)).strip()
