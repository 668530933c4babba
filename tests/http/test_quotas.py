"""Tenant quotas over HTTP, on both stores: over each limit a 429 `quota_exceeded` with Retry-After,
nothing half-recorded, reads and settlements still served, usage reported against the limits, and a
quota set on one process enforced by another."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from haldir.core.keys import Principal
from haldir.core.quotas import seconds_to_next_month
from haldir.http.app import create_app
from haldir.http.auth import records_actions
from haldir.settings import Settings
from tests.conftest import Api

pytestmark = pytest.mark.anyio

ACME = Principal.operator("acme")


async def _session(api: Api, agent: str = "agent-1", key: str | None = None) -> str:
    made = await api.client.post(
        "/v1/sessions",
        json={"agent_id": agent, "scopes": ["execute", "spend"], "spend_limit": "100"},
        headers=api.auth(key or api.admin_key),
    )
    assert made.status_code == 201, made.text
    return str(made.json()["session_id"])


async def _log(api: Api, session_id: str, client: httpx.AsyncClient | None = None) -> httpx.Response:
    body = {"session_id": session_id, "tool": "search", "action": "query"}
    return await (client or api.client).post("/v1/audit", json=body, headers=api.auth(api.admin_key))


async def _size(api: Api) -> int:
    return await api.app.state.store.ledger.size("acme")  # type: ignore[no-any-return]


def _refused(response: httpx.Response, quota: str) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    body = dict(response.json())
    assert body["code"] == "quota_exceeded"
    assert body["quota"] == quota
    assert response.headers["Retry-After"] == str(body["retry_after"])
    return body


async def test_new_actions_over_the_monthly_quota_are_refused_until_the_next_month(api: Api) -> None:
    api.clock.moment = datetime(2026, 4, 30, 23, 0, tzinfo=UTC)
    session_id = await _session(api)
    before = await _size(api)
    await api.governor.limits.set_quota(ACME, actions_per_month=before + 1 + 3)  # the quota change is one
    for _ in range(3):
        assert (await _log(api, session_id)).status_code == 201
    size = await _size(api)
    refused = _refused(await _log(api, session_id), "actions_per_month")
    assert refused["retry_after"] == 3600 == seconds_to_next_month(api.clock.now())
    assert refused["limit"] == refused["used"] == size
    assert "used its" in refused["error"]
    assert "next UTC month" in refused["error"]
    assert await _size(api) == size  # nothing of the refused request was recorded
    # Reads go on; so do revocations.
    reads = await api.client.get("/v1/audit", headers=api.auth(api.admin_key))
    assert reads.status_code == 200
    assert (await api.client.get("/v1/usage", headers=api.auth(api.admin_key))).status_code == 200
    created = await api.client.post(
        "/v1/sessions", json={"agent_id": "x", "scopes": ["read"]}, headers=api.auth(api.admin_key)
    )
    _refused(created, "actions_per_month")
    revoked = await api.client.delete(f"/v1/sessions/{session_id}", headers=api.auth(api.admin_key))
    assert revoked.status_code == 200, revoked.text
    api.clock.advance(3600)  # May: the month's count starts again
    assert (await _log(api, await _session(api))).status_code == 201


async def test_a_governed_call_over_the_quota_is_refused_before_anything_is_recorded(api: Api) -> None:
    session_id = await _session(api)
    await api.governor.limits.set_quota(ACME, actions_per_month=await _size(api) + 2)
    begun = await api.client.post(
        "/v1/tools/lookup/begin",
        json={"session_id": session_id, "arguments": {}, "cost_usd": "1"},
        headers=api.auth(api.admin_key),
    )
    assert begun.status_code == 201, begun.text  # its admission is the last action the quota allows
    size = await _size(api)
    again = await api.client.post(
        "/v1/tools/lookup/begin",
        json={"session_id": session_id, "arguments": {}, "cost_usd": "1"},
        headers=api.auth(api.admin_key),
    )
    _refused(again, "actions_per_month")
    assert await _size(api) == size
    session = await api.client.get(f"/v1/sessions/{session_id}", headers=api.auth(api.admin_key))
    assert session.json()["spent"] == "1.00"  # only the admitted call was charged
    # The admitted call's outcome is still recorded: an admission is never left without its finish.
    finished = await api.client.post(
        f"/v1/tools/calls/{begun.json()['call_id']}/finish",
        json={"status": "ok"},
        headers=api.auth(api.admin_key),
    )
    assert finished.status_code == 200, finished.text
    assert await _size(api) == size + 1


async def test_concurrent_actions_at_the_boundary_never_pass_the_quota(api: Api) -> None:
    session_id = await _session(api)
    quota = await _size(api) + 1 + 5
    await api.governor.limits.set_quota(ACME, actions_per_month=quota)
    answers = await asyncio.gather(*(_log(api, session_id) for _ in range(30)))
    assert sorted(r.status_code for r in answers) == [201] * 5 + [429] * 25
    assert await _size(api) == quota


async def test_a_new_agent_over_the_agents_quota_is_refused(api: Api) -> None:
    await api.governor.limits.set_quota(ACME, agents=2)
    first = await _session(api, "alice")
    await _session(api, "bob")
    body = _refused(
        await api.client.post(
            "/v1/sessions", json={"agent_id": "carol", "scopes": ["read"]}, headers=api.auth(api.admin_key)
        ),
        "agents",
    )
    assert body["limit"] == body["used"] == 2
    assert "carol" in body["error"]
    again = await _session(api, "alice")  # an agent with a session in force may open more
    await api.client.delete(f"/v1/sessions/{first}", headers=api.auth(api.admin_key))
    _refused(  # alice still holds a session in force
        await api.client.post(
            "/v1/sessions", json={"agent_id": "carol", "scopes": ["read"]}, headers=api.auth(api.admin_key)
        ),
        "agents",
    )
    await api.client.delete(f"/v1/sessions/{again}", headers=api.auth(api.admin_key))
    await _session(api, "carol")  # alice has none left: room for carol
    api.clock.advance(2 * 3600)  # every session expired (the default TTL is an hour)
    await _session(api, "dave")
    await _session(api, "erin")


async def test_requests_over_the_per_second_limit_are_refused_with_retry_after(api: Api) -> None:
    await api.governor.limits.set_quota(ACME, requests_per_second=5)
    api.clock.moment = datetime(2026, 4, 7, 12, 0, 0, 100_000, tzinfo=UTC)
    answers = [await api.client.get("/v1/usage", headers=api.auth(api.admin_key)) for _ in range(7)]
    assert [r.status_code for r in answers] == [200] * 5 + [429] * 2
    body = _refused(answers[-1], "requests_per_second")
    assert body["retry_after"] == 1
    other = await api.key("*", tenant="globex")  # another tenant is not limited
    assert (await api.client.get("/v1/usage", headers=api.auth(other))).status_code == 200
    api.clock.advance(1)
    assert (await api.client.get("/v1/usage", headers=api.auth(api.admin_key))).status_code == 200


@pytest.fixture
async def second(api: Api, store_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Another server process on the same store and machine: its own caches and leases."""
    settings = Settings(
        data_dir=tmp_path, database_url=store_url, custom_scopes=("stripe",), stdio_tenants=("acme",)
    )
    app = create_app(settings, clock=api.clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://haldir.test") as client:
            yield client


async def _listening(api: Api) -> None:
    with anyio.fail_after(10):
        while api.app.state.store.changes.epoch() is None:  # noqa: ASYNC110 - polling the listener task
            await anyio.sleep(0.01)  # the PostgreSQL listener connecting, not time passing


async def test_a_quota_set_through_one_process_is_enforced_by_another_at_its_next_request(
    api: Api, second: httpx.AsyncClient
) -> None:
    await _listening(api)
    session_id = await _session(api)
    assert (await _log(api, session_id, second)).status_code == 201  # `second` caches "no quota"
    await api.governor.limits.set_quota(ACME, actions_per_month=1)
    _refused(await _log(api, session_id, second), "actions_per_month")
    await api.governor.limits.set_quota(ACME, actions_per_month=0)  # 0 removes the limit
    assert (await _log(api, session_id, second)).status_code == 201


async def test_processes_share_one_per_second_limit(api: Api, second: httpx.AsyncClient) -> None:
    await api.governor.limits.set_quota(ACME, requests_per_second=10)
    api.clock.moment = datetime(2026, 4, 7, 12, 0, 0, 100_000, tzinfo=UTC)
    statuses = []
    for _ in range(10):
        for client in (api.client, second):
            statuses.append((await client.get("/v1/usage", headers=api.auth(api.admin_key))).status_code)
    assert statuses.count(200) == 10  # of 20 requests in one second over two processes


async def test_usage_and_metrics_report_use_against_each_quota(api: Api) -> None:
    await _session(api, "alice")
    await _session(api, "bob")
    await api.governor.limits.set_quota(ACME, actions_per_month=50_000, agents=10, requests_per_second=100)
    usage = (await api.client.get("/v1/usage", headers=api.auth(api.admin_key))).json()
    actions = usage["total"]["actions"]
    assert usage["quota"] == {
        "actions_this_month": actions,
        "actions_per_month": 50_000,
        "agents_active": 2,
        "agents": 10,
        "requests_per_second": 100,
    }
    metrics = (await api.client.get("/v1/metrics", headers=api.auth(api.admin_key))).json()
    assert metrics["actions_quota"] == 50_000
    assert metrics["agents_quota"] == 10
    assert metrics["requests_per_second_quota"] == 100
    unlimited = await api.key("*", tenant="globex")
    theirs = (await api.client.get("/v1/usage", headers=api.auth(unlimited))).json()["quota"]
    assert theirs["actions_per_month"] is None
    assert theirs["agents"] is None


async def test_setting_a_quota_is_recorded_in_the_ledger(api: Api) -> None:
    await api.governor.limits.set_quota(ACME, agents=3)
    await api.governor.limits.set_quota(ACME, actions_per_month=100)  # agents stays 3
    found = await api.client.get("/v1/audit", params={"tool": "limits"}, headers=api.auth(api.admin_key))
    details = [entry["details"] for entry in found.json()["entries"]]
    assert [(d["actions_per_month"], d["agents"]) for d in details] == [(100, 3), (None, 3)]


@pytest.mark.parametrize(
    ("method", "path", "records"),
    [
        ("POST", "/v1/audit", True),
        ("POST", "/v1/sessions", True),
        ("PUT", "/v1/audit/anomaly-settings", True),
        ("POST", "/v1/payments/authorize", True),
        ("POST", "/v1/approvals/request", True),
        ("GET", "/v1/audit", False),
        ("DELETE", "/v1/sessions/ses_1", False),
        ("POST", "/v1/tools/calls/call_1/finish", False),  # settles an admitted call
        ("POST", "/v1/payments/pay_1/capture", False),
        ("POST", "/v1/payments/pay_1/void", False),
        ("POST", "/v1/approvals/apr_1/approve", False),
        ("POST", "/v1/approvals/apr_1/deny", False),
        ("POST", "/v1/tools/lookup/begin", False),  # the proxy checks governed calls itself
        ("POST", "/v1/proxy/call", False),
    ],
)
def test_which_requests_the_actions_quota_judges(method: str, path: str, records: bool) -> None:
    assert records_actions(method, path) is records


async def test_a_per_second_limit_lowered_within_the_second_grants_nothing_more(api: Api) -> None:
    limits = api.app.state.store.limits
    await api.governor.limits.set_quota(ACME, requests_per_second=10)  # creates the tenant's row
    assert await limits.lease("acme", window=100, wanted=8, limit=10) == 8
    assert await limits.lease("acme", window=100, wanted=8, limit=10) == 2  # what is left of the second
    assert await limits.lease("acme", window=100, wanted=1, limit=5) == 0  # lowered: none, not minus 5
    assert await limits.lease("acme", window=100, wanted=1, limit=10) == 0  # and the count did not drop
    assert await limits.lease("acme", window=101, wanted=3, limit=5) == 3  # the next second starts afresh


async def test_concurrent_sessions_for_new_agents_never_pass_the_agents_quota(api: Api) -> None:
    await api.governor.limits.set_quota(ACME, agents=3)

    async def create(agent: str) -> int:
        made = await api.client.post(
            "/v1/sessions", json={"agent_id": agent, "scopes": ["read"]}, headers=api.auth(api.admin_key)
        )
        return made.status_code

    answers = await asyncio.gather(*(create(f"agent-{n}") for n in range(12)))
    assert sorted(answers) == [201] * 3 + [429] * 9
    usage = (await api.client.get("/v1/usage", headers=api.auth(api.admin_key))).json()
    assert usage["quota"]["agents_active"] == 3
