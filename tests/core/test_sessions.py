"""Gate sessions: expiry, revocation, scope checks and the remaining budget."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from haldir.core.scopes import Scope
from haldir.core.sessions import Decision, Session, check_scope
from tests.support import FakeClock

START = datetime(2026, 4, 5, 19, 0, 0, tzinfo=UTC)


def _session(**changes: Any) -> Session:
    session = Session(
        tenant_id="acme",
        session_id="ses_test",
        agent_id="agent-1",
        scopes=(Scope("read"), Scope("stripe", "charge")),
        spend_limit_micros=50_000_000,
        spent_micros=0,
        ttl=3600,
        created_at=START,
    )
    return replace(session, **changes)


def test_session_expires_ttl_seconds_after_creation() -> None:
    assert _session(ttl=90).expires_at == START + timedelta(seconds=90)


def test_session_is_valid_until_just_before_expiry() -> None:
    clock = FakeClock(START)
    session = _session(ttl=60)
    assert session.is_valid(clock.now())
    clock.advance(59.999999)
    assert session.is_valid(clock.now())
    assert session.invalid_reason(clock.now()) is None


def test_session_is_invalid_at_the_moment_of_expiry() -> None:
    clock = FakeClock(START)
    clock.advance(60)
    session = _session(ttl=60)
    assert not session.is_valid(clock.now())
    assert session.invalid_reason(clock.now()) == "session ses_test expired"


def test_session_is_invalid_after_expiry() -> None:
    session = _session(ttl=60)
    assert not session.is_valid(START + timedelta(days=1))


def test_revoked_session_is_invalid_before_expiry() -> None:
    session = _session(revoked_at=START + timedelta(seconds=5))
    now = START + timedelta(seconds=10)
    assert not session.is_valid(now)
    assert session.invalid_reason(now) == "session ses_test was revoked"


def test_revocation_is_the_reason_given_for_a_revoked_and_expired_session() -> None:
    session = _session(ttl=60, revoked_at=START + timedelta(seconds=5))
    assert session.invalid_reason(START + timedelta(hours=2)) == "session ses_test was revoked"


def test_check_allows_a_held_scope() -> None:
    assert check_scope(_session(), Scope("read"), now=START) == Decision(True)
    assert check_scope(_session(), Scope("read"), now=START).reason is None


def test_check_allows_a_qualified_scope_under_a_held_bare_name() -> None:
    assert check_scope(_session(), Scope("read", "orders"), now=START).allowed


def test_check_denies_a_missing_scope_naming_what_the_session_has() -> None:
    decision = check_scope(_session(), Scope("stripe", "refund"), now=START)
    assert not decision.allowed
    assert decision.reason == "session ses_test lacks scope 'stripe:refund'; it has ['read', 'stripe:charge']"


def test_check_denies_a_bare_name_when_only_a_qualified_scope_is_held() -> None:
    decision = check_scope(_session(), Scope("stripe"), now=START)
    assert not decision.allowed
    assert decision.reason is not None
    assert "lacks scope 'stripe'" in decision.reason


def test_check_denies_a_held_scope_on_a_revoked_session() -> None:
    session = _session(revoked_at=START)
    assert check_scope(session, Scope("read"), now=START) == Decision(False, "session ses_test was revoked")


def test_check_denies_a_held_scope_on_an_expired_session() -> None:
    clock = FakeClock(START)
    session = _session(ttl=30)
    clock.advance(30)
    assert check_scope(session, Scope("read"), now=clock.now()) == Decision(False, "session ses_test expired")


def test_remaining_is_the_limit_minus_what_was_spent() -> None:
    assert _session(spend_limit_micros=50_000_000, spent_micros=20_000_000).remaining_micros == 30_000_000


def test_remaining_is_zero_when_spending_went_past_the_limit() -> None:
    assert _session(spend_limit_micros=10, spent_micros=25).remaining_micros == 0


@given(limit=st.integers(min_value=0, max_value=10**15), spent=st.integers(min_value=0, max_value=10**15))
def test_remaining_is_never_negative_and_never_above_the_unspent_limit(limit: int, spent: int) -> None:
    remaining = _session(spend_limit_micros=limit, spent_micros=spent).remaining_micros
    assert 0 <= remaining <= limit
    if spent <= limit:
        assert remaining + spent == limit


@given(
    ttl=st.integers(min_value=1, max_value=10**7),
    elapsed=st.timedeltas(min_value=timedelta(days=-1), max_value=timedelta(days=300)),
    revoked=st.booleans(),
)
def test_session_is_valid_exactly_when_unrevoked_and_before_expiry(
    ttl: int, elapsed: timedelta, revoked: bool
) -> None:
    session = _session(ttl=ttl, revoked_at=START if revoked else None)
    now = START + elapsed
    expected = not revoked and now < START + timedelta(seconds=ttl)
    assert session.is_valid(now) is expected
    assert (session.invalid_reason(now) is None) is expected
    assert check_scope(session, Scope("read"), now=now).allowed is expected
