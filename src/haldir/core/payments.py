"""Payment authorizations: an amount reserved against a session's budget, then captured or voided."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

AUTHORIZED: Final = "authorized"
CAPTURED: Final = "captured"
VOIDED: Final = "voided"
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
        captured amount once captured, nothing once voided."""
        if self.status == VOIDED:
            return 0
        return self.amount_micros if self.captured_micros is None else self.captured_micros
