"""Concurrent governed calls never exceed a spend limit or a rate limit, on either store and from
several OS processes, and what was charged always reconciles with the ledger."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

from haldir.clock import SystemClock
from haldir.core.keys import Principal
from haldir.core.ledger import EntryFilter
from haldir.errors import BudgetExceeded, RateLimited
from haldir.governor import Governor
from haldir.governor.proxy import Admission
from haldir.runtime import wire
from haldir.store.schema import proxy_spend_counters
from haldir.store.sql import SqlStore
from tests.store.processes import run_workers
from tests.support import FakeClock

pytestmark = pytest.mark.anyio

ACME = Principal.operator("acme")
URL = "https://93.184.216.34/mcp"
AGENTS = ("a1", "a2", "a3")


async def _setup(governor: Governor, *policies: dict[str, object]) -> list[str]:
    """Tenant acme with one upstream tool `search`, `policies`, and two sessions per agent."""
    await governor.keys.create_key(ACME, name="setup", scopes=["*"])
    await governor.registry.register_upstream(ACME, name="web", url=URL)
    await governor.registry.record_tools("acme", "web", [{"name": "search"}])
    for spec in policies:
        await governor.registry.create_policy(ACME, spec)
    sessions = []
    for agent in AGENTS * 2:
        created = await governor.sessions.create_session(
            ACME, agent_id=agent, scopes=["execute"], spend_limit=Decimal(100), ttl=86400
        )
        sessions.append(created.value.session_id)
    return sessions


async def _hammer(
    governor: Governor, sessions: list[str], count: int
) -> tuple[list[Admission], Counter[str]]:
    admitted: list[Admission] = []
    refused: Counter[str] = Counter()

    async def call(session_id: str) -> None:
        try:
            admitted.append(
                await governor.proxy.admit_call(ACME, session_id=session_id, tool="search", arguments={})
            )
        except (BudgetExceeded, RateLimited) as exc:
            refused[exc.code] += 1

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for n in range(count):
                tg.start_soon(call, sessions[n % len(sessions)])
    return admitted, refused


async def _spent_by_agent(governor: Governor, sessions: list[str]) -> dict[str, int]:
    """Each agent's `spent`, after checking that every session's equals its ledger charges."""
    by_agent: Counter[str] = Counter()
    for session_id in sessions:
        session = await governor.sessions.get_session(ACME, session_id)
        page = await governor.ledger.list_entries(ACME, where=EntryFilter(session_id=session_id), limit=200)
        charged = sum(Decimal(entry.record["charged_usd"]) for entry in page.entries)
        assert charged * 1_000_000 == session.spent_micros
        by_agent[session.agent_id] += session.spent_micros
    return dict(by_agent)


async def _counters(store: SqlStore) -> dict[str, int]:
    async with store.read_connection() as conn:
        rows = await conn.execute(sa.select(proxy_spend_counters.c.subject, proxy_spend_counters.c.spent))
        return {row.subject: int(row.spent) for row in rows}


async def test_concurrent_calls_never_exceed_per_agent_and_per_tenant_spend_limits(
    governor: Governor, store: SqlStore
) -> None:
    sessions = await _setup(
        governor,
        {"type": "tool_cost", "tool": "search", "cost_usd": "1"},
        {"type": "spend_limit", "max_usd": "3", "per": "agent"},
        {"type": "spend_limit", "max_usd": "7", "per": "tenant"},
    )
    admitted, refused = await _hammer(governor, sessions, 60)
    assert len(admitted) == 7
    assert refused == {"budget_exceeded": 53}
    by_agent = await _spent_by_agent(governor, sessions)
    assert sum(by_agent.values()) == 7_000_000
    assert max(by_agent.values()) <= 3_000_000
    counters = await _counters(store)
    assert counters["tenant"] == 7_000_000
    assert {agent: counters.get(f"agent:{agent}", 0) for agent in AGENTS} == {
        agent: by_agent.get(agent, 0) for agent in AGENTS
    }

    # Failed calls give their cost back to every counter, so others fit again.
    for admission in admitted[:3]:
        await governor.proxy.finish_call(ACME, admission, result=None, error="upstream failed", latency_ms=1)
    again, _ = await _hammer(governor, sessions, 30)
    assert len(again) == 3
    assert sum((await _spent_by_agent(governor, sessions)).values()) == 7_000_000
    assert (await _counters(store))["tenant"] == 7_000_000


async def test_concurrent_calls_never_exceed_a_rate_limit_and_the_next_window_reopens(
    governor: Governor, clock: FakeClock
) -> None:
    sessions = await _setup(
        governor, {"type": "rate_limit", "max_calls": 9, "window_seconds": 600, "per": "tenant"}
    )
    admitted, refused = await _hammer(governor, sessions, 40)
    assert (len(admitted), refused) == (9, {"rate_limited": 31})
    clock.advance(600)
    admitted, _ = await _hammer(governor, sessions, 20)
    assert len(admitted) == 9


async def test_calls_from_4_processes_on_postgresql_never_exceed_the_limits(
    postgres_url: str, tmp_path: Path
) -> None:
    store = SqlStore.open(postgres_url, pool_size=4)
    try:
        governor = wire(store=store, clock=SystemClock())  # the workers' clock: sessions must be live
        sessions = await _setup(
            governor,
            {"type": "tool_cost", "tool": "search", "cost_usd": "0.50"},
            {"type": "spend_limit", "max_usd": "4", "per": "agent"},
            {"type": "spend_limit", "max_usd": "10", "per": "tenant"},
            {"type": "rate_limit", "max_calls": 15, "window_seconds": 86400, "per": "tenant"},
        )
        commands = [["tests.store.proxy_worker", postgres_url, "acme", "40", *sessions]] * 4
        results = [json.loads(line) for line in await run_workers(commands, tmp_path)]
        admitted = sum(result.get("admitted", 0) for result in results)
        by_agent = await _spent_by_agent(governor, sessions)
        assert admitted * 500_000 == sum(by_agent.values()) <= 7_500_000  # 15 calls at most
        assert max(by_agent.values()) <= 4_000_000
        assert admitted == 15  # agents could spend 12 USD, the tenant 10: the 15-call rate limit binds first
        assert (await governor.ledger.verify_log(ACME)).ok
    finally:
        await store.close()
