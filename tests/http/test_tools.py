"""Governed calls of local tools over HTTP: `POST /v1/tools/{tool}/begin` admits and reserves through the
proxy's pipeline, `POST /v1/tools/calls/{call_id}/finish` records the outcome; on both stores."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from haldir.proxy.service import OUTCOME_GRACE
from tests.conftest import Api

pytestmark = pytest.mark.anyio


async def _session(api: Api, *scopes: str, limit: str = "10", agent: str = "agent-7") -> str:
    made = await api.client.post(
        "/v1/sessions",
        json={"agent_id": agent, "scopes": list(scopes or ["execute"]), "spend_limit": limit},
        headers=api.auth(api.admin_key),
    )
    assert made.status_code == 201, made.text
    return str(made.json()["session_id"])


async def _begin(api: Api, session_id: str, tool: str = "lookup", key: str | None = None, **body: Any) -> Any:
    return await api.client.post(
        f"/v1/tools/{tool}/begin",
        json={"session_id": session_id, "arguments": body.pop("arguments", {"q": "cats"}), **body},
        headers=api.auth(key or api.admin_key),
    )


async def _finish(api: Api, call_id: str, key: str | None = None, **body: Any) -> Any:
    return await api.client.post(
        f"/v1/tools/calls/{call_id}/finish",
        json={"status": "ok", **body},
        headers=api.auth(key or api.admin_key),
    )


async def _policy(api: Api, spec: dict[str, Any]) -> str:
    made = await api.client.post("/v1/proxy/policies", json=spec, headers=api.auth(api.admin_key))
    assert made.status_code == 201, made.text
    return str(made.json()["policy_id"])


async def _trail(api: Api, session_id: str) -> list[dict[str, Any]]:
    found = await api.client.get(
        "/v1/audit", params={"session_id": session_id, "limit": 100}, headers=api.auth(api.admin_key)
    )
    assert found.status_code == 200, found.text
    return sorted(found.json()["entries"], key=lambda entry: entry["leaf_index"])


async def _spent(api: Api, session_id: str) -> Decimal:
    found = await api.client.get(f"/v1/sessions/{session_id}", headers=api.auth(api.admin_key))
    assert found.status_code == 200, found.text
    return Decimal(found.json()["spent"])


async def test_a_begun_and_finished_local_call_is_recorded_with_its_cost_and_no_upstream(api: Api) -> None:
    session_id = await _session(api)

    begun = await _begin(api, session_id, cost_usd="0.10")
    assert begun.status_code == 201, begun.text
    call = begun.json()
    finished = await _finish(api, call["call_id"], latency_ms=12)

    assert call["call_id"].startswith("call_")
    assert (call["tool"], call["session_id"], call["arguments"]) == ("lookup", session_id, {"q": "cats"})
    assert (call["secrets"], call["cost_usd"]) == ([], "0.10")
    assert finished.status_code == 200, finished.text
    assert finished.json() == {
        "call_id": call["call_id"],
        "status": "ok",
        "entry_id": finished.json()["entry_id"],
        "charged_usd": "0.10",
    }
    admit, finish = await _trail(api, session_id)
    assert admit["entry_id"] == call["entry_id"]
    assert finish["entry_id"] == finished.json()["entry_id"]
    for entry, phase in ((admit, "admit"), (finish, "finish")):
        assert (entry["tool"], entry["action"], entry["status"]) == ("lookup", "tools/call", "ok")
        details = entry["details"]
        assert (details["phase"], details["call_id"]) == (phase, call["call_id"])
        assert (details["upstream"], details["local"]) == (None, True)
    assert (admit["charged_usd"], finish["charged_usd"]) == ("0.10", "0.00")
    assert admit["details"]["declared_cost_usd"] == "0.10"
    assert finish["details"]["latency_ms"] == 12
    assert await _spent(api, session_id) == Decimal("0.10")


async def test_a_local_call_that_fails_releases_its_cost_and_records_the_error(api: Api) -> None:
    session_id = await _session(api)
    begun = (await _begin(api, session_id, cost_usd="0.25")).json()
    assert await _spent(api, session_id) == Decimal("0.25")

    finished = await _finish(api, begun["call_id"], status="error", error="ValueError: no such city")

    assert finished.status_code == 200, finished.text
    assert (finished.json()["status"], finished.json()["charged_usd"]) == ("error", "0.00")
    assert await _spent(api, session_id) == Decimal("0")
    finish = (await _trail(api, session_id))[-1]
    assert (finish["status"], finish["charged_usd"]) == ("error", "-0.25")
    assert finish["details"]["error"] == "ValueError: no such city"


async def test_a_policy_tool_cost_above_the_declared_cost_wins(api: Api) -> None:
    await _policy(api, {"type": "tool_cost", "tool": "lookup", "cost_usd": "0.50"})
    session_id = await _session(api)

    cheaper = await _begin(api, session_id, cost_usd="0.10")
    dearer = await _begin(api, session_id, cost_usd="2")
    undeclared = await _begin(api, session_id)

    assert [r.json()["cost_usd"] for r in (cheaper, dearer, undeclared)] == ["0.50", "2.00", "0.50"]
    assert await _spent(api, session_id) == Decimal("3.00")


async def test_secrets_referenced_by_a_local_call_are_substituted_named_and_scrubbed_from_its_error(
    api: Api,
) -> None:
    stored = await api.client.post(
        "/v1/secrets", json={"name": "weather_key", "value": "wk-123456"}, headers=api.auth(api.admin_key)
    )
    assert stored.status_code == 201, stored.text
    session_id = await _session(api, "execute", "read")

    begun = await _begin(api, session_id, arguments={"q": "Oslo", "key": "Bearer {{secret:weather_key}}"})
    assert begun.status_code == 201, begun.text
    await _finish(api, begun.json()["call_id"], status="error", error="401 for key wk-123456")

    assert begun.json()["arguments"] == {"q": "Oslo", "key": "Bearer wk-123456"}
    assert begun.json()["secrets"] == ["weather_key"]
    trail = await _trail(api, session_id)
    assert "wk-123456" not in str(trail)
    assert trail[-1]["details"]["error"] == "401 for key [secret:weather_key]"
    assert [e["action"] for e in trail] == ["secret.release", "tools/call", "tools/call"]


async def test_a_local_call_is_finished_once(api: Api) -> None:
    session_id = await _session(api)
    call_id = (await _begin(api, session_id)).json()["call_id"]

    first = await _finish(api, call_id)
    second = await _finish(api, call_id, status="error")

    assert first.status_code == 200, first.text
    assert second.status_code == 409, second.text
    assert second.json()["code"] == "conflict"
    assert "finished already" in second.json()["error"]
    assert [e["details"]["phase"] for e in await _trail(api, session_id)] == ["admit", "finish"]


async def test_another_tenants_call_cannot_be_finished_and_is_not_found(api: Api) -> None:
    session_id = await _session(api)
    call_id = (await _begin(api, session_id)).json()["call_id"]
    other = await api.key("proxy:write", tenant="globex")

    foreign = await _finish(api, call_id, key=other)
    unknown = await _finish(api, "call_doesnotexist")

    assert (foreign.status_code, unknown.status_code) == (404, 404)
    assert (await _finish(api, call_id)).status_code == 200


@pytest.mark.parametrize(
    ("policy", "arguments", "status", "code"),
    [
        ({"type": "deny", "tools": ["look*"]}, {"q": "cats"}, 403, "tool_denied"),
        ({"type": "allow", "tools": ["other"]}, {"q": "cats"}, 403, "not_allowed"),
        (
            {"type": "arguments", "tool": "lookup", "rules": [{"argument": "q", "max_length": 3}]},
            {"q": "kittens"},
            403,
            "argument_rejected",
        ),
        (
            {"type": "rate_limit", "max_calls": 1, "window_seconds": 3600, "per": "session"},
            {"q": "cats"},
            429,
            "rate_limited",
        ),
        ({"type": "spend_limit", "max_usd": "0.15", "per": "agent"}, {"q": "cats"}, 402, "budget_exceeded"),
    ],
)
async def test_a_policy_refusal_of_a_local_call_is_the_apis_error_and_a_denied_entry(
    api: Api, policy: dict[str, Any], arguments: dict[str, Any], status: int, code: str
) -> None:
    await _policy(api, {"type": "tool_cost", "tool": "lookup", "cost_usd": "0.10"})
    policy_id = await _policy(api, policy)
    session_id = await _session(api)
    if code in ("rate_limited", "budget_exceeded"):  # the first call fits the limit
        assert (await _begin(api, session_id, arguments=arguments)).status_code == 201

    refused = await _begin(api, session_id, arguments=arguments)

    assert refused.status_code == status, refused.text
    assert (refused.json()["code"], refused.json()["policy_id"]) == (code, policy_id)
    denied = (await _trail(api, session_id))[-1]
    assert (denied["tool"], denied["status"], denied["flagged"]) == ("lookup", "denied", True)
    assert denied["details"]["policy_id"] == policy_id
    assert denied["charged_usd"] == "0.00"


async def test_a_session_without_the_tools_execute_scope_is_refused_and_recorded(api: Api) -> None:
    session_id = await _session(api, "execute:search")

    refused = await _begin(api, session_id)

    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "not_allowed"
    assert "execute:lookup" in refused.json()["error"]
    assert (await _trail(api, session_id))[-1]["status"] == "denied"


async def test_a_local_call_over_the_session_budget_is_refused_and_reserves_nothing(api: Api) -> None:
    session_id = await _session(api, limit="1")

    refused = await _begin(api, session_id, cost_usd="1.50")

    assert refused.status_code == 402, refused.text
    assert refused.json()["code"] == "budget_exceeded"
    assert await _spent(api, session_id) == Decimal("0")
    assert (await _trail(api, session_id))[-1]["status"] == "denied"


async def test_a_held_local_call_answers_its_approval_and_is_admitted_once_approved(api: Api) -> None:
    rule = await api.client.post(
        "/v1/approvals/rules", json={"type": "tool", "tool": "send_*"}, headers=api.auth(api.admin_key)
    )
    assert rule.status_code == 201, rule.text
    agent = await api.key("proxy:write")
    session_id = await _session(api)

    held = await _begin(api, session_id, "send_email", key=agent)
    assert held.status_code == 202, held.text
    approval_id = held.json()["approval_id"]
    approved = await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=api.auth(api.admin_key))
    assert approved.status_code == 200, approved.text
    ran = await _begin(api, session_id, "send_email", key=agent)
    again = await _begin(api, session_id, "send_email", key=agent)

    assert held.json()["code"] == "approval_required"
    assert ran.status_code == 201, ran.text
    assert again.status_code == 202


@pytest.mark.parametrize("tool", ["github__delete_repo", "-x", "has space", "a" * 65])
async def test_a_local_tool_name_that_could_name_an_upstream_tool_or_is_malformed_is_refused(
    api: Api, tool: str
) -> None:
    session_id = await _session(api)

    refused = await _begin(api, session_id, tool)

    assert refused.status_code in (400, 404, 422), refused.text
    assert refused.status_code != 201


async def test_a_local_call_never_finished_is_closed_by_the_sweep_as_outcome_unknown(api: Api) -> None:
    session_id = await _session(api)
    call_id = (await _begin(api, session_id, cost_usd="0.30")).json()["call_id"]
    api.clock.advance((OUTCOME_GRACE + timedelta(seconds=1)).total_seconds())

    closed = await api.governor.proxy.close_stale_calls(older_than=OUTCOME_GRACE)
    late = await _finish(api, call_id)

    assert closed == 1
    unknown = (await _trail(api, session_id))[-1]
    assert (unknown["status"], unknown["details"]["outcome"]) == ("error", "unknown")
    assert (unknown["details"]["call_id"], unknown["details"]["local"]) == (call_id, True)
    assert await _spent(api, session_id) == Decimal("0.30")  # the call may have run: its cost stays
    assert late.status_code == 409, late.text
    assert "outcome unknown" in late.json()["error"]


async def test_concurrent_begins_against_a_budget_admit_exactly_what_fits(api: Api) -> None:
    session_id = await _session(api, limit="1.00")
    agent = await api.key("proxy:write")

    answers = await asyncio.gather(*(_begin(api, session_id, key=agent, cost_usd="0.30") for _ in range(8)))

    codes = sorted(answer.status_code for answer in answers)
    assert codes == [201] * 3 + [402] * 5
    assert await _spent(api, session_id) == Decimal("0.90")
    admits = [e for e in await _trail(api, session_id) if e["status"] == "ok"]
    assert sum(Decimal(e["charged_usd"]) for e in admits) == Decimal("0.90")
    verified = await api.client.get("/v1/audit/verify", headers=api.auth(api.admin_key))
    assert verified.status_code == 200, verified.text
    assert verified.json()["ok"] is True
