"""Approval rules and bindings: which requests a rule holds, and that an approval matches only its request."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from haldir.core.approvals import CALL, PAYMENT, REQUEST, Approval, Subject, holding_rules, parse_rule
from haldir.errors import InvalidRequest

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
CALL_OF_SEND = Subject(CALL, "ses_a", "mailer", "send_email", "ab" * 32, 0)


def _rule(spec: dict[str, object]) -> object:
    return parse_rule(spec, rule_id="arl_x", created_by=None, created_at=AT)


def test_spend_over_holds_only_amounts_strictly_over_the_threshold() -> None:
    rule = parse_rule(
        {"type": "spend_over", "threshold": 100}, rule_id="arl_1", created_by=None, created_at=AT
    )
    at_threshold = Subject(PAYMENT, "ses_a", "buyer", "payments", None, 100_000_000)

    assert holding_rules([rule], at_threshold) == []
    assert holding_rules([rule], replace(at_threshold, amount_micros=100_000_001))[0][1].startswith(
        "spend of 100.000001 USD is over 100.00 USD"
    )


def test_a_tool_rule_matches_its_glob_and_an_agent_limit_narrows_any_rule() -> None:
    tool = parse_rule({"type": "tool", "tool": "send_*"}, rule_id="arl_1", created_by=None, created_at=AT)
    theirs = parse_rule(
        {"type": "tool", "tool": "send_*", "agent_id": "other"},
        rule_id="arl_2",
        created_by=None,
        created_at=AT,
    )

    assert [rule.rule_id for rule, _ in holding_rules([tool, theirs], CALL_OF_SEND)] == ["arl_1"]
    assert holding_rules([tool], replace(CALL_OF_SEND, tool="read_email")) == []
    assert holding_rules([tool], replace(CALL_OF_SEND, tool="SEND_email")) == []  # case-sensitive


def test_an_agent_rule_holds_every_spend_of_its_agent_and_nothing_free() -> None:
    rule = parse_rule(
        {"type": "agent", "agent_id": "mailer"}, rule_id="arl_1", created_by=None, created_at=AT
    )

    assert holding_rules([rule], CALL_OF_SEND) == []
    assert len(holding_rules([rule], replace(CALL_OF_SEND, amount_micros=1))) == 1
    assert holding_rules([rule], replace(CALL_OF_SEND, agent_id="other", amount_micros=1)) == []


@pytest.mark.parametrize(
    "change",
    [
        {"session_id": "ses_b"},
        {"tool": "send_sms"},
        {"arguments_sha256": "cd" * 32},
        {"arguments_sha256": None},
        {"amount_micros": 1},
    ],
)
def test_an_approval_binds_every_part_of_the_request(change: dict[str, object]) -> None:
    assert replace(CALL_OF_SEND, **change).binding != CALL_OF_SEND.binding  # type: ignore[arg-type]
    assert replace(CALL_OF_SEND).binding == CALL_OF_SEND.binding


def test_the_agent_and_what_asked_are_not_part_of_a_binding() -> None:
    # The session fixes the agent; and an agent that asked ahead (`request`) for exactly this call has
    # asked for the call itself.
    assert replace(CALL_OF_SEND, agent_id="x").binding == CALL_OF_SEND.binding
    assert replace(CALL_OF_SEND, kind=REQUEST).binding == CALL_OF_SEND.binding


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "spend_over", "threshold": "-1"},
        {"type": "tool", "tool": ""},
        {"type": "tool", "tool": "a\nb"},
        {"type": "agent", "agent_id": " "},
        {"type": "spend_over", "threshold": 1, "tool": "x"},
        {"type": None},
    ],
)
def test_a_malformed_rule_is_refused(spec: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        _rule(spec)


def test_a_request_lapses_at_its_expiry_and_reads_as_expired() -> None:
    approval = Approval(
        tenant_id="acme",
        approval_id="apr_1",
        binding=CALL_OF_SEND.binding,
        status="pending",
        kind=CALL,
        session_id="ses_a",
        agent_id="mailer",
        tool="send_email",
        arguments_sha256=None,
        amount_micros=0,
        reason="r",
        rule_ids=(),
        requested_by=None,
        requested_at=AT,
        expires_at=AT + timedelta(minutes=15),
    )

    assert approval.status_at(AT + timedelta(minutes=14, seconds=59)) == "pending"
    assert approval.status_at(AT + timedelta(minutes=15)) == "expired"
    assert replace(approval, status="consumed").status_at(AT + timedelta(days=1)) == "consumed"
