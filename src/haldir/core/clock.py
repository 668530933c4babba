"""The clock port: domain code asks for the time; only the composition root picks the real one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


def utc(moment: datetime) -> datetime:
    """`moment` as aware UTC, truncated to microseconds; naive values are refused."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: Haldir only handles timezone-aware UTC times")
    return moment.astimezone(UTC)


def isoformat(moment: datetime) -> str:
    """ISO-8601 UTC with a `Z` suffix, e.g. `2026-04-05T19:00:00Z` (microseconds only when present)."""
    text = utc(moment).isoformat()
    return text.replace("+00:00", "Z")
