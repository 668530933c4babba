"""Anomaly flags over HTTP: built-in detectors, tenant rules, their CRUD, and the audit.flagged outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa

from haldir.core.keys import Principal
from haldir.errors import Conflict
from haldir.governor.rules import MAX_RULES
from haldir.http.app import create_app
from haldir.settings import Settings
from haldir.store.schema import events
from tests.conftest import Api

pytestmark = pytest.mark.anyio


async def _session(api: Api, key: str | None = None) -> str:
    response = await api.client.post(
        "/v1/sessions",
        json={"agent_id": "agent-7", "scopes": ["execute"], "spend_limit": "100000"},
        headers=api.auth(key or api.admin_key),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["session_id"])


async def _log(api: Api, session_id: str, key: str | None = None, **body: Any) -> dict[str, Any]:
    payload = {"session_id": session_id, "tool": "stripe", "action": "charge", "cost_usd": "0", **body}
    response = await api.client.post("/v1/audit", json=payload, headers=api.auth(key or api.admin_key))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _rule(api: Api, key: str | None = None, **body: Any) -> dict[str, Any]:
    response = await api.client.post("/v1/audit/rules", json=body, headers=api.auth(key or api.admin_key))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _events(api: Api) -> list[dict[str, Any]]:
    async with api.app.state.store.engines.read.connect() as conn:
        rows = await conn.execute(sa.select(events).order_by(events.c.created_at, events.c.event_id))
        return [row._asdict() for row in rows]


async def test_a_cost_spike_is_flagged_with_a_readable_reason(api: Api) -> None:
    session_id = await _session(api)
    for _ in range(3):
        assert (await _log(api, session_id, cost_usd="10"))["flagged"] is False
        api.clock.advance(5)
    spike = await _log(api, session_id, cost_usd="500")
    assert spike["flagged"] is True
    assert spike["flag_reason"] == "cost 500.00 USD is 50x this session's median of 10.00 USD"

    entry = (
        await api.client.get(f"/v1/audit/entries/{spike['entry_id']}", headers=api.auth(api.admin_key))
    ).json()
    assert entry["record"]["flagged"] is True
    assert entry["record"]["flag_reason"] == spike["flag_reason"]
    flagged = await api.client.get("/v1/audit", params={"flagged": "true"}, headers=api.auth(api.admin_key))
    assert [e["entry_id"] for e in flagged.json()["entries"]] == [spike["entry_id"]]
    verified = await api.client.get("/v1/audit/verify", headers=api.auth(api.admin_key))
    assert verified.json()["ok"] is True


async def test_the_sixty_first_action_in_twenty_seconds_is_flagged_as_a_burst(api: Api) -> None:
    session_id = await _session(api)
    other = await _session(api)
    for _ in range(60):
        assert (await _log(api, session_id))["flagged"] is False
        await _log(api, other)  # another session's actions do not count
        api.clock.advance(0.25)
    burst = await _log(api, session_id)
    assert burst["flagged"] is True
    assert burst["flag_reason"] == "burst: 61 actions in 20 s by this session"
    api.clock.advance(21)
    assert (await _log(api, session_id))["flagged"] is False


async def test_repeated_denials_of_a_session_are_flagged(api: Api) -> None:
    session_id = await _session(api)
    assert (await _log(api, session_id, status="denied"))["flagged"] is False
    api.clock.advance(60)
    assert (await _log(api, session_id, status="ok"))["flagged"] is False
    assert (await _log(api, session_id, status="denied"))["flagged"] is False
    api.clock.advance(60)
    third = await _log(api, session_id, status="denied")
    assert third["flag_reason"] == "3 denials in 10 minutes for this session"
    api.clock.advance(600)
    assert (await _log(api, session_id, status="denied"))["flagged"] is False


async def test_a_cost_over_rule_flags_costs_above_its_limit(api: Api) -> None:
    rule = await _rule(api, type="cost_over", max_usd=100.5)
    assert rule["max_usd"] == "100.50"
    session_id = await _session(api)
    assert (await _log(api, session_id, cost_usd="100.50"))["flagged"] is False
    over = await _log(api, session_id, cost_usd="100.51")
    assert over["flag_reason"] == f"rule {rule['rule_id']}: cost 100.51 USD is over 100.50 USD"


async def test_a_rate_over_rule_flags_a_session_beyond_its_calls_per_window(api: Api) -> None:
    rule = await _rule(api, type="rate_over", max_calls=3, window_seconds=600)
    session_id = await _session(api)
    for _ in range(3):
        assert (await _log(api, session_id))["flagged"] is False
        api.clock.advance(100)
    fourth = await _log(api, session_id)
    assert (
        fourth["flag_reason"]
        == f"rule {rule['rule_id']}: 4 actions in 600 s by this session, over the limit of 3"
    )
    assert (await _log(api, await _session(api)))["flagged"] is False  # per session


async def test_a_tool_match_rule_flags_matching_tools(api: Api) -> None:
    rule = await _rule(api, type="tool_match", pattern="delete_*")
    session_id = await _session(api)
    assert (await _log(api, session_id, tool="read_database"))["flagged"] is False
    hit = await _log(api, session_id, tool="delete_database")
    assert hit["flag_reason"] == f"rule {rule['rule_id']}: tool 'delete_database' matches 'delete_*'"


async def test_several_reasons_are_joined(api: Api) -> None:
    rule = await _rule(api, type="tool_match", pattern="stripe")
    session_id = await _session(api)
    for _ in range(3):
        await _log(api, session_id, cost_usd="2")
    entry = await _log(api, session_id, cost_usd="30")
    assert entry["flag_reason"] == (
        f"cost 30.00 USD is 15x this session's median of 2.00 USD; rule {rule['rule_id']}: "
        "tool 'stripe' matches 'stripe'"
    )


async def test_each_flagged_entry_records_exactly_one_audit_flagged_event(api: Api) -> None:
    await _rule(api, type="tool_match", pattern="delete_*")
    session_id = await _session(api)
    flagged = []
    for tool in ("read", "delete_a", "read", "delete_b", "delete_c", "read"):
        entry = await _log(api, session_id, tool=tool)
        if entry["flagged"]:
            flagged.append(entry)
        api.clock.advance(1)
    assert len(flagged) == 3
    rows = await _events(api)
    assert [row["payload"]["entry_id"] for row in rows] == [entry["entry_id"] for entry in flagged]
    for row, entry in zip(rows, flagged, strict=True):
        assert row["tenant_id"] == "acme"
        assert row["event_id"].startswith("evt_")
        assert row["type"] == "audit.flagged"
        # Fanned out to webhooks (none here) by the app's delivery worker, or not yet.
        assert row["delivered_at"] is None or row["delivered_at"] >= row["created_at"]
        assert row["payload"]["leaf_index"] == entry["leaf_index"]
        assert row["payload"]["flag_reason"] == entry["flag_reason"]
        assert row["payload"]["session_id"] == session_id
        assert row["payload"]["tool"].startswith("delete_")


async def test_rules_can_be_created_listed_and_deleted(api: Api) -> None:
    admin = api.auth(api.admin_key)
    created = [
        await _rule(api, type="cost_over", max_usd="50"),
        await _rule(api, type="rate_over", max_calls=10, window_seconds=60),
        await _rule(api, type="tool_match", pattern="delete_*"),
    ]
    assert created[0] == {
        "rule_id": created[0]["rule_id"],
        "type": "cost_over",
        "max_usd": "50.00",
        "created_at": "2026-04-05T19:00:00Z",
    }
    assert created[0]["rule_id"].startswith("rul_")
    assert set(created[1]) == {"rule_id", "type", "max_calls", "window_seconds", "created_at"}
    assert set(created[2]) == {"rule_id", "type", "pattern", "created_at"}
    listed = (await api.client.get("/v1/audit/rules", headers=admin)).json()
    assert {rule["rule_id"] for rule in listed["rules"]} == {rule["rule_id"] for rule in created}
    assert sorted(listed["rules"], key=lambda r: r["rule_id"]) == sorted(created, key=lambda r: r["rule_id"])

    deleted = await api.client.delete(f"/v1/audit/rules/{created[1]['rule_id']}", headers=admin)
    assert deleted.status_code == 200
    assert deleted.json() == created[1]
    remaining = (await api.client.get("/v1/audit/rules", headers=admin)).json()["rules"]
    assert {rule["rule_id"] for rule in remaining} == {created[0]["rule_id"], created[2]["rule_id"]}
    for rule_id in (created[1]["rule_id"], "rul_nope", "nope"):
        again = await api.client.delete(f"/v1/audit/rules/{rule_id}", headers=admin)
        assert again.status_code == 404
        assert again.json()["code"] == "not_found"


async def test_a_deleted_rule_flags_nothing_more(api: Api) -> None:
    rule = await _rule(api, type="tool_match", pattern="*")
    session_id = await _session(api)
    assert (await _log(api, session_id))["flagged"] is True
    await api.client.delete(f"/v1/audit/rules/{rule['rule_id']}", headers=api.auth(api.admin_key))
    assert (await _log(api, session_id))["flagged"] is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"type": "nope"}, "rule type must be one of"),
        ({}, "type"),
        ({"type": "cost_over"}, "missing max_usd"),
        ({"type": "cost_over", "max_usd": "-1"}, "max_usd must not be negative"),
        ({"type": "cost_over", "max_usd": "NaN"}, "max_usd must be finite"),
        ({"type": "cost_over", "max_usd": "1", "pattern": "x"}, "unknown pattern"),
        ({"type": "cost_over", "max_usd": "1", "colour": "red"}, "colour"),
        ({"type": "rate_over", "max_calls": 5}, "missing window_seconds"),
        ({"type": "rate_over", "max_calls": 0, "window_seconds": 60}, "max_calls must be a whole number"),
        ({"type": "rate_over", "max_calls": "5", "window_seconds": 60}, "max_calls"),
        ({"type": "rate_over", "max_calls": 5.5, "window_seconds": 60}, "max_calls"),
        ({"type": "rate_over", "max_calls": 5, "window_seconds": -1}, "window_seconds must be"),
        ({"type": "tool_match"}, "missing pattern"),
        ({"type": "tool_match", "pattern": " "}, "pattern must be"),
        ({"type": "tool_match", "pattern": 7}, "pattern"),
        ({"type": "outside_hours", "timezone": "Nowhere/City", "start": "08:00", "end": "18:00"}, "timezone"),
        ({"type": "outside_hours", "timezone": "UTC", "start": "8am", "end": "18:00"}, "start must be"),
        ({"type": "outside_hours", "timezone": "UTC", "start": "08:00"}, "missing end"),
        (
            {
                "type": "outside_hours",
                "timezone": "UTC",
                "start": "08:00",
                "end": "18:00",
                "days": ["sun", "x"],
            },
            "days must be",
        ),
    ],
)
async def test_invalid_rules_are_refused_with_400(api: Api, body: dict[str, Any], message: str) -> None:
    response = await api.client.post("/v1/audit/rules", json=body, headers=api.auth(api.admin_key))
    assert response.status_code == 400, response.text
    assert response.json()["code"] in ("invalid_request", "invalid_amount")
    assert message in response.json()["error"]
    if body.get("type") == "outside_hours":
        assert response.json()["field"] in ("timezone", "start", "end", "days")
    assert (await api.client.get("/v1/audit/rules", headers=api.auth(api.admin_key))).json()["rules"] == []


async def test_rules_of_one_tenant_do_not_flag_another_tenants_entries(api: Api) -> None:
    await _rule(api, type="tool_match", pattern="*")
    other_key = await api.key("*", tenant="globex")
    other_session = await _session(api, other_key)
    assert (await _log(api, other_session, other_key))["flagged"] is False
    listed = await api.client.get("/v1/audit/rules", headers=api.auth(other_key))
    assert listed.json()["rules"] == []
    assert (await _log(api, await _session(api)))["flagged"] is True
    assert {row["tenant_id"] for row in await _events(api)} == {"acme"}


async def test_a_tenant_has_a_bounded_number_of_rules(api: Api) -> None:
    operator = Principal.operator("acme")
    for n in range(MAX_RULES):
        await api.governor.rules.create_rule(operator, type="tool_match", params={"pattern": f"tool_{n}"})
    with pytest.raises(Conflict, match="delete one"):
        await api.governor.rules.create_rule(operator, type="tool_match", params={"pattern": "one_more"})


# outside_hours rules and the tenant's anomaly settings


async def test_an_outside_hours_rule_flags_entries_outside_the_tenants_normal_hours(api: Api) -> None:
    created = await _rule(
        api,
        type="outside_hours",
        timezone="America/New_York",
        start="09:00",
        end="17:00",
        days=["mon", "tue"],
    )
    assert {k: created[k] for k in ("timezone", "start", "end", "days")} == {
        "timezone": "America/New_York",
        "start": "09:00",
        "end": "17:00",
        "days": ["mon", "tue"],
    }
    session_id = await _session(api)
    api.clock.moment = datetime(2026, 4, 6, 14, 0, tzinfo=UTC)  # Monday 10:00 in New York
    assert (await _log(api, session_id))["flagged"] is False
    api.clock.moment = datetime(2026, 4, 6, 23, 30, tzinfo=UTC)  # Monday 19:30 in New York
    late = await _log(api, session_id)
    assert late["flagged"] is True
    assert (
        "used at Mon 19:30 America/New_York, outside normal hours 09:00-17:00 mon,tue" in late["flag_reason"]
    )


async def test_a_tenants_burst_threshold_replaces_the_default_for_it_alone(api: Api) -> None:
    default = await api.client.get("/v1/audit/anomaly-settings", headers=api.auth(api.admin_key))
    assert default.json() == {"burst_enabled": True, "burst_max_actions": 60, "burst_window_seconds": 20}
    changed = await api.client.put(
        "/v1/audit/anomaly-settings",
        json={"burst_max_actions": 3, "burst_window_seconds": 60},
        headers=api.auth(api.admin_key),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"burst_enabled": True, "burst_max_actions": 3, "burst_window_seconds": 60}
    other_key = await api.key("*", tenant="globex")
    mine, theirs = await _session(api), await _session(api, other_key)
    for _ in range(3):
        assert (await _log(api, mine))["flagged"] is False
        assert (await _log(api, theirs, other_key))["flagged"] is False
    assert (await _log(api, mine))["flag_reason"] == "burst: 4 actions in 60 s by this session"
    assert (await _log(api, theirs, other_key))["flagged"] is False  # globex keeps the default
    theirs_now = await api.client.get("/v1/audit/anomaly-settings", headers=api.auth(other_key))
    assert theirs_now.json()["burst_max_actions"] == 60
    audit = await api.client.get("/v1/audit", params={"tool": "limits"}, headers=api.auth(api.admin_key))
    assert [e["action"] for e in audit.json()["entries"]] == ["anomaly.settings.set"]


async def test_the_burst_detector_can_be_turned_off(api: Api) -> None:
    off = await api.client.put(
        "/v1/audit/anomaly-settings", json={"burst_enabled": False}, headers=api.auth(api.admin_key)
    )
    assert off.json() == {"burst_enabled": False, "burst_max_actions": None, "burst_window_seconds": 20}
    session_id = await _session(api)
    for _ in range(80):
        assert (await _log(api, session_id))["flagged"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"burst_max_actions": 0}, "burst_max_actions"),
        ({"burst_window_seconds": 10**9}, "burst_window_seconds"),
        ({"burst_max_actions": "5"}, None),
        ({"colour": "red"}, None),
    ],
)
async def test_invalid_anomaly_settings_are_refused_with_400(
    api: Api, body: dict[str, Any], field: str | None
) -> None:
    response = await api.client.put("/v1/audit/anomaly-settings", json=body, headers=api.auth(api.admin_key))
    assert response.status_code == 400, response.text
    if field is not None:
        assert response.json()["field"] == field


async def test_anomaly_settings_need_audit_scopes(api: Api) -> None:
    reader = await api.key("audit:read")
    assert (await api.client.get("/v1/audit/anomaly-settings", headers=api.auth(reader))).status_code == 200
    refused = await api.client.put("/v1/audit/anomaly-settings", json={}, headers=api.auth(reader))
    assert refused.status_code == 403


@pytest.fixture
async def second(api: Api, store_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Another server process on the same store and machine, with caches of its own."""
    settings = Settings(
        data_dir=tmp_path, database_url=store_url, custom_scopes=("stripe",), stdio_tenants=("acme",)
    )
    app = create_app(settings, clock=api.clock)
    async with app.router.lifespan_context(app):
        with anyio.fail_after(10):
            while app.state.store.changes.epoch() is None:  # noqa: ASYNC110 - the PostgreSQL listener
                await anyio.sleep(0.01)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://haldir.test") as client:
            yield client


async def test_settings_changed_through_one_process_judge_the_next_append_on_another(
    api: Api, second: httpx.AsyncClient
) -> None:
    session_id = await _session(api)

    async def log_on_second() -> dict[str, Any]:
        body = {"session_id": session_id, "tool": "stripe", "action": "charge"}
        response = await second.post("/v1/audit", json=body, headers=api.auth(api.admin_key))
        assert response.status_code == 201, response.text
        return dict(response.json())

    for _ in range(3):
        assert (await log_on_second())["flagged"] is False  # `second` judges by the cached defaults
    changed = await api.client.put(
        "/v1/audit/anomaly-settings", json={"burst_max_actions": 3}, headers=api.auth(api.admin_key)
    )
    assert changed.status_code == 200, changed.text
    # The settings change itself is an entry of no session; the session's 4th entry is over 3 in 20 s.
    assert (await log_on_second())["flag_reason"] == "burst: 4 actions in 20 s by this session"
    await api.client.put(
        "/v1/audit/anomaly-settings", json={"burst_enabled": False}, headers=api.auth(api.admin_key)
    )
    assert (await log_on_second())["flagged"] is False
