"""Payment authorizations: an amount reserved against a session's budget, then captured or voided, or
expired when neither came within the authorization TTL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

AUTHORIZED: Final = "authorized"
CAPTURED: Final = "captured"
VOIDED: Final = "voided"
EXPIRED: Final = "expired"  # not settled in time: what was reported against it stays, the rest is released
RELEASED: Final = frozenset({VOIDED, EXPIRED})  # settled for good: no more costs are matched to it
CURRENCY: Final = "USD"
PAYMENTS_TOOL: Final = "payments"
BUDGET_EXHAUSTED: Final = "budget.exhausted"


@dataclass(frozen=True)
class Payment:
    tenant_id: str
    payment_id: str
    session_id: str
    amount_micros: int
    currency: str
    description: str
    status: str
    created_at: datetime
    updated_at: datetime
    captured_micros: int | None = None
    reported_micros: int = 0

    @property
    def charged_micros(self) -> int:
        """What this payment holds of its session's budget now: the amount while authorized, the
        captured amount once captured (an expired one: what was reported against it), nothing once voided."""
        if self.status == VOIDED:
            return 0
        return self.amount_micros if self.captured_micros is None else self.captured_micros

    def lapsed(self, now: datetime, ttl: timedelta) -> bool:
        """Still authorized, and authorized longer than `ttl` ago: it may no longer be settled."""
        return self.status == AUTHORIZED and self.created_at + ttl <= now

    @property
    def unreported_micros(self) -> int:
        """What this payment holds that no logged cost has been matched to yet."""
        return max(self.charged_micros - self.reported_micros, 0)


def match_cost(cost_micros: int, payments: Sequence[Payment]) -> list[tuple[str, int]]:
    """Which authorizations a logged cost is matched to, and how much of it each covers.

    `payments` are the candidates oldest first (the one the caller named, or the session's open ones).
    The rule: the oldest payment that holds the whole cost covers it alone; when none does, the payments
    cover it oldest first, each with what it holds, and what is left is charged to the session. So an
    authorize-then-log of the same amount counts the money once, and a cost is never matched twice.
    """
    if cost_micros <= 0:
        return []
    open_payments = [payment for payment in payments if payment.unreported_micros > 0]
    for payment in open_payments:
        if payment.unreported_micros >= cost_micros:
            return [(payment.payment_id, cost_micros)]
    matched: list[tuple[str, int]] = []
    left = cost_micros
    for payment in open_payments:
        if left == 0:
            break
        covered = min(payment.unreported_micros, left)
        matched.append((payment.payment_id, covered))
        left -= covered
    return matched
