"""The events webhooks deliver are recorded in the transaction of what caused them, once per cause, and
a committed event wakes this process's worker at once."""

from __future__ import annotations

import json
from decimal import Decimal

import anyio
import anyio.lowlevel
import pytest
import sqlalchemy as sa

from haldir.core.keys import Principal
from haldir.errors import ApprovalRequired
from haldir.store.schema import events
from haldir.webhooks import DeliveryWorker, HttpSender
from tests.webhooks.conftest import LOOPBACK, Hooks
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.anyio

ACME = Principal.operator("acme")


async def _events(hooks: Hooks, type: str) -> list[dict[str, object]]:
    async with hooks.store.read_connection() as conn:
        rows = await conn.execute(
            sa.select(events.c.payload).where(events.c.tenant_id == "acme", events.c.type == type)
        )
        return [dict(row.payload) for row in rows]


async def _spender(hooks: Hooks, limit: str) -> str:
    created = await hooks.governor.sessions.create_session(
        ACME, agent_id="buyer", scopes=["spend"], spend_limit=Decimal(limit)
    )
    return created.value.session_id


async def test_budget_threshold_is_recorded_once_when_a_charge_crosses_eighty_percent(hooks: Hooks) -> None:
    session_id = await _spender(hooks, "10")
    for amount in ("5", "2.99"):  # 79.9 %: not yet
        await hooks.governor.budgets.authorize_payment(ACME, session_id=session_id, amount=amount)
    assert await _events(hooks, "budget.threshold") == []
    await hooks.governor.budgets.authorize_payment(ACME, session_id=session_id, amount="0.01")  # 80 %
    await hooks.governor.budgets.authorize_payment(ACME, session_id=session_id, amount="1")  # past it
    [crossed] = await _events(hooks, "budget.threshold")
    assert crossed["session_id"] == session_id
    assert (crossed["spent_usd"], crossed["spend_limit_usd"], crossed["threshold_percent"]) == (
        "8.00",
        "10.00",
        80,
    )
    assert await _events(hooks, "budget.exhausted") == []


async def test_a_charge_from_below_eighty_percent_to_the_limit_records_threshold_and_exhausted(
    hooks: Hooks,
) -> None:
    session_id = await _spender(hooks, "10")
    await hooks.governor.budgets.log_action(ACME, session_id=session_id, tool="t", action="a", cost_usd="10")
    assert len(await _events(hooks, "budget.threshold")) == 1
    assert len(await _events(hooks, "budget.exhausted")) == 1


async def test_session_revoked_is_recorded_only_by_the_revoke_that_revoked(hooks: Hooks) -> None:
    created = await hooks.governor.sessions.create_session(ACME, agent_id="bot", scopes=["read"])
    session_id = created.value.session_id
    await hooks.governor.sessions.revoke_session(ACME, session_id)
    await hooks.governor.sessions.revoke_session(ACME, session_id)
    [revoked] = await _events(hooks, "session.revoked")
    assert revoked["session_id"] == session_id


async def test_tool_definition_changed_is_recorded_when_a_pinned_tool_changes(hooks: Hooks) -> None:
    await hooks.governor.registry.register_upstream(ACME, name="up", url="http://127.0.0.1:9/mcp")
    tool = {"name": "search", "description": "v1", "inputSchema": {"type": "object"}}
    await hooks.governor.registry.record_tools("acme", "up", [tool])
    assert await _events(hooks, "tool.definition_changed") == []
    await hooks.governor.registry.record_tools("acme", "up", [{**tool, "description": "v2"}])
    await hooks.governor.registry.record_tools("acme", "up", [{**tool, "description": "v2"}])
    [changed] = await _events(hooks, "tool.definition_changed")
    assert (changed["upstream"], changed["tool"]) == ("up", "search")
    assert changed["pinned_hash"] != changed["current_hash"]


async def test_a_flagged_audit_entry_is_delivered_as_audit_flagged(hooks: Hooks, listener: Receiver) -> None:
    created = await hooks.governor.webhooks.create_webhook(ACME, url=listener.url, events=["audit.flagged"])
    session_id = await _spender(hooks, "1")
    await hooks.governor.budgets.log_action(ACME, session_id=session_id, tool="t", action="a", cost_usd="2")
    with anyio.fail_after(30):
        assert await hooks.worker.step() == 1
    [got] = listener.received
    payload = got.verify(created.secret)
    assert payload["type"] == "audit.flagged"  # type: ignore[index]
    assert "over_budget" in payload["data"]["flag_reason"]  # type: ignore[index]


async def test_a_committed_event_wakes_the_running_worker_without_waiting_for_a_poll(
    hooks: Hooks, listener: Receiver
) -> None:
    created = await hooks.governor.webhooks.create_webhook(ACME, url=listener.url, events=["session.revoked"])
    sender = HttpSender(outbound_allow=LOOPBACK)
    worker = DeliveryWorker(
        store=hooks.store.webhooks,
        webhooks=hooks.governor.webhooks,
        sender=sender,
        clock=hooks.clock,
        outbox=hooks.store.outbox,
        poll_seconds=3600,  # only the outbox's wake can deliver within the test's bound
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await anyio.lowlevel.checkpoint()  # let it reach its first wait
            session = await hooks.governor.sessions.create_session(ACME, agent_id="bot", scopes=["read"])
            await hooks.governor.sessions.revoke_session(ACME, session.value.session_id)
            with anyio.fail_after(20):
                await anyio.to_thread.run_sync(listener.wait_for, 1)
            tg.cancel_scope.cancel()
    finally:
        await sender.aclose()
    assert json.loads(listener.received[0].body)["type"] == "session.revoked"
    listener.received[0].verify(created.secret)


async def test_an_approval_request_and_its_decision_are_delivered_without_argument_values(
    hooks: Hooks, listener: Receiver
) -> None:
    created = await hooks.governor.webhooks.create_webhook(
        ACME, url=listener.url, events=["approval.requested", "approval.decided"]
    )
    await hooks.governor.approvals.create_rule(ACME, {"type": "spend_over", "threshold": 10})
    session_id = await _spender(hooks, "100")
    with pytest.raises(ApprovalRequired) as held:
        await hooks.governor.budgets.authorize_payment(ACME, session_id=session_id, amount="25")
    approval_id = held.value.details["approval_id"]
    approver = Principal(tenant_id="acme", key_prefix="hld_Approver", scopes=frozenset({"approvals:write"}))
    await hooks.governor.approvals.approve(approver, approval_id, note="ok")

    with anyio.fail_after(30):
        assert await hooks.worker.step() == 2
    payloads = [got.verify(created.secret) for got in listener.received]
    by_type = {payload["type"]: payload["data"] for payload in payloads}  # type: ignore[index]
    assert by_type["approval.requested"]["approval_id"] == approval_id
    assert (by_type["approval.requested"]["status"], by_type["approval.requested"]["amount_usd"]) == (
        "pending",
        "25.00",
    )
    assert (by_type["approval.decided"]["status"], by_type["approval.decided"]["decided_by"]) == (
        "approved",
        "hld_Approver",
    )
    assert "arguments" not in json.dumps(by_type).replace("arguments_sha256", "")
