"""Approvals over HTTP: rules hold payments for a person; an approval is bound to the exact request,
used once, decided out of band, and every step of it is in the ledger."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import Api

pytestmark = pytest.mark.anyio


async def _session(api: Api, key: str, *, agent: str = "buyer", limit: str = "1000") -> str:
    made = await api.client.post(
        "/v1/sessions",
        json={"agent_id": agent, "scopes": ["spend", "read"], "spend_limit": limit, "ttl": 86400},
        headers=api.auth(key),
    )
    assert made.status_code == 201, made.text
    return str(made.json()["session_id"])


async def _authorize(api: Api, key: str, session_id: str, amount: Any) -> Any:
    return await api.client.post(
        "/v1/payments/authorize", json={"session_id": session_id, "amount": amount}, headers=api.auth(key)
    )


async def _trail(api: Api, session_id: str) -> list[dict[str, Any]]:
    found = await api.client.get(
        "/v1/audit", params={"session_id": session_id, "limit": 100}, headers=api.auth(api.admin_key)
    )
    assert found.status_code == 200, found.text
    return sorted(found.json()["entries"], key=lambda entry: entry["leaf_index"])


async def _agent_and_approver(api: Api) -> tuple[str, str]:
    agent = await api.key("sessions:write", "sessions:read", "payments:write", "approvals:read")
    approver = await api.key("approvals:read", "approvals:write")
    return agent, approver


async def test_the_seeds_spend_over_rule_is_created_as_printed(api: Api) -> None:
    made = await api.client.post(
        "/v1/approvals/rules", json={"type": "spend_over", "threshold": 100}, headers=api.auth(api.admin_key)
    )

    assert made.status_code == 201, made.text
    rule = made.json()
    assert rule["rule_id"].startswith("arl_")
    assert (rule["type"], rule["threshold"], rule["agent_id"]) == ("spend_over", "100.00", None)
    listed = await api.client.get("/v1/approvals/rules", headers=api.auth(api.admin_key))
    assert [r["rule_id"] for r in listed.json()["rules"]] == [rule["rule_id"]]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"type": "spend_over"}, "threshold"),
        ({"type": "spend_over", "threshold": -1}, "negative"),
        ({"type": "tool"}, "tool"),
        ({"type": "agent"}, "agent_id"),
        ({"type": "tool", "tool": "x", "threshold": 5}, "threshold"),
        ({"type": "sometimes"}, "type"),
    ],
)
async def test_a_malformed_rule_is_refused_with_what_is_wrong(
    api: Api, spec: dict[str, Any], problem: str
) -> None:
    made = await api.client.post("/v1/approvals/rules", json=spec, headers=api.auth(api.admin_key))

    assert made.status_code == 400, made.text
    assert problem in made.json()["error"]


async def test_a_payment_over_the_threshold_waits_runs_once_approved_and_only_once(api: Api) -> None:
    agent, approver = await _agent_and_approver(api)
    await api.client.post(
        "/v1/approvals/rules", json={"type": "spend_over", "threshold": 100}, headers=api.auth(api.admin_key)
    )
    session_id = await _session(api, agent)

    small = await _authorize(api, agent, session_id, 50)
    held = await _authorize(api, agent, session_id, 150)

    assert small.status_code == 201, small.text
    assert held.status_code == 202, held.text
    body = held.json()
    assert body["code"] == "approval_required"
    approval_id = body["approval_id"]
    assert approval_id.startswith("apr_")
    assert body["expires_at"]
    assert approval_id in body["next"]
    again = await _authorize(api, agent, session_id, 150)
    assert (again.status_code, again.json()["approval_id"]) == (202, approval_id)  # one request, not two
    pending = await api.client.get("/v1/approvals/pending", headers=api.auth(approver))
    assert [a["approval_id"] for a in pending.json()["approvals"]] == [approval_id]
    assert pending.json()["approvals"][0]["amount_usd"] == "150.00"

    other_amount = await api.client.post(
        f"/v1/approvals/{approval_id}/approve",
        json={"note": "ok for the conference"},
        headers=api.auth(approver),
    )
    assert other_amount.status_code == 200, other_amount.text
    assert other_amount.json()["status"] == "approved"
    assert (await _authorize(api, agent, session_id, 151)).status_code == 202  # a different request

    ran = await _authorize(api, agent, session_id, 150)
    assert ran.status_code == 201, ran.text
    assert ran.json()["remaining_budget"] == "800.00"
    shown = await api.client.get(f"/v1/approvals/{approval_id}", headers=api.auth(approver))
    assert shown.json()["status"] == "consumed"
    once_more = await _authorize(api, agent, session_id, 150)
    assert once_more.status_code == 202
    assert once_more.json()["approval_id"] != approval_id

    actions = [(e["action"], e["status"]) for e in await _trail(api, session_id)]
    assert actions == [
        ("payment.authorize", "ok"),
        ("approval.request", "ok"),
        ("approval.approve", "ok"),
        ("approval.request", "ok"),  # for 151.00: another request
        ("approval.consume", "ok"),
        ("payment.authorize", "ok"),
        ("approval.request", "ok"),
    ]


async def test_the_key_that_asked_cannot_decide_and_a_denial_stands(api: Api) -> None:
    agent = await api.key("sessions:write", "payments:write", "approvals:read", "approvals:write")
    approver = await api.key("approvals:write")
    await api.client.post(
        "/v1/approvals/rules", json={"type": "spend_over", "threshold": 10}, headers=api.auth(api.admin_key)
    )
    session_id = await _session(api, agent)
    approval_id = (await _authorize(api, agent, session_id, 20)).json()["approval_id"]

    itself = await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=api.auth(agent))
    denied = await api.client.post(
        f"/v1/approvals/{approval_id}/deny", json={"note": "not this vendor"}, headers=api.auth(approver)
    )
    retried = await _authorize(api, agent, session_id, 20)
    late = await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=api.auth(api.admin_key))

    assert itself.status_code == 403
    assert itself.json()["code"] == "self_approval"
    assert denied.status_code == 200
    assert denied.json()["status"] == "denied"
    assert denied.json()["decided_by"] == approver[:12]
    assert denied.json()["note"] == "not this vendor"
    assert retried.status_code == 403
    assert retried.json()["code"] == "approval_denied"
    assert "not this vendor" in retried.json()["error"]
    assert late.status_code == 409
    assert late.json()["approval_status"] == "denied"
    trail = await _trail(api, session_id)
    assert [(e["action"], e["status"]) for e in trail][-2:] == [
        ("approval.deny", "ok"),
        ("payment.authorize", "denied"),
    ]
    api.clock.advance(15 * 60)  # the denial has stood as long as a request waits: ask again
    assert (await _authorize(api, agent, session_id, 20)).status_code == 202


async def test_a_request_nobody_decides_expires_and_is_denied(api: Api) -> None:
    agent, approver = await _agent_and_approver(api)
    await api.client.post(
        "/v1/approvals/rules", json={"type": "agent", "agent_id": "buyer"}, headers=api.auth(api.admin_key)
    )
    session_id = await _session(api, agent)
    approval_id = (await _authorize(api, agent, session_id, 1)).json()["approval_id"]

    api.clock.advance(15 * 60)
    shown = await api.client.get(f"/v1/approvals/{approval_id}", headers=api.auth(approver))
    decided = await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=api.auth(approver))
    pending = await api.client.get("/v1/approvals/pending", headers=api.auth(approver))

    assert shown.json()["status"] == "expired"
    assert decided.status_code == 409
    assert decided.json()["approval_status"] == "expired"
    assert pending.json()["approvals"] == []
    actions = [e["action"] for e in await _trail(api, session_id)]
    assert actions == ["approval.request", "approval.expire"]


async def test_an_approval_unused_for_its_use_window_expires(api: Api) -> None:
    agent, approver = await _agent_and_approver(api)
    await api.client.post(
        "/v1/approvals/rules", json={"type": "spend_over", "threshold": 5}, headers=api.auth(api.admin_key)
    )
    session_id = await _session(api, agent)
    approval_id = (await _authorize(api, agent, session_id, 6)).json()["approval_id"]
    await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=api.auth(approver))

    api.clock.advance(3600)
    retried = await _authorize(api, agent, session_id, 6)

    assert retried.status_code == 202
    assert retried.json()["approval_id"] != approval_id
    shown = await api.client.get(f"/v1/approvals/{approval_id}", headers=api.auth(approver))
    assert shown.json()["status"] == "expired"


async def test_two_approvers_at_once_one_wins_the_other_gets_409(api: Api) -> None:
    agent, approver = await _agent_and_approver(api)
    other = await api.key("approvals:write")
    await api.client.post(
        "/v1/approvals/rules", json={"type": "spend_over", "threshold": 5}, headers=api.auth(api.admin_key)
    )
    session_id = await _session(api, agent)
    approval_id = (await _authorize(api, agent, session_id, 6)).json()["approval_id"]

    answers = await asyncio.gather(
        *(
            api.client.post(f"/v1/approvals/{approval_id}/{verb}", headers=api.auth(key))
            for verb, key in [("approve", approver), ("deny", other)] * 4
        )
    )

    assert sorted(answer.status_code for answer in answers) == [200] + [409] * 7
    decisions = [e["action"] for e in await _trail(api, session_id) if e["action"] != "approval.request"]
    assert len(decisions) == 1


async def test_concurrent_retries_of_an_approved_payment_run_it_exactly_once(api: Api) -> None:
    agent, approver = await _agent_and_approver(api)
    await api.client.post(
        "/v1/approvals/rules", json={"type": "spend_over", "threshold": 5}, headers=api.auth(api.admin_key)
    )
    session_id = await _session(api, agent)
    approval_id = (await _authorize(api, agent, session_id, 7)).json()["approval_id"]
    await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=api.auth(approver))

    answers = await asyncio.gather(*(_authorize(api, agent, session_id, 7) for _ in range(12)))

    assert sorted(answer.status_code for answer in answers) == [201] + [202] * 11
    payments = await api.client.get(
        "/v1/payments", params={"session_id": session_id}, headers=api.auth(api.admin_key)
    )
    assert len(payments.json()["payments"]) == 1


async def test_a_session_asks_ahead_and_the_request_is_bound_to_it(api: Api) -> None:
    agent, _approver = await _agent_and_approver(api)
    session_id = await _session(api, agent)

    asked = await api.client.post(
        "/v1/approvals/request",
        json={
            "session_id": session_id,
            "tool": "wire_transfer",
            "amount": "2500",
            "reason": "vendor invoice",
        },
        headers=api.auth(agent),
    )
    again = await api.client.post(
        "/v1/approvals/request",
        json={"session_id": session_id, "tool": "wire_transfer", "amount": "2500"},
        headers=api.auth(agent),
    )

    assert asked.status_code == 201, asked.text
    approval = asked.json()
    assert (approval["status"], approval["kind"], approval["reason"]) == (
        "pending",
        "request",
        "vendor invoice",
    )
    assert approval["requested_by"] == agent[:12]
    assert again.json()["approval_id"] == approval["approval_id"]  # the open request of the same thing


async def test_rules_and_approvals_of_one_tenant_are_invisible_to_another(api: Api) -> None:
    agent, _ = await _agent_and_approver(api)
    await api.client.post(
        "/v1/approvals/rules", json={"type": "spend_over", "threshold": 5}, headers=api.auth(api.admin_key)
    )
    session_id = await _session(api, agent)
    approval_id = (await _authorize(api, agent, session_id, 6)).json()["approval_id"]
    rule_id = (await api.client.get("/v1/approvals/rules", headers=api.auth(api.admin_key))).json()["rules"][
        0
    ]["rule_id"]
    stranger = api.auth(await api.key("*", tenant="globex"))

    assert (await api.client.get("/v1/approvals/rules", headers=stranger)).json()["rules"] == []
    assert (await api.client.get("/v1/approvals/pending", headers=stranger)).json()["approvals"] == []
    for method, path in [
        ("GET", f"/v1/approvals/{approval_id}"),
        ("POST", f"/v1/approvals/{approval_id}/approve"),
        ("POST", f"/v1/approvals/{approval_id}/deny"),
        ("DELETE", f"/v1/approvals/rules/{rule_id}"),
    ]:
        answer = await api.client.request(method, path, headers=stranger)
        assert answer.status_code == 404, (method, path, answer.text)
    other_session = await _session(api, await api.key("*", tenant="globex"))
    assert (await _authorize(api, (await api.key("*", tenant="globex")), other_session, 6)).status_code == 201


async def test_the_sweep_records_requests_nobody_looked_at_as_expired_once(api: Api) -> None:
    agent, _ = await _agent_and_approver(api)
    await api.client.post(
        "/v1/approvals/rules", json={"type": "spend_over", "threshold": 5}, headers=api.auth(api.admin_key)
    )
    session_id = await _session(api, agent)
    await _authorize(api, agent, session_id, 6)
    await _authorize(api, agent, session_id, 7)

    before = await api.governor.approvals.expire_lapsed()
    api.clock.advance(15 * 60)
    swept = await api.governor.approvals.expire_lapsed()
    again = await api.governor.approvals.expire_lapsed()

    assert (before, swept, again) == (0, 2, 0)
    actions = [e["action"] for e in await _trail(api, session_id)]
    assert actions == ["approval.request", "approval.request", "approval.expire", "approval.expire"]


async def test_concurrent_first_attempts_of_one_request_share_one_approval(api: Api) -> None:
    agent, _ = await _agent_and_approver(api)
    await api.client.post(
        "/v1/approvals/rules", json={"type": "spend_over", "threshold": 5}, headers=api.auth(api.admin_key)
    )
    session_id = await _session(api, agent)

    answers = await asyncio.gather(*(_authorize(api, agent, session_id, 9) for _ in range(10)))

    assert {answer.status_code for answer in answers} == {202}
    assert len({answer.json()["approval_id"] for answer in answers}) == 1
    actions = [e["action"] for e in await _trail(api, session_id)]
    assert actions == ["approval.request"]


async def test_an_agent_that_asked_ahead_for_a_payment_makes_it_once_approved(api: Api) -> None:
    agent, approver = await _agent_and_approver(api)
    await api.client.post(
        "/v1/approvals/rules", json={"type": "spend_over", "threshold": 100}, headers=api.auth(api.admin_key)
    )
    session_id = await _session(api, agent)
    asked = await api.client.post(
        "/v1/approvals/request",
        json={"session_id": session_id, "tool": "payments", "amount": "150", "reason": "hotel"},
        headers=api.auth(agent),
    )
    approval_id = asked.json()["approval_id"]
    await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=api.auth(approver))

    paid = await _authorize(api, agent, session_id, 150)

    assert paid.status_code == 201, paid.text
    shown = await api.client.get(f"/v1/approvals/{approval_id}", headers=api.auth(approver))
    assert shown.json()["status"] == "consumed"
