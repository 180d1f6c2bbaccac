"""Cursor pagination: an opaque cursor names the last item seen, so pages stay stable while rows are added."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from kbservice.api.problems import Problem

T = TypeVar("T")
MAX_LIMIT = 500


def encode_cursor(after: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Any:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
    except (ValueError, KeyError, TypeError) as exc:
        raise Problem(422, "invalid-cursor", "Invalid cursor", "the cursor is not one this service issued") from exc


def paginate(
    items: Sequence[T], *, key: Callable[[T], Any], cursor: str | None, limit: int
) -> tuple[list[T], str | None]:
    """The items after the cursor's key (items are in ascending key order), at most `limit`, and the cursor
    of the next page (None on the last page)."""
    after = decode_cursor(cursor)
    start = 0
    if after is not None:
        start = next((i for i, item in enumerate(items) if key(item) > after), len(items))
    page = list(items[start : start + limit])
    more = start + limit < len(items)
    return page, encode_cursor(key(page[-1])) if more and page else None
