"""Usage, metrics and status over HTTP: counters kept as the ledger appends agree with the ledger itself,
the overview counts what the tenant holds now, and status lights each component."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import Api
from tests.http.routes import WALKER_HOOK_URL

pytestmark = pytest.mark.anyio


async def _session(api: Api, agent: str, *, ttl: int = 10 * 86400, limit: str = "1000") -> str:
    made = await api.client.post(
        "/v1/sessions",
        json={"agent_id": agent, "scopes": ["spend", "read"], "spend_limit": limit, "ttl": ttl},
        headers=api.auth(api.admin_key),
    )
    assert made.status_code == 201, made.text
    return str(made.json()["session_id"])


async def _log(api: Api, session_id: str, **body: Any) -> None:
    payload = {"session_id": session_id, "tool": "search", "action": "query", **body}
    logged = await api.client.post("/v1/audit", json=payload, headers=api.auth(api.admin_key))
    assert logged.status_code == 201, logged.text


async def _get(api: Api, path: str, key: str | None = None, **params: Any) -> Any:
    found = await api.client.get(path, params=params, headers=api.auth(key or api.admin_key))
    assert found.status_code == 200, found.text
    return found.json()


async def _entries(api: Api) -> list[dict[str, Any]]:
    entries, cursor = [], None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = await _get(api, "/v1/audit", **params)
        entries += page["entries"]
        cursor = page.get("next_cursor")
        if not cursor:
            return entries


async def test_usage_by_day_and_agent_equals_a_count_of_the_ledger(api: Api) -> None:
    # Two agents over three days that cross a month's end, with charges, refusals, errors and a Vault read.
    api.clock.moment = api.clock.moment.replace(month=3, day=30, hour=22)
    alice, bob = await _session(api, "alice"), await _session(api, "bob")
    await _log(api, alice, cost_usd="1.25")
    await _log(api, bob, status="denied")
    api.clock.advance(86400)
    await _log(api, alice, status="error")
    payment = await api.client.post(
        "/v1/payments/authorize", json={"session_id": bob, "amount": "2.50"}, headers=api.auth(api.admin_key)
    )
    assert payment.status_code == 201, payment.text
    stored = await api.client.post(
        "/v1/secrets", json={"name": "k", "value": "v"}, headers=api.auth(api.admin_key)
    )
    assert stored.status_code == 201, stored.text
    api.clock.advance(86400)
    await _log(api, bob, cost_usd="0.5")

    report = await _get(api, "/v1/usage", since="2026-03-29", until="2026-04-02")

    entries = await _entries(api)
    by_day: dict[str, Counter[str]] = defaultdict(Counter)
    by_agent: dict[str, Counter[str]] = defaultdict(Counter)
    spend_by_day: dict[str, Decimal] = defaultdict(Decimal)
    spend_by_agent: dict[str, Decimal] = defaultdict(Decimal)
    for entry in entries:
        day, agent = entry["timestamp"][:10], entry["agent_id"] or ""
        for counts in (by_day[day], by_agent[agent]):
            counts["actions"] += 1
            counts["denied"] += entry["status"] == "denied"
            counts["errors"] += entry["status"] == "error"
            counts["vault"] += entry["tool"] == "vault"
        spend_by_day[day] += Decimal(entry.get("charged_usd", "0"))
        spend_by_agent[agent] += Decimal(entry.get("charged_usd", "0"))
    assert [d["day"] for d in report["by_day"]] == [f"2026-0{m}-{d:02}" for m, d in _days()]
    for row in report["by_day"]:
        expected = by_day.get(row["day"], Counter())
        assert {k: row[k] for k in ("actions", "denied", "errors", "vault")} == {
            k: expected[k] for k in ("actions", "denied", "errors", "vault")
        }
        assert Decimal(row["spend_usd"]) == spend_by_day.get(row["day"], Decimal(0))
    assert {a["agent_id"]: a["actions"] for a in report["by_agent"]} == {
        agent: counts["actions"] for agent, counts in by_agent.items()
    }
    assert {a["agent_id"]: Decimal(a["spend_usd"]) for a in report["by_agent"]} == spend_by_agent
    assert report["total"]["actions"] == len(entries)
    # 1.25 + 2.50; bob's 0.50 action is covered by his authorization, so it charges nothing more.
    assert Decimal(report["total"]["spend_usd"]) == Decimal("3.75")


def _days() -> list[tuple[int, int]]:
    return [(3, 29), (3, 30), (3, 31), (4, 1), (4, 2)]


async def test_usage_defaults_to_this_month_up_to_today(api: Api) -> None:
    report = await _get(api, "/v1/usage")

    assert (report["since"], report["until"]) == ("2026-04-01", "2026-04-05")
    assert len(report["by_day"]) == 5


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"since": "2026-04-05", "until": "2026-04-01"}, "is after until"),
        ({"since": "2025-01-01", "until": "2026-04-01"}, "at most 366 days"),
        ({"since": "yesterday"}, "since"),
    ],
)
async def test_a_bad_usage_window_is_a_400_that_says_why(
    api: Api, params: dict[str, str], problem: str
) -> None:
    found = await api.client.get("/v1/usage", params=params, headers=api.auth(api.admin_key))

    assert found.status_code == 400, found.text
    assert problem in found.json()["error"]


async def test_concurrent_appends_are_each_counted_once(api: Api) -> None:
    sessions = [await _session(api, f"agent-{n}") for n in range(4)]

    await asyncio.gather(*(_log(api, sessions[n % 4], cost_usd="0.01") for n in range(200)))

    report = await _get(api, "/v1/usage")
    size = (await _get(api, "/v1/audit/tree-head"))["tree_size"]
    assert report["total"]["actions"] == size
    assert {a["agent_id"]: a["actions"] for a in report["by_agent"]} == {f"agent-{n}": 50 for n in range(4)}
    assert report["total"]["spend_usd"] == "2.00"


async def test_metrics_count_what_the_tenant_holds_now(api: Api) -> None:
    live = [await _session(api, "alice"), await _session(api, "alice"), await _session(api, "bob")]
    revoked = await _session(api, "carol")
    await api.client.delete(f"/v1/sessions/{revoked}", headers=api.auth(api.admin_key))
    await _session(api, "dave", ttl=60)
    api.clock.advance(120)  # dave's session expires
    await api.client.post("/v1/secrets", json={"name": "s1", "value": "v"}, headers=api.auth(api.admin_key))
    await api.client.post(
        "/v1/webhooks", json={"url": WALKER_HOOK_URL, "events": ["*"]}, headers=api.auth(api.admin_key)
    )
    await api.client.post(
        "/v1/approvals/request",
        json={"session_id": live[0], "tool": "deploy", "reason": "ship it"},
        headers=api.auth(api.admin_key),
    )
    await api.client.post(
        "/v1/audit/rules", json={"type": "tool_match", "pattern": "rm_*"}, headers=api.auth(api.admin_key)
    )
    await _log(api, live[2], tool="rm_rf")

    metrics = await _get(api, "/v1/metrics")

    size = (await _get(api, "/v1/audit/tree-head"))["tree_size"]
    assert metrics["status"] == "ok"
    assert (metrics["sessions_active"], metrics["agents_active"]) == (3, 2)
    assert (metrics["secrets"], metrics["webhooks"], metrics["approvals_pending"]) == (1, 1, 1)
    assert metrics["audit_entries"] == metrics["actions_this_month"] == size
    assert metrics["flagged_7d"] == 1
    assert (metrics["chain_verified"], metrics["checkpoint_size"]) == (True, size)
    assert metrics["secret_accesses_this_month"] == 1  # storing the secret
    assert metrics["actions_quota"] is None


async def test_flags_older_than_seven_days_leave_the_overview(api: Api) -> None:
    await api.client.post(
        "/v1/audit/rules", json={"type": "tool_match", "pattern": "rm_*"}, headers=api.auth(api.admin_key)
    )
    session = await _session(api, "alice", ttl=30 * 86400)
    await _log(api, session, tool="rm_rf")
    api.clock.advance(6 * 86400)
    assert (await _get(api, "/v1/metrics"))["flagged_7d"] == 1

    api.clock.advance(86400)

    assert (await _get(api, "/v1/metrics"))["flagged_7d"] == 0


async def test_another_tenants_usage_is_not_counted(api: Api) -> None:
    await _log(api, await _session(api, "alice"))
    other = await api.key("audit:read", tenant="globex")

    report = await _get(api, "/v1/usage", key=other)
    metrics = await _get(api, "/v1/metrics", key=other)

    assert report["total"]["actions"] == 0
    assert report["by_agent"] == []
    assert (metrics["audit_entries"], metrics["sessions_active"], metrics["tenant_id"]) == (0, 0, "globex")


async def test_status_is_green_with_every_component_named(api: Api) -> None:
    found = await _get(api, "/v1/status")

    assert found["status"] == "green"
    names = [c["name"] for c in found["components"]]
    assert names == ["api", "store", "migrations", "ledger", "signer", "webhooks", "upstreams"]
    assert all(c["status"] == "green" for c in found["components"]), found


async def test_status_without_proxy_read_says_it_cannot_see_upstreams(api: Api) -> None:
    key = await api.key("audit:read")

    found = await _get(api, "/v1/status", key=key)

    upstreams = next(c for c in found["components"] if c["name"] == "upstreams")
    assert (found["status"], upstreams["status"]) == ("yellow", "yellow")
    assert "proxy:read" in upstreams["detail"]
