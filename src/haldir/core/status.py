"""Status: each component of a deployment as green, yellow or red, and the exit code `haldir status`
gives for the worst of them."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum

from haldir.core.usage import Deliveries

# Below these delivery success rates (last 24 h) webhooks turn yellow, then red.
DELIVERY_YELLOW = Decimal(99)
DELIVERY_RED = Decimal(90)


class Level(IntEnum):
    """Ordered so the worst component decides; the value is `haldir status`'s exit code."""

    green = 0
    yellow = 1
    red = 2


@dataclass(frozen=True)
class Component:
    name: str
    level: Level
    detail: str


@dataclass(frozen=True)
class UpstreamState:
    """What this process's connection pool knows of one upstream."""

    name: str
    connected: bool
    failures: int = 0
    last_error: str = ""


@dataclass(frozen=True)
class Status:
    components: list[Component]

    @property
    def level(self) -> Level:
        return max((c.level for c in self.components), default=Level.green)


def webhooks_component(registered: int, deliveries: Deliveries) -> Component:
    if registered == 0:
        return Component("webhooks", Level.green, "none registered")
    rate = deliveries.success_rate
    detail = f"{registered} registered, {deliveries.total} deliveries in 24 h"
    if rate is None:
        return Component("webhooks", Level.green, f"{detail}, none settled")
    detail = f"{detail}, {rate}% delivered, {deliveries.pending} being retried"
    level = Level.green if rate >= DELIVERY_YELLOW else Level.yellow if rate >= DELIVERY_RED else Level.red
    return Component("webhooks", level, detail)


def upstreams_component(states: list[UpstreamState]) -> Component:
    if not states:
        return Component("upstreams", Level.green, "none registered")
    failing = [s for s in states if s.failures and not s.connected]
    connected = sum(s.connected for s in states)
    detail = f"{len(states)} registered, {connected} connected in this process"
    if not failing:
        return Component("upstreams", Level.green, detail)
    names = ", ".join(f"{s.name} ({s.last_error})" for s in failing)
    level = Level.red if len(failing) == len(states) else Level.yellow
    return Component("upstreams", level, f"{detail}; failing: {names}")
