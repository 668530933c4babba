"""Proxy policies: a tenant's policy specs (parsed, validated, normalised) and the pure judgement of a
tool call against them.

Policies are opt-in: a tenant without policies lets a session call every tool its scope allows. The
order is fixed: deny, then allow, then arguments, then time windows; rate limits and spend limits come
last and are applied by the store, atomically (see `limits_for`). Deny wins. With one or more allow
policies, a tool that none of them names is refused.

Tool names in `tools` and `tool` are names as the proxy exposes them; `<upstream>__<tool>` always names
one upstream's tool. A name may end in `*` to match every name that starts with what precedes it (`*`
alone matches every tool); there is no other wildcard. Deny, arguments and tool_cost policies also match
a tool's original name, so a tool renamed because another upstream added a tool of the same name cannot
slip out of them; an allow policy matches only the exposed or the `<upstream>__<tool>` name, which
never widens it to a same-named tool of another upstream.
"""

from __future__ import annotations

import functools
import importlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import rfc8785

from haldir.core.money import format_micros, to_micros
from haldir.errors import (
    ArgumentRejected,
    CallDenied,
    InvalidRequest,
    NotAllowed,
    OutsideTimeWindow,
    ToolDenied,
)

Per = Literal["session", "agent", "tenant"]
PERS: tuple[Per, ...] = ("session", "agent", "tenant")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_TOOLS = 500
MAX_TOOL_NAME = 200
MAX_RULES = 50
MAX_PATTERN_LENGTH = 200
MAX_MATCHED_LENGTH = 1024  # a longer string fails a `pattern` rule: bounds the regex engine's work
MAX_CALLS = 1_000_000_000
MAX_WINDOW_SECONDS = 366 * 86400
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])|24:00")
_CHECKS = ("pattern", "max", "min", "one_of", "equals", "max_length")
# The regex parser, to refuse patterns whose backtracking can explode; `re._parser` has no type stubs.
_sre: Any = importlib.import_module("re._parser")


@dataclass(frozen=True)
class ToolRef:
    """The names a call's tool goes by: as exposed, and as `upstream` knows it. A local tool (one that
    runs in the agent's own process) has no upstream and goes by its one name."""

    exposed: str
    upstream: str | None
    original: str

    @classmethod
    def local(cls, name: str) -> ToolRef:
        return cls(name, None, name)

    @property
    def qualified(self) -> str | None:
        return None if self.upstream is None else f"{self.upstream}__{self.original}"

    def precise_names(self) -> tuple[str, ...]:
        """Names that can only mean this tool: what allow policies match."""
        return (self.exposed,) if self.qualified is None else (self.exposed, self.qualified)

    def all_names(self) -> tuple[str, ...]:
        """Every name of this tool: what deny, arguments and tool_cost policies match (fail closed)."""
        return (self.exposed,) if self.qualified is None else (self.exposed, self.qualified, self.original)


@dataclass(frozen=True)
class Refusal:
    """Why a call is refused: the error to raise, the reason (the ledger's flag_reason) and the policy."""

    error: type[CallDenied]
    reason: str
    policy_id: str | None


@dataclass(frozen=True)
class ToolList:
    """An allow or a deny list of tool names (a trailing `*` matches a prefix)."""

    type: Literal["allow", "deny"]
    tools: tuple[str, ...]

    def names_any(self, names: Sequence[str]) -> bool:
        return any(_matches(pattern, name) for pattern in self.tools for name in names)

    def spec(self) -> dict[str, Any]:
        return {"type": self.type, "tools": list(self.tools)}


@dataclass(frozen=True)
class SpendLimit:
    """At most `max_micros` charged through the proxy per session, agent or tenant, over its lifetime
    (a per-session limit caps the session's whole `spent`, since the session's budget is one ledger)."""

    type: ClassVar[str] = "spend_limit"
    max_micros: int
    per: Per

    def spec(self) -> dict[str, Any]:
        return {"type": self.type, "max_usd": format_micros(self.max_micros), "per": self.per}


@dataclass(frozen=True)
class RateLimit:
    """At most `max_calls` admitted calls per session, agent or tenant in each fixed window of
    `window_seconds` aligned to the Unix epoch (so up to twice that many across a window boundary)."""

    type: ClassVar[str] = "rate_limit"
    max_calls: int
    window_seconds: int
    per: Per

    def spec(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "max_calls": self.max_calls,
            "window_seconds": self.window_seconds,
            "per": self.per,
        }


@dataclass(frozen=True)
class TimeWindow:
    """Calls only from `start` to `end` (minutes of the local day, end exclusive) in `timezone`.

    When start > end the window crosses midnight: [start, 24:00) and [00:00, end). `days` name the day
    a window starts on, so a Friday 22:00-06:00 window is open until Saturday 06:00. Local wall-clock
    time decides: on the day clocks spring forward a window inside the skipped hour never opens.
    """

    type: ClassVar[str] = "time_window"
    start: int
    end: int
    timezone: str
    days: tuple[int, ...]  # 0 = Monday

    def is_open(self, now: datetime) -> bool:
        local = now.astimezone(ZoneInfo(self.timezone))
        second = local.hour * 3600 + local.minute * 60 + local.second  # end exclusive: 16:59:59.9 < 17:00
        start, end, weekday = self.start * 60, self.end * 60, local.weekday()
        if start < end:
            return weekday in self.days and start <= second < end
        before_midnight = weekday in self.days and second >= start
        after_midnight = (weekday - 1) % 7 in self.days and second < end
        return before_midnight or after_midnight

    def describe(self) -> str:
        days = ",".join(DAYS[day] for day in self.days)
        return f"{_hhmm(self.start)}-{_hhmm(self.end)} {self.timezone} on {days}"

    def spec(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "allowed_hours": {"start": _hhmm(self.start), "end": _hhmm(self.end)},
            "timezone": self.timezone,
            "days": [DAYS[day] for day in self.days],
        }


@dataclass(frozen=True)
class ArgumentRule:
    """Checks on one top-level argument; every check given must pass.

    `pattern` uses `re.search`, so it matches anywhere unless anchored: `^/tmp/` means "starts with
    /tmp/". Anchor the end with `\\Z` rather than `$`, which also matches before a trailing newline.
    A missing argument fails unless `optional`; a value of the wrong type for a check fails.
    """

    argument: str
    optional: bool = False
    pattern: str | None = None
    max: int | float | None = None
    min: int | float | None = None
    one_of: tuple[Any, ...] | None = None
    equals: Any = None
    has_equals: bool = False
    max_length: int | None = None

    def check(self, arguments: Mapping[str, Any]) -> str | None:
        """Why the arguments fail this rule, or None."""
        if self.argument not in arguments:
            return None if self.optional else f"argument '{self.argument}' is required"
        value = arguments[self.argument]
        for check in (self._pattern, self._bounds, self._choices, self._length):
            reason = check(value)
            if reason is not None:
                return reason
        return None

    def _pattern(self, value: Any) -> str | None:
        if self.pattern is None:
            return None
        if not isinstance(value, str):
            return f"argument '{self.argument}' must be a string to match a pattern"
        if len(value) > MAX_MATCHED_LENGTH or _compile(self.pattern).search(value) is None:
            return f"argument '{self.argument}' does not match pattern {self.pattern!r}"
        return None

    def _bounds(self, value: Any) -> str | None:
        if self.max is None and self.min is None:
            return None
        if not _is_number(value):
            return f"argument '{self.argument}' must be a number"
        number = _decimal(value)
        if self.max is not None and number > _decimal(self.max):
            return f"argument '{self.argument}' is {value}, more than the maximum {self.max}"
        if self.min is not None and number < _decimal(self.min):
            return f"argument '{self.argument}' is {value}, less than the minimum {self.min}"
        return None

    def _choices(self, value: Any) -> str | None:
        canonical = _canonical(value)
        if self.has_equals and canonical != _canonical(self.equals):
            return f"argument '{self.argument}' must equal {_canonical(self.equals).decode()}"
        if self.one_of is not None and canonical not in {_canonical(choice) for choice in self.one_of}:
            shown = [_canonical(choice).decode() for choice in self.one_of]
            return f"argument '{self.argument}' must be one of [{', '.join(shown)}]"
        return None

    def _length(self, value: Any) -> str | None:
        if self.max_length is None:
            return None
        if not isinstance(value, str):
            return f"argument '{self.argument}' must be a string"
        if len(value) > self.max_length:
            return f"argument '{self.argument}' is {len(value)} characters, more than {self.max_length}"
        return None

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"argument": self.argument}
        if self.optional:
            spec["optional"] = True
        for name in ("pattern", "max", "min", "max_length"):
            if getattr(self, name) is not None:
                spec[name] = getattr(self, name)
        if self.one_of is not None:
            spec["one_of"] = list(self.one_of)
        if self.has_equals:
            spec["equals"] = self.equals
        return spec


@dataclass(frozen=True)
class ArgumentRules:
    type: ClassVar[str] = "arguments"
    tool: str
    rules: tuple[ArgumentRule, ...]

    def spec(self) -> dict[str, Any]:
        return {"type": self.type, "tool": self.tool, "rules": [rule.spec() for rule in self.rules]}


@dataclass(frozen=True)
class ToolCost:
    """What one admitted call of `tool` costs, charged to the session's budget and spend limits."""

    type: ClassVar[str] = "tool_cost"
    tool: str
    cost_micros: int

    def spec(self) -> dict[str, Any]:
        return {"type": self.type, "tool": self.tool, "cost_usd": format_micros(self.cost_micros)}


Rule = ToolList | SpendLimit | RateLimit | TimeWindow | ArgumentRules | ToolCost


@dataclass(frozen=True)
class Policy:
    """A stored policy: its id, its parsed rule and when it was created."""

    policy_id: str
    rule: Rule
    created_at: datetime

    @property
    def type(self) -> str:
        return self.rule.type

    @property
    def spec(self) -> dict[str, Any]:
        """The normalised spec, as the API shows it and the store keeps it."""
        return self.rule.spec()


@dataclass(frozen=True)
class CallLimits:
    """What the store applies to a call after the policies passed, and which policies governed it."""

    policy_ids: tuple[str, ...]
    rate_limits: tuple[tuple[str, RateLimit], ...]
    spend_limits: tuple[tuple[str, SpendLimit], ...]
    cost_micros: int

    def session_cap(self) -> tuple[int, str] | None:
        """The lowest per-session spend limit and its policy id: a cap on the session's `spent`."""
        caps = [(limit.max_micros, pid) for pid, limit in self.spend_limits if limit.per == "session"]
        return min(caps) if caps else None


# parsing

# The policy types `parse_policy` reads (its parsers' keys), for the documents that describe them.
POLICY_TYPES = ("allow", "arguments", "deny", "rate_limit", "spend_limit", "time_window", "tool_cost")


def parse_policy(spec: Any) -> Rule:
    """The rule of a policy spec; anything malformed raises `InvalidRequest` naming the field."""
    if not isinstance(spec, dict):
        raise InvalidRequest(f"a policy must be a JSON object, got {type(spec).__name__}", field="spec")
    kind = spec.get("type")
    parsers: dict[str, Callable[[dict[str, Any]], Rule]] = {
        "allow": _tool_list,
        "deny": _tool_list,
        "spend_limit": _spend_limit,
        "rate_limit": _rate_limit,
        "time_window": _time_window,
        "arguments": _arguments,
        "tool_cost": _tool_cost,
    }
    parser = parsers.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise InvalidRequest(f"type must be one of {sorted(parsers)}, got {kind!r}", field="type")
    return parser(spec)


def _tool_list(spec: dict[str, Any]) -> ToolList:
    _only(spec, {"type", "tools"})
    tools = spec.get("tools")
    if not isinstance(tools, list) or not 1 <= len(tools) <= MAX_TOOLS:
        raise InvalidRequest(f"tools must be a list of 1 to {MAX_TOOLS} tool names", field="tools")
    return ToolList(spec["type"], tuple(dict.fromkeys(_tool_name(tool, field="tools") for tool in tools)))


def _spend_limit(spec: dict[str, Any]) -> SpendLimit:
    _only(spec, {"type", "max_usd", "per"})
    return SpendLimit(_usd(spec.get("max_usd"), field="max_usd"), _per(spec))


def _rate_limit(spec: dict[str, Any]) -> RateLimit:
    _only(spec, {"type", "max_calls", "window_seconds", "per"})
    return RateLimit(
        _whole(spec.get("max_calls"), field="max_calls", high=MAX_CALLS),
        _whole(spec.get("window_seconds"), field="window_seconds", high=MAX_WINDOW_SECONDS),
        _per(spec),
    )


def _time_window(spec: dict[str, Any]) -> TimeWindow:
    _only(spec, {"type", "allowed_hours", "timezone", "days"})
    hours = spec.get("allowed_hours")
    if not isinstance(hours, dict) or set(hours) != {"start", "end"}:
        raise InvalidRequest(
            'allowed_hours must be {"start": "HH:MM", "end": "HH:MM"}', field="allowed_hours"
        )
    start = _minutes(hours["start"], field="allowed_hours.start")
    end = _minutes(hours["end"], field="allowed_hours.end")
    if start == end or start == 24 * 60:
        raise InvalidRequest(
            "allowed_hours.start must differ from end and come before 24:00 (all day needs no time window)",
            field="allowed_hours",
        )
    zone = spec.get("timezone", "UTC")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidRequest(
            f"timezone must be an IANA zone such as 'America/New_York', got {zone!r}", field="timezone"
        ) from None
    days = spec.get("days", list(DAYS))
    if not isinstance(days, list) or not days or any(day not in DAYS for day in days):
        raise InvalidRequest(f"days must be a non-empty list of {list(DAYS)}", field="days")
    return TimeWindow(start, end, zone, tuple(sorted({DAYS.index(day) for day in days})))


def _arguments(spec: dict[str, Any]) -> ArgumentRules:
    _only(spec, {"type", "tool", "rules"})
    rules = spec.get("rules")
    if not isinstance(rules, list) or not 1 <= len(rules) <= MAX_RULES:
        raise InvalidRequest(f"rules must be a list of 1 to {MAX_RULES} argument rules", field="rules")
    parsed = tuple(_argument_rule(rule, field=f"rules[{i}]") for i, rule in enumerate(rules))
    return ArgumentRules(_tool_name(spec.get("tool"), field="tool"), parsed)


def _argument_rule(spec: Any, *, field: str) -> ArgumentRule:
    if not isinstance(spec, dict):
        raise InvalidRequest(f"{field} must be a JSON object", field=field)
    _only(spec, {"argument", "optional", *_CHECKS}, where=field)
    argument = spec.get("argument")
    if not isinstance(argument, str) or not 1 <= len(argument) <= MAX_TOOL_NAME:
        raise InvalidRequest(f"{field}.argument must be an argument name", field=f"{field}.argument")
    if not any(check in spec for check in _CHECKS):
        raise InvalidRequest(f"{field} needs at least one of {list(_CHECKS)}", field=field)
    optional = spec.get("optional", False)
    if not isinstance(optional, bool):
        raise InvalidRequest(f"{field}.optional must be true or false", field=f"{field}.optional")
    pattern = spec.get("pattern")
    if pattern is not None:
        _safe_pattern(pattern, field=f"{field}.pattern")
    one_of = spec.get("one_of")
    if one_of is not None and (not isinstance(one_of, list) or not 1 <= len(one_of) <= MAX_TOOLS):
        raise InvalidRequest(f"{field}.one_of must be a list of 1 to {MAX_TOOLS} values", field=field)
    for value in [*(one_of or []), spec.get("equals")]:
        _json_value(value, field=field)
    max_length = spec.get("max_length")
    if max_length is not None:
        max_length = _whole(max_length, field=f"{field}.max_length", high=10**9, low=0)
    return ArgumentRule(
        argument=argument,
        optional=optional,
        pattern=pattern,
        max=_limit(spec.get("max"), field=f"{field}.max"),
        min=_limit(spec.get("min"), field=f"{field}.min"),
        one_of=None if one_of is None else tuple(one_of),
        equals=spec.get("equals"),
        has_equals="equals" in spec,
        max_length=max_length,
    )


def _tool_cost(spec: dict[str, Any]) -> ToolCost:
    _only(spec, {"type", "tool", "cost_usd"})
    return ToolCost(_tool_name(spec.get("tool"), field="tool"), _usd(spec.get("cost_usd"), field="cost_usd"))


def _only(spec: dict[str, Any], allowed: set[str], *, where: str = "policy") -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise InvalidRequest(
            f"{where} has unknown field(s) {unknown}; allowed: {sorted(allowed)}", field=unknown[0]
        )


def _tool_name(value: Any, *, field: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TOOL_NAME or not value.isprintable():
        raise InvalidRequest(f"{field} must hold tool names of 1 to {MAX_TOOL_NAME} characters", field=field)
    if "*" in value[:-1]:
        raise InvalidRequest(
            f"{field}: '*' may only end a tool name (a prefix match), got {value!r}", field=field
        )
    return value


def _usd(value: Any, *, field: str) -> int:
    """Micro-units of an amount given as a JSON number or a decimal string.

    A JSON number arrives as a float; its shortest text (`str`) is the number as written, so 50.0 and
    0.05 convert exactly, never through binary float arithmetic.
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequest(f"{field} must be a finite amount", field=field)
        value = str(value)
    if value is None:
        raise InvalidRequest(f"{field} is required", field=field)
    return to_micros(value, field=field)


def _per(spec: dict[str, Any]) -> Per:
    per = spec.get("per", "session")
    if per not in PERS:
        raise InvalidRequest(f"per must be one of {list(PERS)}, got {per!r}", field="per")
    return per  # type: ignore[no-any-return]  # checked against PERS just above


def _whole(value: Any, *, field: str, high: int, low: int = 1) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(
            f"{field} must be a whole number from {low} to {high}, got {value!r}", field=field
        )
    return value


def _limit(value: Any, *, field: str) -> int | float | None:
    if value is not None and (not _is_number(value) or not math.isfinite(value)):
        raise InvalidRequest(f"{field} must be a finite number, got {value!r}", field=field)
    return value  # type: ignore[no-any-return]  # checked above


def _minutes(value: Any, *, field: str) -> int:
    match = _HHMM.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidRequest(f"{field} must be 'HH:MM' (00:00 to 24:00), got {value!r}", field=field)
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def _json_value(value: Any, *, field: str) -> None:
    try:
        _canonical(value)
    except (rfc8785.CanonicalizationError, ValueError, TypeError, RecursionError):
        raise InvalidRequest(f"{field} must hold plain JSON values", field=field) from None


def _safe_pattern(pattern: Any, *, field: str) -> None:
    """Compile a pattern whose matching cost stays bounded, or raise `InvalidRequest`.

    Python's regex engine backtracks: a quantifier over a group that itself holds a quantifier or an
    alternation (`(a+)+`, `(a|a)*`) can take exponential time, and backreferences defeat any bound.
    Such patterns are refused; with at most 200 pattern characters and 1024 matched characters, what
    remains is polynomial at worst.
    """
    if not isinstance(pattern, str) or not 1 <= len(pattern) <= MAX_PATTERN_LENGTH:
        raise InvalidRequest(f"{field} must be a regex of 1 to {MAX_PATTERN_LENGTH} characters", field=field)
    try:
        parsed = _sre.parse(pattern)
    except re.error as exc:
        raise InvalidRequest(f"{field} is not a valid regex: {exc}", field=field) from None
    problem = _backtracking_risk(parsed, inside_repeat=False)
    if problem is not None:
        raise InvalidRequest(f"{field} is refused: {problem}; use character classes instead", field=field)


def _backtracking_risk(items: Any, *, inside_repeat: bool) -> str | None:
    for op, value in items:
        name = str(op)
        if name in ("GROUPREF", "GROUPREF_EXISTS"):
            return "backreferences are not allowed"
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            if inside_repeat:
                return "a quantified group may not contain another quantifier"
            found = _backtracking_risk(value[2], inside_repeat=value[1] > 1)
        elif name == "BRANCH":
            if inside_repeat:
                return "a quantified group may not contain an alternation ('|')"
            found = _first(_backtracking_risk(branch, inside_repeat=False) for branch in value[1])
        elif name == "SUBPATTERN":
            found = _backtracking_risk(value[3], inside_repeat=inside_repeat)
        elif name in ("ASSERT", "ASSERT_NOT"):
            found = _backtracking_risk(value[1], inside_repeat=inside_repeat)
        elif name == "ATOMIC_GROUP":
            found = _backtracking_risk(value, inside_repeat=inside_repeat)
        else:
            found = None
        if found is not None:
            return found
    return None


def _first(reasons: Any) -> str | None:
    return next((reason for reason in reasons if reason is not None), None)


# judging a call


def check_call(
    policies: Sequence[Policy], *, tool: ToolRef, arguments: Mapping[str, Any], now: datetime
) -> Refusal | None:
    """Why the policies refuse this call, in the fixed order deny, allow, arguments, time window; or
    None when they let it through to the rate and spend limits."""
    for check in (_deny, _allow, _argument_rules, _time_windows):
        refusal = check(policies, tool, arguments, now)
        if refusal is not None:
            return refusal
    return None


def _deny(policies: Sequence[Policy], tool: ToolRef, _a: Mapping[str, Any], _n: datetime) -> Refusal | None:
    for policy in policies:
        rule = policy.rule
        if isinstance(rule, ToolList) and rule.type == "deny" and rule.names_any(tool.all_names()):
            return Refusal(ToolDenied, f"Tool '{tool.exposed}' is on the deny list", policy.policy_id)
    return None


def _allow(policies: Sequence[Policy], tool: ToolRef, _a: Mapping[str, Any], _n: datetime) -> Refusal | None:
    lists = [(p, p.rule) for p in policies if isinstance(p.rule, ToolList) and p.rule.type == "allow"]
    if not lists or any(rule.names_any(tool.precise_names()) for _, rule in lists):
        return None
    ids = ", ".join(p.policy_id for p, _ in lists)
    return Refusal(
        NotAllowed, f"Tool '{tool.exposed}' is not on the allow list ({ids})", lists[0][0].policy_id
    )


def _argument_rules(
    policies: Sequence[Policy], tool: ToolRef, arguments: Mapping[str, Any], _n: datetime
) -> Refusal | None:
    for policy in policies:
        rule = policy.rule
        if not isinstance(rule, ArgumentRules) or not _names(rule.tool, tool.all_names()):
            continue
        for check in rule.rules:
            reason = check.check(arguments)
            if reason is not None:
                return Refusal(ArgumentRejected, f"Tool '{tool.exposed}': {reason}", policy.policy_id)
    return None


def _time_windows(
    policies: Sequence[Policy], tool: ToolRef, _a: Mapping[str, Any], now: datetime
) -> Refusal | None:
    for policy in policies:
        rule = policy.rule
        if isinstance(rule, TimeWindow) and not rule.is_open(now):
            local = now.astimezone(ZoneInfo(rule.timezone))
            reason = (
                f"Tool '{tool.exposed}' may be called only {rule.describe()}; it is "
                f"{local:%H:%M} {DAYS[local.weekday()]} there"
            )
            return Refusal(OutsideTimeWindow, reason, policy.policy_id)
    return None


def limits_for(policies: Sequence[Policy], *, tool: ToolRef) -> CallLimits:
    """The rate limits, spend limits and cost that apply to an admitted call of `tool`, and the ids of
    every policy that governed it. With several tool_cost policies for a tool, the highest cost applies."""
    applied: list[str] = []
    rates: list[tuple[str, RateLimit]] = []
    spends: list[tuple[str, SpendLimit]] = []
    cost = 0
    for policy in policies:
        rule = policy.rule
        if isinstance(rule, RateLimit):
            rates.append((policy.policy_id, rule))
        elif isinstance(rule, SpendLimit):
            spends.append((policy.policy_id, rule))
        elif isinstance(rule, ToolCost) and _names(rule.tool, tool.all_names()):
            cost = max(cost, rule.cost_micros)
        elif not _governs(rule, tool):
            continue
        applied.append(policy.policy_id)
    return CallLimits(tuple(applied), tuple(rates), tuple(spends), cost)


def _governs(rule: Rule, tool: ToolRef) -> bool:
    if isinstance(rule, ToolList):
        return rule.names_any(tool.all_names() if rule.type == "deny" else tool.precise_names())
    if isinstance(rule, ArgumentRules):
        return _names(rule.tool, tool.all_names())
    return isinstance(rule, TimeWindow)


def window_start(now: datetime, window_seconds: int) -> datetime:
    """The start of the fixed rate-limit window holding `now`, windows aligned to the Unix epoch."""
    elapsed = int((now - _EPOCH) // timedelta(seconds=1))
    return _EPOCH + timedelta(seconds=elapsed - elapsed % window_seconds)


def retry_after(now: datetime, window_seconds: int) -> int:
    """Whole seconds (at least 1) until the window holding `now` ends."""
    ends = window_start(now, window_seconds) + timedelta(seconds=window_seconds)
    return max(1, math.ceil((ends - now) / timedelta(seconds=1)))


def _matches(pattern: str, name: str) -> bool:
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return pattern == name


def _names(pattern: str, names: Sequence[str]) -> bool:
    return any(_matches(pattern, name) for name in names)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _decimal(value: int | float) -> Decimal:
    """A JSON number as a Decimal: a float through its shortest text, so 0.1 compares equal to 0.1."""
    return Decimal(str(value)) if isinstance(value, float) else Decimal(value)


_compile = functools.lru_cache(maxsize=1024)(re.compile)  # patterns were checked when the policy was parsed


def _canonical(value: Any) -> bytes:
    """RFC 8785 bytes: JSON equality, where 1 equals 1.0 but never `true`."""
    return rfc8785.dumps(value)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
