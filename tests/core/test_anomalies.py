"""Anomaly detection: each built-in detector and rule type, their boundaries, and rule validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from statistics import median
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haldir.core.anomalies import (
    BURST_MAX_ACTIONS,
    FLAGGED_EVENT,
    MAX_RULE_CALLS,
    SPIKE_BASELINE_ENTRIES,
    Candidate,
    Condition,
    CostOver,
    OutsideHours,
    RateOver,
    RecentEntry,
    Rule,
    ToolMatch,
    detect,
    flagged_event,
    lookback,
    parse_condition,
    parse_settings,
)
from haldir.core.money import format_micros
from haldir.errors import InvalidRequest

NOW = datetime(2026, 4, 5, 19, 0, tzinfo=UTC)
USD = 1_000_000


HOURS = {"timezone": "Europe/Berlin", "start": "08:00", "end": "18:00"}


def candidate(
    *, cost: int = 0, status: str = "ok", tool: str = "stripe", session: str | None = "ses_1"
) -> Candidate:
    return Candidate(
        session_id=session, tool=tool, action="call", status=status, cost_micros=cost, timestamp=NOW
    )


def past(seconds_ago: float, *, cost: int = 0, status: str = "ok", tool: str = "stripe") -> RecentEntry:
    return RecentEntry(
        timestamp=NOW - timedelta(seconds=seconds_ago), cost_micros=cost, status=status, tool=tool
    )


def costs(*amounts: int) -> list[RecentEntry]:
    """Entries an hour or more ago (outside every time window), newest first, costing `amounts` micros."""
    return [past(3600 + i, cost=amount) for i, amount in enumerate(amounts)]


def rule(condition: Condition, rule_id: str = "rul_1") -> Rule:
    return Rule(rule_id=rule_id, condition=condition, created_at=NOW)


# built-in: cost spike


def test_a_cost_far_above_the_sessions_median_is_flagged_with_the_ratio() -> None:
    reason = detect(candidate(cost=500 * USD), costs(10 * USD, 10 * USD, 10 * USD), [], NOW)
    assert reason == "cost 500.00 USD is 50x this session's median of 10.00 USD"


def test_a_cost_spike_needs_three_earlier_costed_entries() -> None:
    assert detect(candidate(cost=500 * USD), costs(10 * USD, 10 * USD), [], NOW) is None
    assert detect(candidate(cost=500 * USD), costs(10 * USD, 0, 10 * USD, 0, 0), [], NOW) is None


def test_a_cost_of_exactly_ten_times_the_median_is_not_a_spike() -> None:
    history = costs(2 * USD, 2 * USD, 2 * USD)
    assert detect(candidate(cost=20 * USD), history, [], NOW) is None
    assert detect(candidate(cost=20 * USD + 1), history, [], NOW) == (
        "cost 20.000001 USD is 10x this session's median of 2.00 USD"
    )


def test_costs_of_one_dollar_or_less_are_never_spikes() -> None:
    history = costs(1, 1, 1)
    assert detect(candidate(cost=USD), history, [], NOW) is None
    assert detect(candidate(cost=USD + 1), history, [], NOW) is not None


def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    reason = detect(candidate(cost=51 * USD), costs(2 * USD, 4 * USD, 6 * USD, 8 * USD), [], NOW)
    assert reason == "cost 51.00 USD is 10.2x this session's median of 5.00 USD"


def test_the_baseline_is_the_last_twenty_costed_entries() -> None:
    recent = [*costs(*[100 * USD] * SPIKE_BASELINE_ENTRIES), *costs(*[USD] * 10)]
    assert detect(candidate(cost=900 * USD), recent, [], NOW) is None
    assert detect(candidate(cost=900 * USD), costs(*[USD] * 10, *[100 * USD] * 20), [], NOW) is not None


@given(
    history=st.lists(st.integers(min_value=0, max_value=10**12), max_size=40),
    cost=st.integers(min_value=0, max_value=10**15),
)
def test_a_spike_is_flagged_exactly_when_the_documented_condition_holds(
    history: list[int], cost: int
) -> None:
    costed = [amount for amount in history if amount > 0][:SPIKE_BASELINE_ENTRIES]
    expected = cost > USD and len(costed) >= 3 and cost > 10 * Fraction(median(costed) if costed else 0)
    reason = detect(candidate(cost=cost), costs(*history), [], NOW)
    assert (reason is not None) == expected
    if expected:
        assert reason is not None
        assert reason.startswith(f"cost {format_micros(cost)} USD is ")
        assert "x this session's median of " in reason


@given(
    history=st.lists(st.integers(min_value=1, max_value=10**9), min_size=3, max_size=20),
    cost=st.integers(min_value=0, max_value=10**12),
    more=st.integers(min_value=1, max_value=10**12),
)
def test_a_higher_cost_is_flagged_whenever_a_lower_one_is(history: list[int], cost: int, more: int) -> None:
    if detect(candidate(cost=cost), costs(*history), [], NOW) is not None:
        assert detect(candidate(cost=cost + more), costs(*history), [], NOW) is not None


# built-in: burst


def test_the_sixty_first_action_within_twenty_seconds_is_a_burst() -> None:
    sixty = [past(i / 4) for i in range(BURST_MAX_ACTIONS)]
    assert detect(candidate(), sixty[:-1], [], NOW) is None
    assert detect(candidate(), sixty, [], NOW) == "burst: 61 actions in 20 s by this session"


def test_one_governed_call_a_second_is_not_a_burst() -> None:
    # Each call appends its admission and its outcome: two entries a second, sustained for minutes.
    steady = [past(0), *(past(1 + i // 2) for i in range(2 * 300))]
    assert detect(candidate(), steady, [], NOW) is None
    assert detect(candidate(), [past(0.5 * i // 2) for i in range(100)], [], NOW) is not None  # twice that


def test_an_action_exactly_twenty_seconds_ago_is_outside_the_burst_window() -> None:
    recent = [*(past(i / 3) for i in range(59)), past(20)]
    assert detect(candidate(), recent, [], NOW) is None
    recent = [*(past(i / 3) for i in range(59)), past(19.999999)]
    assert detect(candidate(), recent, [], NOW) is not None


def test_a_burst_beyond_the_entries_looked_at_is_reported_as_a_lower_bound() -> None:
    recent = [past(i / 10) for i in range(lookback([]))]
    assert detect(candidate(), recent, [], NOW) == "burst: at least 62 actions in 20 s by this session"


@given(ages=st.lists(st.integers(min_value=0, max_value=120), max_size=60))
def test_a_burst_is_counted_exactly_from_a_short_history(ages: list[int]) -> None:
    recent = [past(age / 4) for age in sorted(ages)]
    actions = 1 + sum(1 for age in ages if age / 4 < 20)
    reason = detect(candidate(), recent, [], NOW)
    assert reason == (f"burst: {actions} actions in 20 s by this session" if actions > 60 else None)


# built-in: repeated denials


def test_a_third_denial_within_ten_minutes_is_flagged() -> None:
    denials = [past(30, status="denied"), past(300, status="denied")]
    assert detect(candidate(status="denied"), denials[:1], [], NOW) is None
    assert detect(candidate(status="denied"), denials, [], NOW) == "3 denials in 10 minutes for this session"


def test_only_a_denial_is_flagged_for_earlier_denials() -> None:
    denials = [past(i, status="denied") for i in range(5)]
    assert detect(candidate(status="ok"), denials, [], NOW) is None
    assert detect(candidate(status="error"), denials, [], NOW) is None


def test_denials_ten_minutes_ago_or_earlier_do_not_count() -> None:
    old = [past(5, status="denied"), past(600, status="denied"), past(601, status="ok")]
    assert detect(candidate(status="denied"), old, [], NOW) is None
    recent = [past(5, status="denied"), past(599, status="denied"), past(10, status="ok")]
    assert detect(candidate(status="denied"), recent, [], NOW) == "3 denials in 10 minutes for this session"


# tenant rules


def test_a_cost_over_rule_flags_costs_strictly_above_its_limit() -> None:
    rules = [rule(CostOver(100 * USD), "rul_cost")]
    assert detect(candidate(cost=100 * USD), [], rules, NOW) is None
    assert detect(candidate(cost=100 * USD + 1), [], rules, NOW) == (
        "rule rul_cost: cost 100.000001 USD is over 100.00 USD"
    )


def test_a_rate_over_rule_counts_the_sessions_actions_in_its_window() -> None:
    rules = [rule(RateOver(max_calls=5, window_seconds=300), "rul_rate")]
    assert detect(candidate(), [past(i * 10) for i in range(4)], rules, NOW) is None
    assert detect(candidate(), [*(past(i * 10) for i in range(4)), past(300)], rules, NOW) is None
    assert detect(candidate(), [past(i * 10) for i in range(5)], rules, NOW) == (
        "rule rul_rate: 6 actions in 300 s by this session, over the limit of 5"
    )


def test_a_rate_over_rule_widens_the_lookback() -> None:
    assert lookback([]) == BURST_MAX_ACTIONS + 1
    assert lookback([rule(RateOver(max_calls=500, window_seconds=3600))]) == 501
    assert lookback([rule(RateOver(max_calls=3, window_seconds=3600))]) == BURST_MAX_ACTIONS + 1


@pytest.mark.parametrize(
    ("pattern", "tool", "matches"),
    [
        ("delete_*", "delete_database", True),
        ("delete_*", "undelete_database", False),
        ("delete_*", "Delete_database", False),
        ("stripe", "stripe", True),
        ("stripe", "stripe2", False),
        ("*.charge", "stripe.charge", True),
        ("db_[ab]", "db_b", True),
    ],
)
def test_a_tool_match_rule_matches_globs_and_exact_names_case_sensitively(
    pattern: str, tool: str, matches: bool
) -> None:
    reason = detect(candidate(tool=tool), [], [rule(ToolMatch(pattern), "rul_tool")], NOW)
    assert reason == (f"rule rul_tool: tool {tool!r} matches {pattern!r}" if matches else None)


def test_every_reason_is_given_joined_built_ins_first_then_rules_in_order() -> None:
    rules = [rule(ToolMatch("delete_*"), "rul_a"), rule(CostOver(USD), "rul_b")]
    reason = detect(
        candidate(cost=500 * USD, tool="delete_database"), costs(10 * USD, 10 * USD, 10 * USD), rules, NOW
    )
    assert reason == (
        "cost 500.00 USD is 50x this session's median of 10.00 USD; "
        "rule rul_a: tool 'delete_database' matches 'delete_*'; "
        "rule rul_b: cost 500.00 USD is over 1.00 USD"
    )


def test_an_entry_without_a_session_meets_only_the_rules_about_itself() -> None:
    rules = [rule(RateOver(max_calls=1, window_seconds=60)), rule(ToolMatch("x"), "rul_x")]
    burst = [past(1, status="denied") for _ in range(40)]
    assert detect(candidate(session=None, status="denied"), burst, rules, NOW) is None
    assert detect(candidate(session=None, tool="x"), burst, rules, NOW) == "rule rul_x: tool 'x' matches 'x'"


@given(
    cost=st.integers(min_value=0, max_value=10**15),
    status=st.sampled_from(["ok", "denied", "error"]),
    tool=st.text(min_size=1, max_size=20),
)
def test_a_first_entry_without_rules_is_never_flagged(cost: int, status: str, tool: str) -> None:
    assert detect(candidate(cost=cost, status=status, tool=tool), [], [], NOW) is None


# rule parameters


@pytest.mark.parametrize(
    ("rule_type", "params", "expected"),
    [
        ("cost_over", {"max_usd": "100"}, CostOver(100 * USD)),
        ("cost_over", {"max_usd": Decimal("0.000001")}, CostOver(1)),
        ("cost_over", {"max_usd": 0}, CostOver(0)),
        ("rate_over", {"max_calls": 1, "window_seconds": 1}, RateOver(1, 1)),
        ("rate_over", {"max_calls": MAX_RULE_CALLS, "window_seconds": 7 * 86400}, RateOver(1000, 604800)),
        ("tool_match", {"pattern": "delete_*"}, ToolMatch("delete_*")),
    ],
)
def test_valid_rule_parameters_parse(rule_type: str, params: dict[str, Any], expected: object) -> None:
    assert parse_condition(rule_type, params) == expected


@pytest.mark.parametrize(
    ("rule_type", "params", "message"),
    [
        (
            "nope",
            {},
            "rule type must be one of ['cost_over', 'outside_hours', 'rate_over', 'tool_match'], got 'nope'",
        ),
        ("cost_over", {}, "a cost_over rule takes max_usd; missing max_usd"),
        ("cost_over", {"max_usd": None}, "missing max_usd"),
        ("cost_over", {"max_usd": "1", "pattern": "x"}, "a cost_over rule takes max_usd; unknown pattern"),
        ("cost_over", {"max_usd": "-1"}, "max_usd must not be negative"),
        ("cost_over", {"max_usd": "ten"}, "max_usd must be a decimal number"),
        ("cost_over", {"max_usd": 1.5}, "max_usd must be a decimal number, got float"),
        ("cost_over", {"max_usd": "0.0000001"}, "max_usd has more than 6 decimal places"),
        ("cost_over", {"max_usd": Decimal("NaN")}, "max_usd must be finite"),
        (
            "rate_over",
            {"max_calls": 5},
            "a rate_over rule takes max_calls, window_seconds; missing window_seconds",
        ),
        (
            "rate_over",
            {"max_calls": 0, "window_seconds": 60},
            "max_calls must be a whole number from 1 to 1000",
        ),
        ("rate_over", {"max_calls": 1001, "window_seconds": 60}, "from 1 to 1000, got 1001"),
        ("rate_over", {"max_calls": True, "window_seconds": 60}, "max_calls must be a whole number"),
        ("rate_over", {"max_calls": "5", "window_seconds": 60}, "got str"),
        ("rate_over", {"max_calls": 5.0, "window_seconds": 60}, "got float"),
        ("rate_over", {"max_calls": 5, "window_seconds": 0}, "window_seconds must be a whole number"),
        ("rate_over", {"max_calls": 5, "window_seconds": 7 * 86400 + 1}, "window_seconds must be"),
        ("tool_match", {}, "missing pattern"),
        ("tool_match", {"pattern": ""}, "pattern must be a tool name or a glob"),
        ("tool_match", {"pattern": "   "}, "pattern must be a tool name or a glob"),
        ("tool_match", {"pattern": "x" * 201}, "1 to 200 characters"),
        ("tool_match", {"pattern": ["x"]}, "pattern must be a tool name or a glob"),
        ("tool_match", {"pattern": "a\nb"}, "pattern must be printable"),
        ("outside_hours", {"timezone": "Europe/Berlin", "start": "08:00"}, "missing end"),
        ("outside_hours", {**HOURS, "timezone": "Mars/Olympus"}, "IANA time zone"),
        ("outside_hours", {**HOURS, "timezone": "../../etc/passwd"}, "IANA time zone"),
        ("outside_hours", {**HOURS, "timezone": 5}, "IANA time zone"),
        ("outside_hours", {**HOURS, "start": "8:00"}, "start must be a local time HH:MM"),
        ("outside_hours", {**HOURS, "end": "24:00"}, "end must be a local time HH:MM"),
        ("outside_hours", {**HOURS, "end": "08:00"}, "start and end must differ"),
        ("outside_hours", {**HOURS, "days": ["monday"]}, "days must be a non-empty list"),
        ("outside_hours", {**HOURS, "days": []}, "days must be a non-empty list"),
        ("outside_hours", {**HOURS, "tools": ""}, "tools must be a tool name or a glob"),
        ("outside_hours", {**HOURS, "hours": 3}, "unknown hours"),
    ],
)
def test_invalid_rule_parameters_are_refused_with_a_clear_message(
    rule_type: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_condition(rule_type, params)
    assert message in caught.value.message


conditions = st.one_of(
    st.builds(CostOver, st.integers(min_value=0, max_value=10**15)),
    st.builds(
        RateOver,
        max_calls=st.integers(min_value=1, max_value=MAX_RULE_CALLS),
        window_seconds=st.integers(min_value=1, max_value=7 * 86400),
    ),
    st.builds(ToolMatch, st.text(min_size=1, max_size=200).filter(lambda t: t.strip() and t.isprintable())),
)


@given(condition=conditions)
def test_a_rule_reads_back_from_the_parameters_it_shows(condition: CostOver | RateOver | ToolMatch) -> None:
    shown = rule(condition)
    assert parse_condition(shown.type, shown.params()) == condition


def test_the_flagged_event_carries_what_a_webhook_receiver_needs() -> None:
    record = {
        "entry_id": "aud_1",
        "tenant_id": "acme",
        "session_id": "ses_1",
        "agent_id": "agent-7",
        "tool": "stripe",
        "action": "charge",
        "status": "ok",
        "cost_usd": "500.00",
        "details": {"secretish": "not copied"},
        "flagged": True,
        "flag_reason": "why",
        "timestamp": "2026-04-05T19:00:00.000000Z",
    }
    assert FLAGGED_EVENT == "audit.flagged"
    assert flagged_event(record, leaf_index=7) == {
        "entry_id": "aud_1",
        "session_id": "ses_1",
        "agent_id": "agent-7",
        "tool": "stripe",
        "action": "charge",
        "status": "ok",
        "cost_usd": "500.00",
        "flag_reason": "why",
        "leaf_index": 7,
        "timestamp": "2026-04-05T19:00:00.000000Z",
    }


# outside_hours


def _at(text: str, zone: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def _judged(condition: Condition, moment: datetime, tool: str = "stripe") -> str | None:
    entry = Candidate("ses_1", tool, "call", "ok", 0, moment)
    return detect(entry, [], [rule(condition)], moment)


def test_an_entry_outside_the_tenants_hours_in_its_time_zone_is_flagged() -> None:
    office = parse_condition("outside_hours", {**HOURS, "days": ["mon", "tue", "wed", "thu", "fri"]})
    assert _judged(office, _at("2026-04-07T09:30", "Europe/Berlin")) is None  # a Tuesday morning
    assert _judged(office, _at("2026-04-07T07:59", "Europe/Berlin")) == (
        "rule rul_1: tool 'stripe' used at Tue 07:59 Europe/Berlin, outside normal hours 08:00-18:00 "
        "mon,tue,wed,thu,fri"
    )
    assert _judged(office, _at("2026-04-07T18:00", "Europe/Berlin")) is not None  # the end is excluded
    assert _judged(office, _at("2026-04-11T10:00", "Europe/Berlin")) is not None  # a Saturday
    # 07:30 UTC is 09:30 in Berlin (summer time): inside, though outside 08:00-18:00 UTC would say so too.
    assert _judged(office, datetime(2026, 4, 7, 6, 30, tzinfo=UTC)) is None


def test_an_overnight_window_belongs_to_the_day_it_starts() -> None:
    night = parse_condition(
        "outside_hours", {"timezone": "Asia/Tokyo", "start": "22:00", "end": "06:00", "days": ["fri"]}
    )
    assert _judged(night, _at("2026-04-10T23:00", "Asia/Tokyo")) is None  # Friday night
    assert _judged(night, _at("2026-04-11T05:59", "Asia/Tokyo")) is None  # Saturday, before 06:00
    assert _judged(night, _at("2026-04-11T06:00", "Asia/Tokyo")) is not None
    assert _judged(night, _at("2026-04-11T23:00", "Asia/Tokyo")) is not None  # Saturday night
    assert _judged(night, _at("2026-04-10T03:00", "Asia/Tokyo")) is not None  # Thursday's night


def test_a_tools_glob_limits_what_the_hours_judge() -> None:
    rule_ = parse_condition("outside_hours", {**HOURS, "tools": "payments_*"})
    late = _at("2026-04-07T23:00", "Europe/Berlin")
    assert _judged(rule_, late, tool="search") is None
    assert _judged(rule_, late, tool="payments_refund") is not None


def test_the_hours_follow_the_zone_across_daylight_saving_changes() -> None:
    office = parse_condition(
        "outside_hours", {"timezone": "America/New_York", "start": "09:00", "end": "17:00"}
    )
    # 13:30 UTC is 08:30 EST (outside) before the change on 2026-03-08, 09:30 EDT (inside) after it.
    assert _judged(office, datetime(2026, 3, 6, 13, 30, tzinfo=UTC)) is not None
    assert _judged(office, datetime(2026, 3, 9, 13, 30, tzinfo=UTC)) is None
    # The change itself happens at 02:00 local, outside the hours: the hour that does not exist is outside.
    assert _judged(office, datetime(2026, 3, 8, 7, 30, tzinfo=UTC)) is not None


@given(
    moment=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
    ),
    zone=st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]),
    start=st.integers(min_value=0, max_value=23 * 60 + 59),
    end=st.integers(min_value=0, max_value=23 * 60 + 59),
)
def test_an_entry_is_inside_exactly_when_its_local_wall_clock_is(
    moment: datetime, zone: str, start: int, end: int
) -> None:
    if start == end:
        return
    params = {
        "timezone": zone,
        "start": f"{start // 60:02}:{start % 60:02}",
        "end": f"{end // 60:02}:{end % 60:02}",
    }
    condition = parse_condition("outside_hours", params)
    assert isinstance(condition, OutsideHours)
    local = moment.astimezone(ZoneInfo(zone))
    minute = local.hour * 60 + local.minute
    inside = start <= minute < end if start < end else minute >= start or minute < end
    assert condition.inside(moment) == inside
    assert (_judged(condition, moment) is None) == inside


def test_outside_hours_parameters_round_trip() -> None:
    condition = parse_condition("outside_hours", {**HOURS, "days": ["fri", "mon"], "tools": "x*"})
    assert condition.params() == {**HOURS, "days": ["mon", "fri"], "tools": "x*"}
    assert parse_condition("outside_hours", condition.params()) == condition


# settings of the built-in detectors


def test_a_tenants_burst_threshold_replaces_the_default() -> None:
    settings = parse_settings({"burst_max_actions": 5, "burst_window_seconds": 10})
    five = [past(i) for i in range(5)]
    assert detect(candidate(), five[:-1], [], NOW, settings) is None
    assert detect(candidate(), five, [], NOW, settings) == "burst: 6 actions in 10 s by this session"
    assert lookback([], parse_settings({"burst_max_actions": 500})) == 501


def test_the_burst_detector_can_be_turned_off() -> None:
    off = parse_settings({"burst_enabled": False})
    assert off.burst_max_actions is None
    many = [past(i / 100) for i in range(200)]
    assert detect(candidate(), many, [], NOW, off) is None
    assert detect(candidate(), many, [], NOW) is not None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"burst_max_actions": 0}, "burst_max_actions must be a whole number from 1 to 1000"),
        ({"burst_max_actions": 1001}, "from 1 to 1000"),
        ({"burst_window_seconds": 0}, "burst_window_seconds must be"),
        ({"burst_enabled": "no"}, "burst_enabled must be true or false"),
        ({"burst": 3}, "unknown anomaly settings: burst"),
    ],
)
def test_invalid_anomaly_settings_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_settings(params)
    assert message in caught.value.message
