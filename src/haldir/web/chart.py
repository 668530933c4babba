"""Bar charts drawn on the server as SVG geometry (no script, no chart library): spend by day and by agent.
Amounts stay `Decimal` in labels; only pixel positions are computed in floats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from haldir.core.usage import AgentUsage, DayUsage

WIDTH = 960
DAY_HEIGHT = 260
ROW_HEIGHT = 26
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 16, 40
_AGENT_LEFT = 220  # room for agent ids left of their bars


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # the day or agent, shown on the axis
    value: str  # the amount, shown on hover and beside agent bars
    show_label: bool = True


@dataclass(frozen=True)
class Tick:
    at: float  # y for a vertical chart, x for a horizontal one
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    plot_width: float
    plot_height: float
    bars: list[Bar]
    ticks: list[Tick]


def nice_ceiling(value: Decimal) -> Decimal:
    """The smallest of 1, 2 or 5 times a power of ten that is at least `value` (1 when it is not positive)."""
    if value <= 0:
        return Decimal(1)
    power = Decimal(10) ** (value.adjusted())
    for step in (1, 2, 5, 10):
        if value <= power * step:
            return power * step
    return power * 10  # unreachable: value < 10 * power by the definition of adjusted()


def _dollars(amount: Decimal) -> str:
    return f"$ {amount:,.2f}"


def spend_by_day(days: Sequence[DayUsage]) -> Chart:
    """One bar per day, oldest left; every few days labelled so labels never overlap."""
    top = nice_ceiling(max((day.spend for day in days), default=Decimal(0)))
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, DAY_HEIGHT - _TOP - _BOTTOM
    slot = plot_w / max(len(days), 1)
    every = max(1, -(-len(days) // 10))  # at most ~10 labels
    bars = []
    for index, day in enumerate(days):
        height = float(max(day.spend, Decimal(0)) / top) * plot_h
        bars.append(
            Bar(
                x=_LEFT + index * slot + slot * 0.15,
                y=_TOP + plot_h - height,
                width=slot * 0.7,
                height=height,
                label=day.day.strftime("%b %d"),
                value=f"{day.day.isoformat()}: {_dollars(day.spend)}, {day.actions} actions",
                show_label=index % every == 0,
            )
        )
    ticks = [Tick(_TOP + plot_h - plot_h * step / 4, _dollars(top * step / 4)) for step in range(5)]
    return Chart(WIDTH, DAY_HEIGHT, _LEFT, _TOP, plot_w, plot_h, bars, ticks)


def spend_by_agent(agents: Sequence[AgentUsage], *, limit: int = 12) -> Chart:
    """One horizontal bar per agent, the biggest spenders first (at most `limit`)."""
    shown = sorted(agents, key=lambda agent: (-agent.spend, agent.agent_id))[:limit]
    top = nice_ceiling(max((agent.spend for agent in shown), default=Decimal(0)))
    height = _TOP + _BOTTOM + ROW_HEIGHT * max(len(shown), 1)
    plot_w, plot_h = WIDTH - _AGENT_LEFT - _RIGHT - 90, ROW_HEIGHT * max(len(shown), 1)
    bars = [
        Bar(
            x=_AGENT_LEFT,
            y=_TOP + index * ROW_HEIGHT + 4,
            width=float(max(agent.spend, Decimal(0)) / top) * plot_w,
            height=ROW_HEIGHT - 8,
            label=agent.agent_id or "(no agent)",
            value=f"{_dollars(agent.spend)} · {agent.actions} actions",
        )
        for index, agent in enumerate(shown)
    ]
    ticks = [Tick(_AGENT_LEFT + plot_w * step / 4, _dollars(top * step / 4)) for step in range(5)]
    return Chart(WIDTH, height, _AGENT_LEFT, _TOP, plot_w, plot_h, bars, ticks)
