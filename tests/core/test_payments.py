"""Matching a logged cost to payment authorizations: the money is counted once, never twice."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from haldir.core.payments import AUTHORIZED, CAPTURED, VOIDED, Payment, match_cost

AT = datetime(2026, 4, 5, tzinfo=UTC)


def _payment(
    payment_id: str, amount: int, *, reported: int = 0, status: str = AUTHORIZED, captured: int | None = None
) -> Payment:
    return Payment(
        tenant_id="acme",
        payment_id=payment_id,
        session_id="ses_1",
        amount_micros=amount,
        currency="USD",
        description="",
        status=status,
        created_at=AT,
        updated_at=AT,
        captured_micros=captured,
        reported_micros=reported,
    )


def test_the_oldest_authorization_holding_the_whole_cost_covers_it_alone() -> None:
    payments = [_payment("pay_a", 10), _payment("pay_b", 50), _payment("pay_c", 40)]
    assert match_cost(30, payments) == [("pay_b", 30)]


def test_when_none_holds_the_whole_cost_the_oldest_ones_share_it() -> None:
    payments = [_payment("pay_a", 10), _payment("pay_b", 15, reported=5), _payment("pay_c", 4)]
    assert match_cost(22, payments) == [("pay_a", 10), ("pay_b", 10), ("pay_c", 2)]


def test_what_no_authorization_holds_is_left_uncovered() -> None:
    assert match_cost(30, [_payment("pay_a", 10)]) == [("pay_a", 10)]
    assert match_cost(30, []) == []


def test_voided_and_fully_reported_authorizations_cover_nothing() -> None:
    payments = [
        _payment("pay_v", 10, status=VOIDED),
        _payment("pay_r", 10, reported=10),
        _payment("pay_c", 10, status=CAPTURED, captured=4, reported=1),
    ]
    assert match_cost(5, payments) == [("pay_c", 3)]


def test_a_zero_cost_matches_nothing() -> None:
    assert match_cost(0, [_payment("pay_a", 10)]) == []


holdings = st.lists(
    st.tuples(st.integers(1, 10**8), st.integers(0, 10**8)).map(lambda t: (t[0], min(t[1], t[0]))),
    max_size=8,
)


@given(cost=st.integers(0, 10**9), held=holdings)
def test_a_match_never_covers_more_than_the_cost_nor_more_than_a_payment_holds(
    cost: int, held: list[tuple[int, int]]
) -> None:
    payments = [_payment(f"pay_{i}", amount, reported=reported) for i, (amount, reported) in enumerate(held)]
    matched = match_cost(cost, payments)
    holds = {p.payment_id: p.unreported_micros for p in payments}
    assert sum(covered for _, covered in matched) == min(cost, sum(holds.values()))
    assert all(0 < covered <= holds[payment_id] for payment_id, covered in matched)
    assert len({payment_id for payment_id, _ in matched}) == len(matched)
