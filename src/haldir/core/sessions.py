"""Gate sessions: a scoped, expiring, revocable grant with a spend budget."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from haldir.core.money import format_micros, to_micros
from haldir.core.scopes import SPEND, Scope, grants


@dataclass(frozen=True)
class Session:
    tenant_id: str
    session_id: str
    agent_id: str
    scopes: tuple[Scope, ...]
    spend_limit_micros: int
    spent_micros: int
    ttl: int
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def expires_at(self) -> datetime:
        return self.created_at + timedelta(seconds=self.ttl)

    @property
    def remaining_micros(self) -> int:
        return max(self.spend_limit_micros - self.spent_micros, 0)

    def is_valid(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at

    def invalid_reason(self, now: datetime) -> str | None:
        """Why this session allows nothing at `now`, or None while it is valid."""
        if self.revoked_at is not None:
            return f"session {self.session_id} was revoked"
        if now >= self.expires_at:
            return f"session {self.session_id} expired"
        return None


@dataclass(frozen=True)
class Decision:
    """The answer to "may this session do that?", with the reason when it may not."""

    allowed: bool
    reason: str | None = None


def check_scope(session: Session, wanted: Scope, *, now: datetime) -> Decision:
    invalid = session.invalid_reason(now)
    if invalid:
        return Decision(False, invalid)
    if not grants(session.scopes, wanted):
        held = [str(s) for s in session.scopes]
        return Decision(False, f"session {session.session_id} lacks scope '{wanted}'; it has {held}")
    if wanted.name == SPEND and wanted.qualifier is not None:
        amount = to_micros(wanted.qualifier)
        left = session.remaining_micros
        if amount > left:
            return Decision(
                False,
                f"session {session.session_id} has {format_micros(left)} USD of budget left, "
                f"less than {format_micros(amount)}",
            )
    return Decision(True)


def holds_spend(session: Session) -> bool:
    """Whether the session may spend at all: it holds `spend`, or `spend:<amount>` (its budget)."""
    return any(scope.name == SPEND for scope in session.scopes)


def spend_refusal(session: Session, micros: int, *, now: datetime) -> str:
    """Why a charge of `micros` against `session` does not apply at `now`."""
    invalid = session.invalid_reason(now)
    if invalid:
        return invalid
    return (
        f"session {session.session_id} has {format_micros(session.remaining_micros)} USD of budget left, "
        f"less than {format_micros(micros)}"
    )
