"""Opaque cursors for keyset pagination, newest first."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Generic, TypeVar

from haldir.errors import InvalidRequest

T = TypeVar("T")

MAX_PAGE = 200


@dataclass(frozen=True)
class Position:
    """Where a page ends: the sort key (a time in microseconds, or a leaf index) and id of its last item."""

    sort_key: int
    id: str


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next: Position | None


def encode_cursor(position: Position | None) -> str | None:
    if position is None:
        return None
    raw = json.dumps([position.sort_key, position.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Position | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        sort_key, ident = json.loads(raw)
        if type(sort_key) is not int or not isinstance(ident, str):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("malformed cursor: pass back the next_cursor of a previous page") from None
    return Position(sort_key, ident)
