"""Anomaly detection: built-in detectors and tenant rules that flag a ledger entry as it is appended.

`detect` is pure: the caller passes the entry, the session's recent entries (newest first, at least
`lookback(rules, settings)` of them when the session has that many), the tenant's rules and anomaly
settings, and the time.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from haldir.core.money import MICROS_PER_UNIT, format_micros, to_micros
from haldir.errors import InvalidRequest

RULE = "rul"
EVENT = "evt"
FLAGGED_EVENT = "audit.flagged"

# Cost spike: an entry costs more than SPIKE_FACTOR times the median of the session's last
# SPIKE_BASELINE_ENTRIES costed entries, the session has at least SPIKE_MIN_PRIOR of them, and the cost
# is above SPIKE_MIN_MICROS (small amounts are noise, whatever their ratio).
SPIKE_FACTOR = 10
SPIKE_BASELINE_ENTRIES = 20
SPIKE_MIN_PRIOR = 3
SPIKE_MIN_MICROS = 1 * MICROS_PER_UNIT
# Burst: more than BURST_MAX_ACTIONS actions by one session within BURST_WINDOW, this one included.
# "Within a window" means less than the window before now, everywhere in this module. A governed call
# appends two entries (admission, outcome), so the default lets one call a second through, sustained,
# with room to spare (40 entries in 20 s), and flags a loop that goes half as fast again or a fan-out of
# more than 30 calls at once. A tenant can change both numbers, or turn the detector off.
BURST_MAX_ACTIONS = 60
BURST_WINDOW = timedelta(seconds=20)
MAX_BURST_ACTIONS = 1000  # the detector looks back this many entries: bounded like rate rules
# Repeated denials: this entry is a denial and the session had DENIALS_MIN_PRIOR more within DENIALS_WINDOW.
DENIALS_MIN_PRIOR = 2
DENIALS_WINDOW = timedelta(minutes=10)

DENIED = "denied"
MAX_RULE_CALLS = 1000  # a rate rule looks back this many entries at most, on every append
MAX_RULE_WINDOW = 7 * 86400
MAX_PATTERN_LENGTH = 200


@dataclass(frozen=True)
class Candidate:
    """The entry about to be appended."""

    session_id: str | None
    tool: str
    action: str
    status: str
    cost_micros: int
    timestamp: datetime


@dataclass(frozen=True)
class RecentEntry:
    """An entry the same session appended before."""

    timestamp: datetime
    cost_micros: int
    status: str
    tool: str


@dataclass(frozen=True)
class CostOver:
    """Flag an entry that costs more than `max_micros`."""

    type: ClassVar[str] = "cost_over"
    max_micros: int

    def params(self) -> dict[str, Any]:
        return {"max_usd": format_micros(self.max_micros)}

    def check(self, candidate: Candidate, history: History) -> str | None:
        if candidate.cost_micros <= self.max_micros:
            return None
        return f"cost {_usd(candidate.cost_micros)} is over {_usd(self.max_micros)}"


@dataclass(frozen=True)
class RateOver:
    """Flag an entry when its session made more than `max_calls` actions within `window_seconds`."""

    type: ClassVar[str] = "rate_over"
    max_calls: int
    window_seconds: int

    def params(self) -> dict[str, Any]:
        return {"max_calls": self.max_calls, "window_seconds": self.window_seconds}

    def check(self, candidate: Candidate, history: History) -> str | None:
        if candidate.session_id is None:
            return None
        count = history.count_within(timedelta(seconds=self.window_seconds))
        if count.value + 1 <= self.max_calls:
            return None
        return (
            f"{count.text(1)} actions in {self.window_seconds} s by this session, "
            f"over the limit of {self.max_calls}"
        )


@dataclass(frozen=True)
class ToolMatch:
    """Flag an entry whose tool matches `pattern`: a shell-style glob (`delete_*`) or an exact name."""

    type: ClassVar[str] = "tool_match"
    pattern: str

    def params(self) -> dict[str, Any]:
        return {"pattern": self.pattern}

    def check(self, candidate: Candidate, history: History) -> str | None:
        if not fnmatch.fnmatchcase(candidate.tool, self.pattern):
            return None
        return f"tool {candidate.tool!r} matches {self.pattern!r}"


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


@dataclass(frozen=True)
class OutsideHours:
    """Flag an entry made outside the tenant's normal hours: local time in `timezone` not in
    [`start`, `end`) on one of `days`. A window whose end is before its start runs overnight, and the hours
    after midnight belong to the day it started. With `tools` (a glob), only those tools are judged."""

    type: ClassVar[str] = "outside_hours"
    timezone: str
    start: time
    end: time
    days: tuple[str, ...] = DAYS
    tools: str | None = None

    def params(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "timezone": self.timezone,
            "start": self.start.strftime("%H:%M"),
            "end": self.end.strftime("%H:%M"),
            "days": list(self.days),
        }
        if self.tools is not None:
            found["tools"] = self.tools
        return found

    def inside(self, moment: datetime) -> bool:
        """Whether `moment` falls within the normal hours."""
        local = moment.astimezone(ZoneInfo(self.timezone))
        clock, day = local.time().replace(tzinfo=None), local.weekday()
        if self.start < self.end:
            return self.start <= clock < self.end and DAYS[day] in self.days
        if clock >= self.start:  # the evening part of an overnight window
            return DAYS[day] in self.days
        return clock < self.end and DAYS[(day - 1) % 7] in self.days

    def check(self, candidate: Candidate, history: History) -> str | None:
        if self.tools is not None and not fnmatch.fnmatchcase(candidate.tool, self.tools):
            return None
        if self.inside(candidate.timestamp):
            return None
        local = candidate.timestamp.astimezone(ZoneInfo(self.timezone))
        return (
            f"tool {candidate.tool!r} used at {local:%a %H:%M} {self.timezone}, outside normal hours "
            f"{self.start:%H:%M}-{self.end:%H:%M} {','.join(self.days)}"
        )


Condition = CostOver | RateOver | ToolMatch | OutsideHours
RULE_TYPES: dict[str, tuple[str, ...]] = {
    CostOver.type: ("max_usd",),
    RateOver.type: ("max_calls", "window_seconds"),
    ToolMatch.type: ("pattern",),
    OutsideHours.type: ("timezone", "start", "end"),
}
OPTIONAL_PARAMS: dict[str, tuple[str, ...]] = {OutsideHours.type: ("days", "tools")}


@dataclass(frozen=True)
class AnomalySettings:
    """A tenant's settings of the built-in detectors: the burst threshold (None: the detector is off)."""

    burst_max_actions: int | None = BURST_MAX_ACTIONS
    burst_window_seconds: int = int(BURST_WINDOW.total_seconds())

    @property
    def burst_window(self) -> timedelta:
        return timedelta(seconds=self.burst_window_seconds)


DEFAULT_SETTINGS = AnomalySettings()


def parse_settings(params: Mapping[str, Any]) -> AnomalySettings:
    """Anomaly settings from the API: `burst_max_actions` (null turns the burst detector off) and
    `burst_window_seconds`, each defaulting to the built-in value when left out."""
    unknown = sorted(set(params) - {"burst_max_actions", "burst_window_seconds", "burst_enabled"})
    if unknown:
        raise InvalidRequest(f"unknown anomaly settings: {', '.join(unknown)}", field=unknown[0])
    enabled = params.get("burst_enabled", True)
    if type(enabled) is not bool:
        raise InvalidRequest("burst_enabled must be true or false", field="burst_enabled")
    window = params.get("burst_window_seconds")
    window = DEFAULT_SETTINGS.burst_window_seconds if window is None else window
    window = _whole(window, field="burst_window_seconds", high=MAX_RULE_WINDOW)
    most = params.get("burst_max_actions")
    if not enabled:
        return AnomalySettings(burst_max_actions=None, burst_window_seconds=window)
    most = BURST_MAX_ACTIONS if most is None else most
    return AnomalySettings(
        burst_max_actions=_whole(most, field="burst_max_actions", high=MAX_BURST_ACTIONS),
        burst_window_seconds=window,
    )


@dataclass(frozen=True)
class Rule:
    """A tenant's anomaly rule."""

    rule_id: str
    condition: Condition
    created_at: datetime

    @property
    def type(self) -> str:
        return self.condition.type

    def params(self) -> dict[str, Any]:
        return self.condition.params()


def parse_condition(rule_type: str, params: Mapping[str, Any]) -> Condition:
    """The condition of a `rule_type` rule from its parameters; anything malformed raises `InvalidRequest`."""
    if rule_type not in RULE_TYPES:
        raise InvalidRequest(
            f"rule type must be one of {sorted(RULE_TYPES)}, got {rule_type!r}", field="type"
        )
    expected, optional = RULE_TYPES[rule_type], OPTIONAL_PARAMS.get(rule_type, ())
    missing = [name for name in expected if params.get(name) is None]
    unknown = sorted(set(params) - set(expected) - set(optional))
    if missing or unknown:
        raise InvalidRequest(
            f"a {rule_type} rule takes {', '.join(expected)}"
            + (f" and optionally {', '.join(optional)}" if optional else "")
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else ""),
            field=(missing or unknown)[0],
        )
    if rule_type == OutsideHours.type:
        return _outside_hours(params)
    if rule_type == CostOver.type:
        return CostOver(to_micros(params["max_usd"], field="max_usd"))
    if rule_type == RateOver.type:
        return RateOver(
            max_calls=_whole(params["max_calls"], field="max_calls", high=MAX_RULE_CALLS),
            window_seconds=_whole(params["window_seconds"], field="window_seconds", high=MAX_RULE_WINDOW),
        )
    pattern = params["pattern"]
    return ToolMatch(_pattern(pattern, field="pattern"))


def _pattern(pattern: Any, *, field: str) -> str:
    if not isinstance(pattern, str) or not pattern.strip() or len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidRequest(
            f"{field} must be a tool name or a glob such as 'delete_*', 1 to {MAX_PATTERN_LENGTH} characters",
            field=field,
        )
    if not pattern.isprintable():
        raise InvalidRequest(f"{field} must be printable characters", field=field)
    return pattern


def _outside_hours(params: Mapping[str, Any]) -> OutsideHours:
    zone = params["timezone"]
    try:
        if not isinstance(zone, str) or not zone or len(zone) > 64 or zone.startswith(("/", ".")):
            raise ValueError(zone)
        ZoneInfo(zone)
    except (ValueError, ZoneInfoNotFoundError):
        raise InvalidRequest(
            f"timezone must be an IANA time zone name such as 'Europe/Berlin', got {zone!r}", field="timezone"
        ) from None
    start, end = _clock_time(params["start"], field="start"), _clock_time(params["end"], field="end")
    if start == end:
        raise InvalidRequest(
            "start and end must differ (the window would be empty or the whole day)", field="end"
        )
    days = params.get("days")
    chosen: tuple[str, ...]
    if days is None:
        chosen = DAYS
    else:
        if not isinstance(days, list) or not days or any(day not in DAYS for day in days):
            raise InvalidRequest(f"days must be a non-empty list of {', '.join(DAYS)}", field="days")
        chosen = tuple(day for day in DAYS if day in days)
    tools = params.get("tools")
    return OutsideHours(
        timezone=zone,
        start=start,
        end=end,
        days=chosen,
        tools=None if tools is None else _pattern(tools, field="tools"),
    )


def _clock_time(value: Any, *, field: str) -> time:
    found = _CLOCK_TIME.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise InvalidRequest(
            f"{field} must be a local time HH:MM from 00:00 to 23:59, got {value!r}", field=field
        )
    return time(int(found[1]), int(found[2]))


def lookback(rules: Sequence[Rule], settings: AnomalySettings = DEFAULT_SETTINGS) -> int:
    """How many of a session's latest entries `detect` needs: one more than any detector counts back,
    so that a count can tell "exactly" from "at least"."""
    calls = [rule.condition.max_calls for rule in rules if isinstance(rule.condition, RateOver)]
    burst = settings.burst_max_actions or 0
    return max(SPIKE_BASELINE_ENTRIES, burst, DENIALS_MIN_PRIOR, *calls) + 1


@dataclass(frozen=True)
class Count:
    """How many earlier entries a detector counted; a lower bound when the history it saw was cut short."""

    value: int
    at_least: bool

    def text(self, plus: int = 0) -> str:
        return f"{'at least ' if self.at_least else ''}{self.value + plus}"


@dataclass(frozen=True)
class History:
    """What detectors see of a session's past: its latest entries, newest first, at a moment."""

    recent: Sequence[RecentEntry]
    now: datetime
    cut_short: bool  # the session may have older entries than `recent` holds

    def count_within(self, window: timedelta, *, status: str | None = None) -> Count:
        """Earlier entries (of `status`, if given) less than `window` before now."""
        within = [entry for entry in self.recent if self.now - entry.timestamp < window]
        matching = sum(1 for entry in within if status is None or entry.status == status)
        return Count(matching, at_least=self.cut_short and len(within) == len(self.recent))


def detect(
    candidate: Candidate,
    recent: Sequence[RecentEntry],
    rules: Sequence[Rule],
    now: datetime,
    settings: AnomalySettings = DEFAULT_SETTINGS,
) -> str | None:
    """Why `candidate` looks anomalous, as one readable reason ("; "-joined), or None.

    `recent` holds the session's latest entries, newest first: at least `lookback(rules, settings)` of
    them when the session has that many. A count that reaches past the oldest of them is reported as
    "at least".
    """
    if candidate.session_id is None:
        recent = ()
    history = History(recent, now, cut_short=len(recent) >= lookback(rules, settings))
    found = (
        _cost_spike(candidate, history),
        _burst(candidate, history, settings),
        _repeated_denials(candidate, history),
        *(_rule_reason(rule, candidate, history) for rule in rules),
    )
    reasons = [reason for reason in found if reason is not None]
    return "; ".join(reasons) if reasons else None


def flagged_event(record: Mapping[str, Any], *, leaf_index: int) -> dict[str, Any]:
    """The payload of the `audit.flagged` event of a flagged ledger record."""
    fields = ("entry_id", "session_id", "agent_id", "tool", "action", "status", "cost_usd", "flag_reason")
    return {
        **{name: record.get(name) for name in fields},
        "leaf_index": leaf_index,
        "timestamp": record.get("timestamp"),
    }


def _rule_reason(rule: Rule, candidate: Candidate, history: History) -> str | None:
    reason = rule.condition.check(candidate, history)
    return None if reason is None else f"rule {rule.rule_id}: {reason}"


def _cost_spike(candidate: Candidate, history: History) -> str | None:
    if candidate.cost_micros <= SPIKE_MIN_MICROS:
        return None
    costs = [entry.cost_micros for entry in history.recent if entry.cost_micros > 0]
    costs = costs[:SPIKE_BASELINE_ENTRIES]
    if len(costs) < SPIKE_MIN_PRIOR:
        return None
    median = _median(costs)
    if candidate.cost_micros <= SPIKE_FACTOR * median:
        return None
    ratio = _decimal(candidate.cost_micros / median).quantize(Decimal("0.1"))
    median_micros = int(_decimal(median).quantize(Decimal(1), ROUND_HALF_UP))
    return (
        f"cost {_usd(candidate.cost_micros)} is {_plain(ratio)}x "
        f"this session's median of {_usd(median_micros)}"
    )


def _burst(candidate: Candidate, history: History, settings: AnomalySettings) -> str | None:
    most = settings.burst_max_actions
    if candidate.session_id is None or most is None:
        return None
    count = history.count_within(settings.burst_window)
    if count.value + 1 <= most:
        return None
    return f"burst: {count.text(1)} actions in {settings.burst_window_seconds} s by this session"


def _repeated_denials(candidate: Candidate, history: History) -> str | None:
    if candidate.status != DENIED or candidate.session_id is None:
        return None
    count = history.count_within(DENIALS_WINDOW, status=DENIED)
    if count.value < DENIALS_MIN_PRIOR:
        return None
    minutes = int(DENIALS_WINDOW.total_seconds()) // 60
    return f"{count.text(1)} denials in {minutes} minutes for this session"


def _median(values: Sequence[int]) -> Fraction:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return Fraction(ordered[middle])
    return Fraction(ordered[middle - 1] + ordered[middle], 2)


def _decimal(value: Fraction) -> Decimal:
    return Decimal(value.numerator) / Decimal(value.denominator)


def _whole(value: Any, *, field: str, high: int) -> int:
    if type(value) is not int or not 1 <= value <= high:
        shown = value if type(value) is int else type(value).__name__
        raise InvalidRequest(f"{field} must be a whole number from 1 to {high}, got {shown}", field=field)
    return value


def _usd(micros: int) -> str:
    return f"{format_micros(micros)} USD"


def _plain(number: Decimal) -> str:
    return f"{number.normalize():f}"
