"""Policy specs parse into rules, and a call is judged against them in a fixed order, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from haldir.core.policies import (
    POLICY_TYPES,
    Policy,
    RateLimit,
    SpendLimit,
    TimeWindow,
    ToolRef,
    check_call,
    limits_for,
    parse_policy,
    retry_after,
    window_start,
)
from haldir.errors import (
    ArgumentRejected,
    InvalidAmount,
    InvalidRequest,
    NotAllowed,
    OutsideTimeWindow,
    ToolDenied,
)

NOON_UTC = datetime(2026, 4, 6, 12, 0, tzinfo=UTC)  # a Monday
SEARCH = ToolRef("search", "web", "search")


def _policies(*specs: dict[str, Any]) -> list[Policy]:
    return [Policy(f"pol_{i}", parse_policy(spec), NOON_UTC) for i, spec in enumerate(specs)]


def _check(
    specs: list[dict[str, Any]],
    *,
    tool: ToolRef = SEARCH,
    arguments: dict[str, Any] | None = None,
    now: datetime = NOON_UTC,
) -> Any:
    return check_call(_policies(*specs), tool=tool, arguments=arguments or {}, now=now)


# parsing


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "allow", "tools": ["search", "github_*"]},
        {"type": "deny", "tools": ["delete_database"]},
        {"type": "spend_limit", "max_usd": "50.00", "per": "agent"},
        {"type": "rate_limit", "max_calls": 100, "window_seconds": 3600, "per": "tenant"},
        {
            "type": "time_window",
            "allowed_hours": {"start": "09:00", "end": "17:00"},
            "timezone": "America/New_York",
            "days": ["mon", "tue"],
        },
        {"type": "arguments", "tool": "read_file", "rules": [{"argument": "path", "pattern": "^/tmp/"}]},
        {"type": "tool_cost", "tool": "search", "cost_usd": "0.05"},
    ],
)
def test_a_normalised_spec_parses_back_to_the_same_rule(spec: dict[str, Any]) -> None:
    rule = parse_policy(spec)
    assert rule.spec() == spec
    assert parse_policy(rule.spec()) == rule


def test_money_given_as_a_json_number_converts_exactly_through_its_text() -> None:
    assert parse_policy({"type": "spend_limit", "max_usd": 50.0}) == SpendLimit(50_000_000, "session")
    cost = parse_policy({"type": "tool_cost", "tool": "t", "cost_usd": 0.05})
    assert cost.spec()["cost_usd"] == "0.05"
    with pytest.raises(InvalidAmount, match="more than 6 decimal places"):
        parse_policy({"type": "tool_cost", "tool": "t", "cost_usd": 1e-7})
    with pytest.raises(InvalidRequest, match="finite"):
        parse_policy({"type": "spend_limit", "max_usd": float("nan")})


def test_limits_count_per_session_unless_told_otherwise() -> None:
    assert parse_policy({"type": "rate_limit", "max_calls": 5, "window_seconds": 60}) == RateLimit(
        5, 60, "session"
    )


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "nope"}, "type"),
        ({"type": "allow", "tools": []}, "tools"),
        ({"type": "allow", "tools": ["a*b"]}, "tools"),
        ({"type": "deny", "tools": ["x"], "extra": 1}, "extra"),
        ({"type": "spend_limit", "max_usd": "-1"}, "max_usd"),
        ({"type": "spend_limit", "max_usd": 5, "per": "planet"}, "per"),
        ({"type": "rate_limit", "max_calls": 0, "window_seconds": 60}, "max_calls"),
        ({"type": "rate_limit", "max_calls": True, "window_seconds": 60}, "max_calls"),
        ({"type": "rate_limit", "max_calls": 1, "window_seconds": 1.5}, "window_seconds"),
        ({"type": "time_window", "allowed_hours": {"start": "9:00", "end": "17:00"}}, "allowed_hours.start"),
        ({"type": "time_window", "allowed_hours": {"start": "09:00", "end": "09:00"}}, "allowed_hours"),
        (
            {
                "type": "time_window",
                "allowed_hours": {"start": "09:00", "end": "17:00"},
                "timezone": "Mars/Base",
            },
            "timezone",
        ),
        (
            {"type": "time_window", "allowed_hours": {"start": "09:00", "end": "17:00"}, "days": ["mo"]},
            "days",
        ),
        ({"type": "arguments", "tool": "t", "rules": [{"argument": "a"}]}, "rules[0]"),
        ({"type": "arguments", "tool": "t", "rules": [{"argument": "a", "max": "10"}]}, "rules[0].max"),
        (
            {"type": "arguments", "tool": "t", "rules": [{"argument": "a", "pattern": "("}]},
            "rules[0].pattern",
        ),
        (
            {"type": "arguments", "tool": "t", "rules": [{"argument": "a", "pattern": "x" * 201}]},
            "rules[0].pattern",
        ),
        ({"type": "tool_cost", "tool": "t"}, "cost_usd"),
    ],
)
def test_a_malformed_spec_is_refused_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_policy(spec)
    assert refused.value.details["field"] == field


@pytest.mark.parametrize("pattern", ["(a+)+$", "(a|aa)*b", "(x*)*", r"(a)\1", "(?:ab+)*"])
def test_patterns_that_can_backtrack_exponentially_are_refused(pattern: str) -> None:
    spec = {"type": "arguments", "tool": "t", "rules": [{"argument": "a", "pattern": pattern}]}
    with pytest.raises(InvalidRequest, match="refused"):
        parse_policy(spec)


def test_ordinary_patterns_are_accepted() -> None:
    for pattern in (r"^/tmp/[a-z0-9_/-]+\.txt\Z", "^(foo|bar)$", "^[a-z]{1,8}@example[.]com$", "a?b{2,3}"):
        parse_policy({"type": "arguments", "tool": "t", "rules": [{"argument": "a", "pattern": pattern}]})


# deny and allow


def test_no_policies_allow_every_tool() -> None:
    assert _check([]) is None


def test_a_denied_tool_is_refused_with_the_seed_wording_and_the_policy() -> None:
    tool = ToolRef("delete_database", "db", "delete_database")
    refusal = _check([{"type": "deny", "tools": ["delete_database"]}], tool=tool)
    assert refusal.error is ToolDenied
    assert refusal.reason == "Tool 'delete_database' is on the deny list"
    assert refusal.policy_id == "pol_0"


def test_deny_wins_over_allow() -> None:
    refusal = _check([{"type": "allow", "tools": ["search"]}, {"type": "deny", "tools": ["search"]}])
    assert refusal.error is ToolDenied


def test_with_an_allow_list_a_tool_it_does_not_name_is_not_allowed() -> None:
    refusal = _check([{"type": "allow", "tools": ["fetch"]}])
    assert refusal.error is NotAllowed
    assert refusal.reason == "Tool 'search' is not on the allow list (pol_0)"
    assert _check([{"type": "allow", "tools": ["fetch"]}, {"type": "allow", "tools": ["search"]}]) is None


def test_a_trailing_star_matches_a_prefix_and_a_lone_star_everything() -> None:
    github = ToolRef("github_issues", "gh", "github_issues")
    assert _check([{"type": "allow", "tools": ["github_*"]}], tool=github) is None
    assert _check([{"type": "allow", "tools": ["github_*"]}]).error is NotAllowed
    assert _check([{"type": "deny", "tools": ["*"]}]).error is ToolDenied


def test_a_renamed_tool_stays_denied_under_its_original_name_but_is_not_allowed_by_it() -> None:
    renamed = ToolRef("db__drop", "db", "drop")
    assert _check([{"type": "deny", "tools": ["drop"]}], tool=renamed).error is ToolDenied
    assert _check([{"type": "allow", "tools": ["drop"]}], tool=renamed).error is NotAllowed
    assert _check([{"type": "allow", "tools": ["db__drop"]}], tool=renamed) is None
    plain = ToolRef("drop", "db", "drop")
    assert _check([{"type": "allow", "tools": ["db__drop"]}], tool=plain) is None


# arguments


def _rules(*rules: dict[str, Any], tool: str = "search") -> dict[str, Any]:
    return {"type": "arguments", "tool": tool, "rules": list(rules)}


def _argument_refusal(rule: dict[str, Any], arguments: dict[str, Any]) -> str | None:
    refusal = _check([_rules(rule)], arguments=arguments)
    if refusal is None:
        return None
    assert refusal.error is ArgumentRejected
    return str(refusal.reason)


def test_a_pattern_searches_so_an_anchor_means_starts_with() -> None:
    rule = {"argument": "path", "pattern": "^/tmp/"}
    assert _argument_refusal(rule, {"path": "/tmp/a.txt"}) is None
    assert "does not match pattern" in (_argument_refusal(rule, {"path": "/etc/passwd"}) or "")
    assert _argument_refusal({"argument": "q", "pattern": "cat"}, {"q": "concatenate"}) is None


def test_a_value_too_long_to_match_safely_fails_its_pattern() -> None:
    rule = {"argument": "q", "pattern": "a"}
    assert _argument_refusal(rule, {"q": "a" * 1024}) is None
    assert _argument_refusal(rule, {"q": "a" * 1025}) is not None


def test_a_missing_argument_fails_unless_optional() -> None:
    assert "is required" in (_argument_refusal({"argument": "limit", "max": 10}, {}) or "")
    assert _argument_refusal({"argument": "limit", "max": 10, "optional": True}, {}) is None


@pytest.mark.parametrize(
    ("rule", "good", "bad"),
    [
        ({"argument": "x", "max": 100}, 100, 101),
        ({"argument": "x", "min": 0.1}, 0.1, 0.09),
        ({"argument": "x", "one_of": ["a", "b"]}, "b", "c"),
        ({"argument": "x", "equals": 1}, 1.0, True),
        ({"argument": "x", "equals": None}, None, 0),
        ({"argument": "x", "max_length": 3}, "abc", "abcd"),
    ],
)
def test_each_rule_check_passes_good_values_and_refuses_bad_ones(
    rule: dict[str, Any], good: Any, bad: Any
) -> None:
    assert _argument_refusal(rule, {"x": good}) is None
    assert _argument_refusal(rule, {"x": bad}) is not None


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        ({"argument": "x", "max": 10}, "5"),
        ({"argument": "x", "max": 10}, True),
        ({"argument": "x", "pattern": "^1"}, 1),
        ({"argument": "x", "max_length": 3}, ["a"]),
    ],
)
def test_a_value_of_the_wrong_type_fails_closed(rule: dict[str, Any], value: Any) -> None:
    assert _argument_refusal(rule, {"x": value}) is not None


def test_argument_rules_of_another_tool_do_not_apply() -> None:
    assert _check([_rules({"argument": "x", "max": 1}, tool="other")], arguments={"x": 5}) is None


# time windows

WORKDAY = {
    "type": "time_window",
    "allowed_hours": {"start": "09:00", "end": "17:00"},
    "timezone": "America/New_York",
    "days": ["mon", "tue", "wed", "thu", "fri"],
}
NIGHT = {
    "type": "time_window",
    "allowed_hours": {"start": "22:00", "end": "06:00"},
    "timezone": "UTC",
    "days": ["fri"],
}


def _open(spec: dict[str, Any], moment: datetime) -> bool:
    rule = parse_policy(spec)
    assert isinstance(rule, TimeWindow)
    return rule.is_open(moment)


def test_a_time_window_is_open_from_start_to_just_before_end_in_its_zone() -> None:
    # Monday 2026-04-06: New York is UTC-4 (daylight time).
    assert not _open(WORKDAY, datetime(2026, 4, 6, 12, 59, 59, tzinfo=UTC))
    assert _open(WORKDAY, datetime(2026, 4, 6, 13, 0, tzinfo=UTC))
    assert _open(WORKDAY, datetime(2026, 4, 6, 20, 59, 59, 999999, tzinfo=UTC))
    assert not _open(WORKDAY, datetime(2026, 4, 6, 21, 0, tzinfo=UTC))
    assert not _open(WORKDAY, datetime(2026, 4, 11, 14, 0, tzinfo=UTC))  # Saturday


def test_a_time_window_follows_the_zone_across_a_dst_change() -> None:
    # 2026-03-06 (Friday) is standard time (UTC-5), 2026-03-09 (Monday) daylight time (UTC-4).
    assert _open(WORKDAY, datetime(2026, 3, 6, 14, 0, tzinfo=UTC))
    assert not _open(WORKDAY, datetime(2026, 3, 6, 13, 30, tzinfo=UTC))
    assert _open(WORKDAY, datetime(2026, 3, 9, 13, 30, tzinfo=UTC))
    assert not _open(WORKDAY, datetime(2026, 3, 9, 21, 30, tzinfo=UTC))


def test_a_window_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    friday, saturday = datetime(2026, 4, 10, tzinfo=UTC), datetime(2026, 4, 11, tzinfo=UTC)
    assert _open(NIGHT, friday.replace(hour=23))
    assert _open(NIGHT, saturday.replace(hour=5, minute=59))
    assert not _open(NIGHT, saturday.replace(hour=6))
    assert not _open(NIGHT, saturday.replace(hour=23))  # Saturday night is not a Friday window
    assert not _open(NIGHT, friday.replace(hour=3))  # Friday early morning belongs to Thursday's window
    assert not _open(NIGHT, friday.replace(hour=21, minute=59))


def test_a_call_outside_the_window_is_refused_saying_when_it_is_allowed() -> None:
    refusal = _check([WORKDAY], now=datetime(2026, 4, 11, 14, 0, tzinfo=UTC))
    assert refusal.error is OutsideTimeWindow
    assert refusal.reason == (
        "Tool 'search' may be called only 09:00-17:00 America/New_York on mon,tue,wed,thu,fri; "
        "it is 10:00 sat there"
    )


def test_the_order_is_deny_allow_arguments_time_window() -> None:
    specs = [WORKDAY, _rules({"argument": "x", "max": 1}), {"type": "allow", "tools": ["other"]}]
    late = datetime(2026, 4, 11, 14, 0, tzinfo=UTC)
    assert _check(specs, arguments={"x": 5}, now=late).error is NotAllowed
    assert _check(specs[:2], arguments={"x": 5}, now=late).error is ArgumentRejected
    assert _check([*specs, {"type": "deny", "tools": ["search"]}], now=late).error is ToolDenied


# limits and costs


def test_limits_for_collects_limits_the_cost_and_the_policies_that_governed_the_call() -> None:
    policies = _policies(
        {"type": "rate_limit", "max_calls": 5, "window_seconds": 60},
        {"type": "spend_limit", "max_usd": "2", "per": "session"},
        {"type": "spend_limit", "max_usd": "1", "per": "session"},
        {"type": "tool_cost", "tool": "search", "cost_usd": "0.10"},
        {"type": "tool_cost", "tool": "search", "cost_usd": "0.25"},
        {"type": "tool_cost", "tool": "other", "cost_usd": "9"},
        {"type": "deny", "tools": ["other"]},
        {"type": "allow", "tools": ["search"]},
    )
    limits = limits_for(policies, tool=SEARCH)
    assert limits.cost_micros == 250_000
    assert limits.policy_ids == ("pol_0", "pol_1", "pol_2", "pol_3", "pol_4", "pol_7")
    assert [pid for pid, _ in limits.rate_limits] == ["pol_0"]
    assert limits.session_cap() == (1_000_000, "pol_2")
    assert limits_for([], tool=SEARCH).cost_micros == 0


def test_rate_windows_align_to_the_epoch_and_retry_after_counts_to_the_next() -> None:
    moment = datetime(2026, 4, 6, 12, 34, 56, 500000, tzinfo=UTC)
    assert window_start(moment, 3600) == datetime(2026, 4, 6, 12, 0, tzinfo=UTC)
    assert retry_after(moment, 3600) == 1504  # 25 min 3.5 s, rounded up
    assert retry_after(datetime(2026, 4, 6, 12, 59, 59, 999999, tzinfo=UTC), 3600) == 1


@pytest.mark.parametrize("kind", POLICY_TYPES)
def test_every_documented_policy_type_is_one_the_parser_reads(kind: str) -> None:
    # POLICY_TYPES is what the OpenAPI document lists: an empty spec of a listed type fails on another field.
    with pytest.raises(InvalidRequest) as refused:
        parse_policy({"type": kind})
    assert refused.value.details.get("field") != "type", refused.value.message


def test_an_undocumented_policy_type_is_refused_by_its_type() -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_policy({"type": "nope"})
    assert refused.value.details.get("field") == "type"
    assert str(list(POLICY_TYPES)) in refused.value.message  # sorted already, as the message lists them
