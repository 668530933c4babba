"""End to end: one `haldir serve --workers 2`, on SQLite and on PostgreSQL, under many concurrent requests.

Each worker process has its own store connections and caches; the kernel shares the connections among
them. Whichever worker serves a request, budgets are never overspent, the ledger never forks or skips
a leaf, an idempotent request creates once, and a rate limit admits exactly its number of calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest

from haldir.store.schema import metadata
from tests.e2e.server import Server, environment, haldir, serve
from tests.e2e.test_seeds import security_tools

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

WORKERS = 2
CONNECTIONS = 64
TIMEOUT_S = 60  # a bound on each burst of requests
RATE_WINDOW_S = 3600


@dataclass
class Live:
    server: Server
    admin_key: str
    tools_url: str
    workers: list[int]  # the worker processes' ids when the server was ready

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        async with httpx.AsyncClient(
            base_url=self.server.url,
            headers={"Authorization": f"Bearer {self.admin_key}"},
            limits=limits,
            timeout=TIMEOUT_S,
        ) as client:
            yield client


def _emptied(database_url: str) -> str:
    """The session's PostgreSQL test database, every table emptied (as the `postgres_url` fixture does)."""

    async def truncate() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            tables = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
            await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        finally:
            await conn.close()

    asyncio.run(truncate())
    return database_url


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One server of two workers per backend for the module, and the MCP tools server it may call."""
    workdir = tmp_path_factory.mktemp(f"workers-{request.param}")
    database_url = None
    if request.param == "postgresql":
        database_url = _emptied(request.getfixturevalue("postgres_database"))
    env = environment(workdir, database_url) | {
        "HALDIR_WORKERS": str(WORKERS),
        "HALDIR_OUTBOUND_ALLOW": "127.0.0.0/8",
    }
    with security_tools() as tools:  # it starts while the store is migrated
        migrated = haldir("migrate", "up", env=env)
        assert migrated.returncode == 0, migrated.stderr
        with serve(env, workdir) as server:
            [admin_key] = server.printed_keys()
            tools.wait_listening()
            yield Live(server, admin_key, tools.url, _wait_workers(server))


# the server's worker processes


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # the process ended meanwhile
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if parent == pid and b"spawn_main" in cmdline:  # not multiprocessing's resource tracker
            found.append(int(entry.name))
    return sorted(found)


def _wait_workers(server: Server) -> list[int]:
    deadline = time.monotonic() + 30
    while len(workers := _children(server.process.pid)) < WORKERS:
        assert time.monotonic() < deadline, f"not {WORKERS} workers: {server.stdout.read_text()}"
        time.sleep(0.05)  # polling a real process for its workers, not making time pass
    return workers


def _connections_by_worker(server: Server) -> dict[int, int]:
    """How many established connections to the server's port each worker holds: each one accepted (and
    served) a request or more. Read from /proc, as the workers themselves are found (Linux)."""
    port = int(server.url.rsplit(":", 1)[1])
    established = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text().splitlines()[1:] if table.exists() else []:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # ESTABLISHED
                established.add(f"socket:[{fields[9]}]")  # by the socket's inode
    counts = {}
    for worker in _children(server.process.pid):
        counts[worker] = sum(_link(fd) in established for fd in Path(f"/proc/{worker}/fd").iterdir())
    return counts


def _link(fd: Path) -> str:
    try:
        return str(fd.readlink())
    except OSError:  # closed meanwhile
        return ""


# helpers


async def _all(requests: list[Awaitable[httpx.Response]]) -> list[httpx.Response]:
    with anyio.fail_after(TIMEOUT_S):
        return list(await asyncio.gather(*requests))


def _statuses(responses: list[httpx.Response]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for response in responses:
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
    return counts


async def _session(client: httpx.AsyncClient, agent_id: str, *scopes: str, **extra: Any) -> str:
    response = await client.post("/v1/sessions", json={"agent_id": agent_id, "scopes": list(scopes), **extra})
    assert response.status_code == 201, response.text
    return str(response.json()["session_id"])


async def _tree_size(client: httpx.AsyncClient) -> int:
    response = await client.get("/v1/audit/tree-head")
    assert response.status_code == 200, response.text
    return int(response.json()["tree_size"])


async def _leaf_indexes(client: httpx.AsyncClient) -> list[int]:
    """Every entry's leaf index, in leaf order."""
    found: list[int] = []
    params: dict[str, Any] = {"order": "asc", "limit": 200}
    while True:
        page = await client.get("/v1/audit", params=params)
        assert page.status_code == 200, page.text
        found += [entry["leaf_index"] for entry in page.json()["entries"]]
        if page.json()["next_cursor"] is None:
            return found
        params["cursor"] = page.json()["next_cursor"]


# the invariants


async def test_concurrent_authorizations_never_overspend_a_budget(live: Live) -> None:
    async with live.client() as client:
        session_id = await _session(client, "buyer", "spend", spend_limit="10.00")
        body = {"session_id": session_id, "amount": "1.00"}

        responses = await _all([client.post("/v1/payments/authorize", json=body) for _ in range(200)])

        assert _statuses(responses) == {201: 10, 402: 190}, [
            r.text for r in responses if r.status_code >= 500
        ]
        session = (await client.get(f"/v1/sessions/{session_id}")).json()
        assert (session["spent"], session["remaining_budget"]) == ("10.00", "0.00")
        spend = (await client.get("/v1/audit/spend", params={"session_id": session_id})).json()
        assert Decimal(spend["total_usd"]) == Decimal(session["spent"])


async def test_concurrent_appends_by_both_workers_make_one_contiguous_verified_ledger(live: Live) -> None:
    async with live.client() as client:
        sessions = [await _session(client, f"logger-{n}", "read") for n in range(8)]
        before = await _tree_size(client)

        responses = await _all(
            [
                client.post(
                    "/v1/audit",
                    json={"session_id": sessions[n % 8], "tool": "search", "action": "query", "cost_usd": 0},
                )
                for n in range(400)
            ]
        )
        served = _connections_by_worker(live.server)

        assert _statuses(responses) == {201: 400}
        assert sorted(r.json()["leaf_index"] for r in responses) == list(range(before, before + 400))
        size = await _tree_size(client)
        assert size == before + 400
        assert await _leaf_indexes(client) == list(range(size))
        verified = (await client.get("/v1/audit/verify")).json()
        assert verified == {"ok": True, "tree_size": size, "first_bad": None}
    # Both workers served some of the connections, and neither died (and was replaced) under the load.
    assert sorted(served) == live.workers, (served, live.server.stdout.read_text())
    assert all(served.values()), f"connections held by each worker: {served}"


async def test_concurrent_idempotent_requests_create_one_session(live: Live) -> None:
    async with live.client() as client:
        headers = {"Idempotency-Key": "one-session-please"}
        body = {"agent_id": "idempotent-agent", "scopes": ["read"], "spend_limit": "5.00"}

        responses = await _all([client.post("/v1/sessions", json=body, headers=headers) for _ in range(50)])

        assert _statuses(responses) == {201: 50}
        assert len({r.json()["session_id"] for r in responses}) == 1
        assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 49
        listed = (await client.get("/v1/sessions", params={"agent_id": "idempotent-agent"})).json()
        assert [s["session_id"] for s in listed["sessions"]] == [responses[0].json()["session_id"]]


async def test_concurrent_proxy_calls_are_admitted_exactly_up_to_a_rate_limit(live: Live) -> None:
    async with live.client() as client:
        registered = await client.post(
            "/v1/proxy/upstreams", json={"name": "tools", "url": f"{live.tools_url}/security/mcp"}
        )
        assert registered.status_code == 201, registered.text
        assert "scan_domain" in registered.json()["tools"]["added"]
        policy = await client.post(
            "/v1/proxy/policies",
            json={"type": "rate_limit", "max_calls": 20, "window_seconds": RATE_WINDOW_S},
        )
        assert policy.status_code == 201, policy.text
        session_id = await _session(client, "caller", "execute")
        call = {"session_id": session_id, "tool": "scan_domain", "arguments": {"domain": "example.com"}}

        window = int(time.time()) // RATE_WINDOW_S
        responses = await _all([client.post("/v1/proxy/call", json=call) for _ in range(60)])
        crossed = int(time.time()) // RATE_WINDOW_S != window  # the windows are aligned to the Unix epoch

        statuses = _statuses(responses)
        if not crossed:
            assert statuses == {200: 20, 429: 40}, [
                r.text for r in responses if r.status_code not in (200, 429)
            ]
        else:  # the burst straddled a window boundary: each window admits its own 20
            assert set(statuses) <= {200, 429}, statuses
            assert 20 <= statuses[200] <= 40, statuses
        admitted = [r.json() for r in responses if r.status_code == 200]
        assert {a["content"][0]["text"] for a in admitted} == {"scanned example.com: 0 findings"}
        refused = [r.json() for r in responses if r.status_code == 429]
        assert {(r["code"], r["policy_id"]) for r in refused} == {
            ("rate_limited", policy.json()["policy_id"])
        }
