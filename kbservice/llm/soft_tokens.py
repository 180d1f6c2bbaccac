"""The image slot in a prompt and how it becomes token positions for soft tokens.

A prompt that carries images holds IMAGE_SLOT where the image goes. Tokenizing splits the text at the
slot and puts `tokens` filler ids there, whose embeddings are replaced by the projector's output; the
same function serves training and inference, so positions always agree. Without a projector (base model,
or an adapter trained without images) the slot is written as plain text instead.
"""

from __future__ import annotations

# NUL never survives request cleaning, so user text cannot forge a slot.
IMAGE_SLOT = "\x00image\x00"
SLOT_AS_TEXT = "[image attached]"


def strip_slots(text: str) -> str:
    return text.replace(IMAGE_SLOT, SLOT_AS_TEXT)


def ids_with_slots(tokenizer, text: str, *, tokens: int) -> tuple[list[int], list[int]]:  # type: ignore[no-untyped-def]
    """(token ids, positions of the soft tokens): each slot in `text` becomes `tokens` filler ids."""
    filler = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    ids: list[int] = []
    positions: list[int] = []
    for i, piece in enumerate(text.split(IMAGE_SLOT)):
        if i:
            positions += range(len(ids), len(ids) + tokens)
            ids += [filler] * tokens
        if piece:
            ids += tokenizer(piece, add_special_tokens=False).input_ids
    return ids, positions
