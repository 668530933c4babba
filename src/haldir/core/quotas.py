"""Tenant quotas: the operator's limits on a tenant's actions per UTC month, agents with sessions in
force, and API requests per second; and when a refused request may try again."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from haldir.errors import InvalidRequest

MAX_ACTIONS_PER_MONTH = 10**12
MAX_AGENTS = 10**6
MAX_REQUESTS_PER_SECOND = 10**6
LIMITS_TOOL = "limits"  # the ledger's `tool` for changes to a tenant's quota and anomaly settings
LEASES_PER_SECOND = 10  # a process leases about a tenth of the per-second limit at a time


@dataclass(frozen=True)
class Quota:
    """A tenant's limits; None is no limit of that kind."""

    actions_per_month: int | None = None
    agents: int | None = None
    requests_per_second: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.actions_per_month is None and self.agents is None and self.requests_per_second is None


UNLIMITED = Quota()


@dataclass(frozen=True)
class QuotaUsage:
    """A tenant's quota beside what it used: actions this UTC month, agents with sessions in force."""

    quota: Quota
    actions_this_month: int
    agents_active: int


def quota_value(value: object, *, field: str, high: int) -> int | None:
    """A limit from the API or the CLI: a whole number from 1 to `high`; 0 or None clears it."""
    if value is None or value == 0:
        return None
    if type(value) is not int or not 1 <= value <= high:
        shown = value if type(value) is int else type(value).__name__
        raise InvalidRequest(
            f"{field} must be a whole number from 1 to {high} (0 clears it), got {shown}", field=field
        )
    return value


def seconds_to_next_month(now: datetime) -> int:
    """Whole seconds (at least 1) until the next UTC month begins: when a monthly quota resets."""
    now = now.astimezone(UTC)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else first.replace(month=first.month + 1)
    )
    return max(1, math.ceil((following - now).total_seconds()))


def rate_window(now: datetime) -> tuple[int, int]:
    """(the whole second `now` falls in, whole seconds to wait for the next: always 1)."""
    return math.floor(now.timestamp()), 1


def lease_size(requests_per_second: int) -> int:
    """How many of a second's requests a process takes from the store at a time."""
    return max(1, math.ceil(requests_per_second / LEASES_PER_SECOND))
