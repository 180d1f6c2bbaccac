"""One rule for control characters in text that enters kbservice, whichever database stores it.

PostgreSQL cannot store a NUL in text at all (SQLite can), and no other C0 control character carries
meaning in a clinical note or a guideline: they come from copy-paste, PDF text layers (a form feed between
pages) and hostile input. So every text field is cleaned where it enters (guideline files, case rows,
recommendation requests) before it is de-identified, hashed or stored: form feeds and vertical tabs become
line breaks, every other control character except tab, line feed and carriage return is removed. The same
input then stores the same text on both databases, and nothing reaches a driver that would refuse it.
"""

from __future__ import annotations

import re
from typing import Any

_LINE_BREAKS = re.compile(r"[\x0b\x0c]")
_REMOVED = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def drop_control_characters(text: str) -> str:
    """`text` by the rule above."""
    return _REMOVED.sub("", _LINE_BREAKS.sub("\n", text))


def drop_control_characters_in(value: Any) -> Any:
    """Every string inside `value` (nested dicts, lists, keys included) cleaned by the rule above."""
    if isinstance(value, str):
        return drop_control_characters(value)
    if isinstance(value, dict):
        return {drop_control_characters_in(k): drop_control_characters_in(v) for k, v in value.items()}
    if isinstance(value, list):
        return [drop_control_characters_in(v) for v in value]
    return value
