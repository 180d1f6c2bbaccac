"""Heading-aware chunking bounded by the embedder's token limit, with overlap.

A document is split into sections at Markdown headings; each section's body into sentence-sized units;
units are packed greedily into chunks whose context line (title and heading path) plus text fits the
token budget, and each new chunk repeats the previous chunk's last units up to the overlap budget.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kbservice.types import ChunkDraft, Section

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
# Sentence ends, line breaks (list items, table rows) and paragraph breaks all end a unit.
_UNIT_BREAK = re.compile(r"(?<=[.!?;:])[ \t]+(?=\S)|\n+")
_SPECIAL_TOKENS = 2  # [CLS] and [SEP]

TokenCounter = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int


def split_sections(text: str) -> list[Section]:
    """Sections of `text`: the heading path in force and the span of the body under it."""
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    body_start = 0
    for match in _HEADING.finditer(text):
        if match.start() > body_start:
            sections.append(Section(tuple(title for _, title in path), body_start, match.start()))
        level = len(match.group(1))
        path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, match.group(2).strip())]
        body_start = match.end()
    if body_start < len(text):
        sections.append(Section(tuple(title for _, title in path), body_start, len(text)))
    return [s for s in sections if text[s.start : s.end].strip()]


def _units(text: str, section: Section) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    cursor = section.start
    body = text[section.start : section.end]
    for match in _UNIT_BREAK.finditer(body):
        spans.append((cursor, section.start + match.start()))
        cursor = section.start + match.end()
    spans.append((cursor, section.end))
    trimmed = []
    for start, end in spans:
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            lead = len(piece) - len(piece.lstrip())
            trimmed.append((start + lead, start + lead + len(stripped)))
    return trimmed


def _split_long_unit(text: str, start: int, end: int, tokens: int, budget: int) -> list[tuple[int, int]]:
    """Splits an over-long unit at word boundaries into pieces of about `budget` tokens."""
    words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", text[start:end])]
    pieces = max(2, -(-tokens // budget))
    per_piece = max(1, -(-len(words) // pieces))
    return [(words[i][0], words[min(i + per_piece, len(words)) - 1][1]) for i in range(0, len(words), per_piece)]


def chunk_document(
    *, text: str, title: str, count_tokens: TokenCounter, max_tokens: int, overlap_tokens: int
) -> list[ChunkDraft]:
    """Chunks of `text`, each at most `max_tokens` embedder tokens including its context line."""
    sections = split_sections(text)
    contexts = [" > ".join((title, *section.heading_path)) for section in sections]
    all_spans = [_units(text, section) for section in sections]
    flat = [span for spans in all_spans for span in spans]
    counts = iter(count_tokens([text[a:b] for a, b in flat] + contexts))
    unit_tokens = [[next(counts) for _ in spans] for spans in all_spans]
    context_tokens = [next(counts) for _ in contexts]

    drafts: list[ChunkDraft] = []
    for section, context, spans, tokens, ctx_tokens in zip(
        sections, contexts, all_spans, unit_tokens, context_tokens, strict=True
    ):
        budget = max(8, max_tokens - ctx_tokens - _SPECIAL_TOKENS - 1)
        units: list[_Unit] = []
        for (start, end), n in zip(spans, tokens, strict=True):
            if n <= budget:
                units.append(_Unit(start, end, n))
                continue
            for piece_start, piece_end in _split_long_unit(text, start, end, n, budget):
                piece_tokens = count_tokens([text[piece_start:piece_end]])[0]
                # Word windows of dense text (e.g. long numbers) can still overflow; halve until they fit.
                if piece_tokens > budget:
                    for a, b in _split_long_unit(text, piece_start, piece_end, piece_tokens, budget // 2):
                        units.append(_Unit(a, b, count_tokens([text[a:b]])[0]))
                else:
                    units.append(_Unit(piece_start, piece_end, piece_tokens))
        for group in _pack(units, budget=budget, overlap=min(overlap_tokens, budget // 2)):
            start, end = group[0].start, group[-1].end
            drafts.append(
                ChunkDraft(
                    ordinal=len(drafts),
                    heading_path=section.heading_path,
                    char_start=start,
                    char_end=end,
                    text=text[start:end],
                    context=context,
                    # Units joined by whitespace tokenise as the sum of their parts (WordPiece pre-splits).
                    token_count=sum(u.tokens for u in group) + ctx_tokens + _SPECIAL_TOKENS,
                )
            )
    return drafts


def _pack(units: list[_Unit], *, budget: int, overlap: int) -> list[list[_Unit]]:
    groups: list[list[_Unit]] = []
    current: list[_Unit] = []
    used = 0
    for unit in units:
        if current and used + unit.tokens > budget:
            groups.append(current)
            carried: list[_Unit] = []
            carried_tokens = 0
            for previous in reversed(current):
                if (
                    carried_tokens + previous.tokens > overlap
                    or carried_tokens + previous.tokens + unit.tokens > budget
                ):
                    break
                carried.insert(0, previous)
                carried_tokens += previous.tokens
            current, used = carried, carried_tokens
        current.append(unit)
        used += unit.tokens
    if current:
        groups.append(current)
    return groups
