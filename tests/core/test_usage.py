"""Usage counters and status lights: pure functions, no store."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from haldir.core.status import Level, UpstreamState, upstreams_component, webhooks_component
from haldir.core.usage import Deliveries, Tally, day_date, day_number, month_start, tally, usage_report


def _row(at: datetime, agent: str | None, *, status: str = "ok", tool: str = "t", charged: int = 0) -> dict:
    return {
        "created_at": at,
        "agent_id": agent,
        "status": status,
        "flagged": False,
        "tool": tool,
        "charged": charged,
    }


def test_days_are_counted_in_utc_whatever_the_zone_of_the_time() -> None:
    late_in_berlin = datetime.fromisoformat("2026-04-06T00:30:00+02:00")  # 22:30 UTC on the 5th

    assert day_date(day_number(late_in_berlin)) == date(2026, 4, 5)
    assert day_number(date(1970, 1, 2)) == 1
    assert month_start(late_in_berlin) == date(2026, 4, 1)


def test_a_batch_is_tallied_per_day_and_agent() -> None:
    t = datetime(2026, 4, 5, 12, tzinfo=UTC)
    rows = [
        _row(t, "a", charged=1_000_000),
        _row(t, "a", status="denied"),
        _row(t, None, tool="vault"),
        _row(t.replace(day=6), "a", status="error", charged=-250_000),
    ]

    counts = tally(rows)

    day = day_number(t)
    assert counts[(day, "a")] == Tally(actions=2, denied=1, charged=1_000_000)
    assert counts[(day, "")] == Tally(actions=1, vault=1)
    assert counts[(day + 1, "a")] == Tally(actions=1, errors=1, charged=-250_000)


def test_a_report_has_every_day_of_its_window_and_agents_by_actions() -> None:
    first = day_number(date(2026, 4, 1))
    rows = [
        (first, "a", Tally(actions=1, charged=10)),
        (first + 2, "b", Tally(actions=3)),
        (first, "b", Tally(actions=1)),
    ]

    report = usage_report(date(2026, 4, 1), date(2026, 4, 4), rows)

    assert [(d.day.day, d.actions) for d in report.days] == [(1, 2), (2, 0), (3, 3), (4, 0)]
    assert [(a.agent_id, a.actions) for a in report.agents] == [("b", 4), ("a", 1)]
    assert report.total == Tally(actions=5, charged=10)
    assert report.total.spend == Decimal("0.00001")


def test_delivery_success_counts_settled_deliveries_only() -> None:
    assert Deliveries(delivered=0, failed=0, pending=5).success_rate is None
    assert Deliveries(delivered=2, failed=1, pending=7).success_rate == Decimal("66.67")
    assert Deliveries(delivered=2, failed=1, pending=7).total == 10


def test_webhooks_turn_yellow_then_red_as_deliveries_fail() -> None:
    assert webhooks_component(0, Deliveries()).level is Level.green
    assert webhooks_component(1, Deliveries(delivered=99, failed=1)).level is Level.green
    assert webhooks_component(1, Deliveries(delivered=95, failed=5)).level is Level.yellow
    assert webhooks_component(1, Deliveries(delivered=80, failed=20)).level is Level.red


def test_upstreams_are_yellow_when_some_fail_and_red_when_all_do() -> None:
    up = UpstreamState("time", connected=True)
    down = UpstreamState("files", connected=False, failures=3, last_error="connection refused")
    idle = UpstreamState("idle", connected=False)

    assert upstreams_component([]).level is Level.green
    assert upstreams_component([up, idle]).level is Level.green
    assert upstreams_component([up, down]).level is Level.yellow
    assert upstreams_component([down]).level is Level.red
    assert "connection refused" in upstreams_component([down]).detail
