"""Approvals where governed calls go through: `/v1/proxy/call`, the gateway at `/mcp/gateway` and
`haldir proxy`, against a real server and a real MCP server."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.mcp_servers import time_server_params
from tests.proxy.conftest import TIMEOUT_S, Tenant
from tests.proxy.test_gateway import CONVERT, gateway, refused, structured
from tests.proxy.test_gateway_stdio import proxy_env, stdio_proxy

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


async def _approver(tenant: Tenant) -> dict[str, str]:
    """Headers of a second key of the tenant, which may decide (the tenant's own key asked)."""
    made = await tenant.rest.post("/v1/keys", json={"name": "approver", "scopes": ["approvals:write"]})
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['key']}"}


async def _held_tools(tenant: Tenant, pattern: str = "convert_*") -> None:
    await tenant.register("time", time_server_params())
    rule = await tenant.rest.post("/v1/approvals/rules", json={"type": "tool", "tool": pattern})
    assert rule.status_code == 201, rule.text


async def _call(tenant: Tenant, session_id: str, arguments: dict[str, Any]) -> Any:
    return await tenant.rest.post(
        "/v1/proxy/call", json={"session_id": session_id, "tool": "convert_time", "arguments": arguments}
    )


async def test_a_held_rest_call_runs_nothing_until_approved_then_runs_exactly_that_call_once(
    tenant: Tenant,
) -> None:
    await _held_tools(tenant)
    approver = await _approver(tenant)
    session_id = await tenant.session("execute")

    held = await _call(tenant, session_id, CONVERT)
    assert held.status_code == 202, held.text
    approval_id = held.json()["approval_id"]
    decided = await tenant.rest.post(f"/v1/approvals/{approval_id}/approve", headers=approver)
    assert decided.status_code == 200, decided.text
    other_arguments = await _call(tenant, session_id, {**CONVERT, "time": "13:00"})
    ran = await _call(tenant, session_id, CONVERT)
    again = await _call(tenant, session_id, CONVERT)

    assert other_arguments.status_code == 202
    assert other_arguments.json()["approval_id"] != approval_id
    assert ran.status_code == 200, ran.text
    assert not ran.json().get("isError")
    assert again.status_code == 202
    entries = await tenant.recorded(session_id)
    steps = [(e["action"], (e["details"] or {}).get("phase")) for e in entries]
    assert steps == [
        ("approval.request", None),
        ("approval.approve", None),
        ("approval.request", None),
        ("approval.consume", None),
        ("tools/call", "admit"),
        ("tools/call", "finish"),
        ("approval.request", None),
    ]
    consumed = entries[3]["details"]
    assert consumed["approval_id"] == approval_id
    assert consumed["arguments_sha256"] == entries[4]["details"]["arguments_sha256"]


async def test_a_policy_denial_is_never_offered_for_approval(tenant: Tenant) -> None:
    await _held_tools(tenant)
    await tenant.rest.post("/v1/proxy/policies", json={"type": "deny", "tools": ["convert_time"]})
    session_id = await tenant.session("execute")

    denied = await _call(tenant, session_id, CONVERT)

    assert denied.status_code == 403
    assert denied.json()["code"] == "tool_denied"
    pending = await tenant.rest.get("/v1/approvals/pending")
    assert pending.json()["approvals"] == []


async def test_the_http_gateway_answers_a_tool_error_naming_the_approval_and_runs_it_once_approved(
    tenant: Tenant,
) -> None:
    await _held_tools(tenant)
    approver = await _approver(tenant)
    session_id = await tenant.session("execute")
    async with gateway(tenant, session_id) as client:
        held = await refused(client, "convert_time", CONVERT)
        approval_id = held["approval_id"]
        waiting = await structured(client, "haldir_get_approval", {"approval_id": approval_id})
        await tenant.rest.post(f"/v1/approvals/{approval_id}/approve", headers=approver)
        approved = await structured(client, "haldir_get_approval", {"approval_id": approval_id})
        with anyio.fail_after(TIMEOUT_S):
            ran = await client.call_tool("convert_time", CONVERT)

    assert held["code"] == "approval_required"
    assert approval_id in held["next"]
    assert (waiting["status"], approved["status"]) == ("pending", "approved")
    assert not ran.is_error, ran.content


async def test_haldir_proxy_holds_the_call_open_and_runs_it_when_a_person_approves(tenant: Tenant) -> None:
    await _held_tools(tenant)
    approver = await _approver(tenant)
    session_id = await tenant.session("execute")
    env = proxy_env(tenant, session_id=session_id, approval_wait_seconds="20")
    results: list[Any] = []

    async def approve_when_asked() -> None:
        with anyio.fail_after(TIMEOUT_S):
            while True:
                pending = (await tenant.rest.get("/v1/approvals/pending")).json()["approvals"]
                if pending:
                    break
                await anyio.sleep(0.05)  # polling the server process for the request to appear
        await tenant.rest.post(f"/v1/approvals/{pending[0]['approval_id']}/approve", headers=approver)

    async with stdio_proxy(env) as client, anyio.create_task_group() as tasks:
        tasks.start_soon(approve_when_asked)
        with anyio.fail_after(TIMEOUT_S):
            results.append(await client.call_tool("convert_time", CONVERT))

    assert not results[0].is_error, results[0].content
    entries = await tenant.recorded(session_id)
    assert [e["action"] for e in entries] == [
        "approval.request",
        "approval.approve",
        "approval.consume",
        "tools/call",
        "tools/call",
    ]


async def test_haldir_proxy_without_a_wait_answers_approval_required_at_once(tenant: Tenant) -> None:
    await _held_tools(tenant)
    session_id = await tenant.session("execute")
    async with stdio_proxy(proxy_env(tenant, session_id=session_id)) as client:
        held = await refused(client, "convert_time", CONVERT)
        shown = await structured(client, "haldir_get_approval", {"approval_id": held["approval_id"]})

    assert held["code"] == "approval_required"
    assert shown["status"] == "pending"
    assert shown["tool"] == "convert_time"


async def test_a_call_whose_cost_is_over_a_spend_over_threshold_is_held_and_charged_once_approved(
    tenant: Tenant,
) -> None:
    await tenant.register("time", time_server_params())
    await tenant.rest.post(
        "/v1/proxy/policies", json={"type": "tool_cost", "tool": "convert_time", "cost_usd": "5"}
    )
    await tenant.rest.post("/v1/approvals/rules", json={"type": "spend_over", "threshold": "2"})
    approver = await _approver(tenant)
    session_id = await tenant.session("execute", spend_limit="20")
    free = await tenant.rest.post(
        "/v1/proxy/call",
        json={"session_id": session_id, "tool": "get_current_time", "arguments": {"timezone": "UTC"}},
    )

    held = await _call(tenant, session_id, CONVERT)
    assert held.status_code == 202, held.text
    shown = await tenant.rest.get(f"/v1/approvals/{held.json()['approval_id']}")
    await tenant.rest.post(f"/v1/approvals/{held.json()['approval_id']}/approve", headers=approver)
    ran = await _call(tenant, session_id, CONVERT)

    assert free.status_code == 200, free.text  # costs nothing: no rule holds it
    assert (shown.json()["kind"], shown.json()["amount_usd"]) == ("call", "5.00")
    assert ran.status_code == 200, ran.text
    session = await tenant.rest.get(f"/v1/sessions/{session_id}")
    assert session.json()["spent"] == "5.00"


async def test_concurrent_retries_of_an_approved_call_forward_it_exactly_once(tenant: Tenant) -> None:
    await _held_tools(tenant)
    approver = await _approver(tenant)
    session_id = await tenant.session("execute")
    approval_id = (await _call(tenant, session_id, CONVERT)).json()["approval_id"]
    await tenant.rest.post(f"/v1/approvals/{approval_id}/approve", headers=approver)
    answers: list[int] = []

    async def retry() -> None:
        answers.append((await _call(tenant, session_id, CONVERT)).status_code)

    with anyio.fail_after(TIMEOUT_S):
        async with anyio.create_task_group() as tasks:
            for _ in range(10):
                tasks.start_soon(retry)

    assert sorted(answers) == [200] + [202] * 9
    entries = await tenant.recorded(session_id)
    assert [e["details"].get("phase") for e in entries if e["action"] == "tools/call"] == ["admit", "finish"]
