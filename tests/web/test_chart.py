"""The SVG chart geometry: bars proportional to the amounts, on a scale that ends at a round number."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from haldir.core.usage import AgentUsage, DayUsage, Tally
from haldir.web.chart import nice_ceiling, spend_by_agent, spend_by_day


def _tally(dollars: str, actions: int = 1) -> Tally:
    return Tally(actions=actions, charged=int(Decimal(dollars) * 1_000_000))


@pytest.mark.parametrize(
    ("value", "ceiling"),
    [
        ("0", "1"),
        ("-3", "1"),
        ("0.3", "0.5"),
        ("1", "1"),
        ("1.01", "2"),
        ("13.75", "20"),
        ("480", "500"),
        ("501", "1E+3"),
    ],
)
def test_the_scale_ends_at_one_two_or_five_times_a_power_of_ten(value: str, ceiling: str) -> None:
    assert nice_ceiling(Decimal(value)) == Decimal(ceiling)


def test_day_bars_are_as_tall_as_their_share_of_the_scale_and_refunds_draw_nothing() -> None:
    first = date(2026, 12, 1)
    days = [
        DayUsage(_tally(amount), day=first + timedelta(days=n))
        for n, amount in enumerate(["5", "10", "-2", "0"])
    ]

    chart = spend_by_day(days)

    heights = [bar.height for bar in chart.bars]
    assert heights[1] == pytest.approx(chart.plot_height)
    assert heights[0] == pytest.approx(chart.plot_height / 2)
    assert heights[2:] == [0, 0]
    assert all(bar.y + bar.height == pytest.approx(chart.top + chart.plot_height) for bar in chart.bars)
    assert [tick.label for tick in chart.ticks] == ["$ 0.00", "$ 2.50", "$ 5.00", "$ 7.50", "$ 10.00"]


def test_a_long_window_labels_only_every_few_days() -> None:
    days = [DayUsage(_tally("1"), day=date(2026, 1, 1) + timedelta(days=n)) for n in range(90)]

    chart = spend_by_day(days)

    assert len(chart.bars) == 90
    assert sum(bar.show_label for bar in chart.bars) <= 10


def test_agent_bars_put_the_biggest_spender_first_and_keep_at_most_the_limit() -> None:
    agents = [AgentUsage(_tally(str(n)), agent_id=f"agent-{n}") for n in range(1, 21)]

    chart = spend_by_agent(agents, limit=5)

    assert [bar.label for bar in chart.bars] == ["agent-20", "agent-19", "agent-18", "agent-17", "agent-16"]
    assert chart.bars[0].width == pytest.approx(chart.plot_width * 20 / 20)
    assert chart.bars[4].width == pytest.approx(chart.plot_width * 16 / 20)
