"""End to end: three `haldir serve` replicas on one PostgreSQL database, driven together, act as one server.

Each replica has a data dir, and so a change counter, of its own (as on three machines): what one replica
changes reaches the others' caches only through PostgreSQL NOTIFY. Requests are spread over the replicas
round robin. Budgets are never overspent, the ledger is one chain, an idempotent request runs once, an
approval asked on one replica and decided on another releases the call on a third, each webhook event is
delivered once, a rate limit is one budget, a change made on one replica is in force on the others within
the documented bound, and gateway clients on every replica hear that their tool list changed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.subscriptions import ToolsListChanged

from haldir.core.keys import Principal
from haldir.logkey import KEY_FILE as LOG_KEY_FILE
from haldir.runtime import open_runtime
from haldir.settings import Settings
from haldir.vaultkey import KEY_FILE as VAULT_KEY_FILE
from tests.conftest import ScratchDatabase
from tests.e2e.server import Server, environment, free_port, haldir, serve
from tests.e2e.test_invalidation import _listeners
from tests.e2e.test_seeds import ToolsServer, security_tools
from tests.mcp_servers import stop
from tests.support import outcomes_pending
from tests.webhooks.receiver import receiver

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.anyio]

REPLICAS = 3
TENANTS = 10
BOUND_S = 1.0  # the documented bound for a change to reach another replica (README, docs/replicas.md)
POLL_S = 0.02
TIMEOUT_S = 60  # a bound on each burst of requests
RATE_WINDOW_S = 3600
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Replicas:
    servers: list[Server]
    tools_url: str  # tests/servers/security_tools.py
    drifting_url: str  # tests/servers/drifting_http.py: one `greet` whose definition `drift` changes
    tenants: list[list[str]]  # two `*` keys of each tenant not yet used

    def new_tenant(self, keys: int = 1) -> list[str]:
        """`keys` `*` keys of a tenant of their own, so each test sees only its own state."""
        assert self.tenants, f"more than {TENANTS} tenants in the module: raise TENANTS"
        return self.tenants.pop()[:keys]

    @asynccontextmanager
    async def clients(self, key: str) -> AsyncIterator[list[httpx.AsyncClient]]:
        """One client per replica, all with `key`."""
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        async with AsyncExitStack() as stack:
            yield [
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=server.url,
                        headers={"Authorization": f"Bearer {key}"},
                        limits=limits,
                        timeout=TIMEOUT_S,
                    )
                )
                for server in self.servers
            ]


@contextmanager
def _drifting_tools() -> Iterator[ToolsServer]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.drifting_http", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield ToolsServer(f"http://127.0.0.1:{port}", process)
    finally:
        stop(process)


@pytest.fixture(scope="module")
def replicas(
    module_postgres: ScratchDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    workdir = tmp_path_factory.mktemp("replicas")
    dirs = [workdir / name for name in ("a", "b", "c")][:REPLICAS]
    envs = [
        environment(data_dir, module_postgres.url)
        | {
            "HALDIR_OUTBOUND_ALLOW": "127.0.0.0/8",
            "HALDIR_WEBHOOK_POLL_SECONDS": "0.2",
            "HALDIR_WEBHOOK_TIMEOUT_SECONDS": "2",
        }
        for data_dir in dirs
    ]
    with security_tools() as tools, _drifting_tools() as drifting, ExitStack() as stack:
        migrated = haldir("migrate", "up", env=envs[0])
        assert migrated.returncode == 0, migrated.stderr
        servers = [stack.enter_context(serve(envs[0], workdir))]
        for data_dir, env in zip(dirs[1:], envs[1:], strict=True):
            # The same keys as the first replica (every replica of a deployment must have them), and a
            # data dir, so a change counter, of its own: changes reach it only through the database.
            data_dir.mkdir()
            for name in (VAULT_KEY_FILE, LOG_KEY_FILE):
                shutil.copy2(dirs[0] / name, data_dir / name)
            servers.append(stack.enter_context(serve(env, workdir)))
        deadline = time.monotonic() + TIMEOUT_S
        while _listeners(module_postgres.url) < REPLICAS:
            assert time.monotonic() < deadline, "the replicas do not listen for changes"
            time.sleep(POLL_S)  # polling the replicas' listeners, not making time pass
        tools.wait_listening()
        drifting.wait_listening()
        tenants = asyncio.run(_tenants(Settings(data_dir=dirs[0], database_url=module_postgres.url)))
        yield Replicas(servers, tools.url, f"{drifting.url}/mcp", tenants)


async def _tenants(settings: Settings) -> list[list[str]]:
    """Keys of new tenants, made in the store (far faster than a `haldir keys create` each)."""
    found = []
    async with open_runtime(settings) as runtime:
        for n in range(TENANTS):
            operator = Principal.operator(f"replicas-{n}")
            made = [
                await runtime.governor.keys.create_key(operator, name=f"k{k}", scopes=["*"]) for k in range(2)
            ]
            found.append([str(m.value.value) for m in made])
    return found


# helpers


async def _all(requests: list[Awaitable[httpx.Response]]) -> list[httpx.Response]:
    with anyio.fail_after(TIMEOUT_S):
        return list(await asyncio.gather(*requests))


def _statuses(responses: list[httpx.Response]) -> dict[int, int]:
    return dict(Counter(response.status_code for response in responses))


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def _session(client: httpx.AsyncClient, *scopes: str, **extra: Any) -> str:
    body = {"agent_id": "agent-1", "scopes": list(scopes), **extra}
    return str(_ok(await client.post("/v1/sessions", json=body), 201)["session_id"])


async def _register(client: httpx.AsyncClient, name: str, url: str) -> dict[str, Any]:
    registered: dict[str, Any] = _ok(
        await client.post("/v1/proxy/upstreams", json={"name": name, "url": url}), 201
    )
    return registered


def _call(session_id: str, tool: str, **arguments: str) -> dict[str, Any]:
    return {"session_id": session_id, "tool": tool, "arguments": arguments}


async def _leaf_indexes(client: httpx.AsyncClient) -> list[int]:
    found: list[int] = []
    params: dict[str, Any] = {"order": "asc", "limit": 200}
    while True:
        page = _ok(await client.get("/v1/audit", params=params))
        found += [entry["leaf_index"] for entry in page["entries"]]
        if page["next_cursor"] is None:
            return found
        params["cursor"] = page["next_cursor"]


async def _until(what: str, check: Callable[[], Awaitable[bool]], *, within: float = TIMEOUT_S) -> None:
    """Poll a real server (not making time pass) until `check` holds."""
    try:
        with anyio.fail_after(within):
            while not await check():  # noqa: ASYNC110 - the condition is another process's
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {within} s: {what}") from None


# one server, spread over three processes


async def test_budgets_are_never_overspent_by_payments_and_governed_calls_on_every_replica(
    replicas: Replicas,
) -> None:
    [key] = replicas.new_tenant()
    async with replicas.clients(key) as on:
        await _register(on[0], "tools", f"{replicas.tools_url}/security/mcp")
        _ok(
            await on[0].post(
                "/v1/proxy/policies", json={"type": "tool_cost", "tool": "scan_domain", "cost_usd": 1}
            ),
            201,
        )
        session_id = await _session(on[1], "spend", "execute", spend_limit="15.00")
        pay = {"session_id": session_id, "amount": "1.00"}
        call = _call(session_id, "scan_domain", domain="example.com")

        responses = await _all(
            [
                on[n % REPLICAS].post("/v1/payments/authorize", json=pay)
                if n % 2
                else on[n % REPLICAS].post("/v1/proxy/call", json=call)
                for n in range(90)
            ]
        )

        statuses = _statuses(responses)
        assert statuses.get(201, 0) + statuses.get(200, 0) == 15, statuses
        assert set(statuses) <= {200, 201, 402}, [r.text for r in responses if r.status_code >= 500]

        async def settled() -> bool:  # a governed call's outcome is recorded just after its answer
            entries = _ok(await on[2].get("/v1/audit", params={"session_id": session_id, "limit": 200}))
            return not outcomes_pending(entries["entries"])

        await _until("outcomes recorded", settled)
        for client in on:
            session = _ok(await client.get(f"/v1/sessions/{session_id}"))
            assert (session["spent"], session["remaining_budget"]) == ("15.00", "0.00")
            spend = _ok(await client.get("/v1/audit/spend", params={"session_id": session_id}))
            assert Decimal(spend["total_usd"]) == Decimal(session["spent"])


async def test_appends_through_every_replica_make_one_contiguous_verified_ledger(replicas: Replicas) -> None:
    [key] = replicas.new_tenant()
    async with replicas.clients(key) as on:
        sessions = [await _session(on[n % REPLICAS], "read") for n in range(6)]
        before = int(_ok(await on[0].get("/v1/audit/tree-head"))["tree_size"])
        entry = {"tool": "search", "action": "query", "cost_usd": 0}

        responses = await _all(
            [
                on[n % REPLICAS].post("/v1/audit", json={**entry, "session_id": sessions[n % 6]})
                for n in range(300)
            ]
        )

        assert _statuses(responses) == {201: 300}
        assert sorted(r.json()["leaf_index"] for r in responses) == list(range(before, before + 300))
        for client in on:
            size = int(_ok(await client.get("/v1/audit/tree-head"))["tree_size"])
            assert size == before + 300
            assert _ok(await client.get("/v1/audit/verify")) == {
                "ok": True,
                "tree_size": size,
                "first_bad": None,
            }
        assert await _leaf_indexes(on[1]) == list(range(before + 300))

        # Every replica signs the new size at once: one checkpoint, the same note from each.
        signed = await _all([client.get("/v1/audit/checkpoint") for client in on for _ in range(3)])
        assert _statuses(signed) == {200: 3 * REPLICAS}
        assert len({response.text for response in signed}) == 1
        assert signed[0].text.splitlines()[1] == str(before + 300)


async def test_one_idempotency_key_sent_to_every_replica_runs_once(replicas: Replicas) -> None:
    [key] = replicas.new_tenant()
    async with replicas.clients(key) as on:
        session_id = await _session(on[0], "spend", spend_limit="100.00")
        headers = {"Idempotency-Key": "pay-once"}
        pay = {"session_id": session_id, "amount": "7.00"}
        created = {"agent_id": "idempotent-agent", "scopes": ["read"]}
        session_headers = {"Idempotency-Key": "one-session"}

        payments, sessions = await asyncio.gather(
            _all(
                [
                    on[n % REPLICAS].post("/v1/payments/authorize", json=pay, headers=headers)
                    for n in range(30)
                ]
            ),
            _all(
                [
                    on[n % REPLICAS].post("/v1/sessions", json=created, headers=session_headers)
                    for n in range(30)
                ]
            ),
        )

        assert _statuses(payments) == {201: 30}
        assert len({r.json()["authorization_id"] for r in payments}) == 1
        assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in payments) == 29
        assert _ok(await on[2].get(f"/v1/sessions/{session_id}"))["spent"] == "7.00"
        assert _statuses(sessions) == {201: 30}
        assert len({r.json()["session_id"] for r in sessions}) == 1
        listed = _ok(await on[1].get("/v1/sessions", params={"agent_id": "idempotent-agent"}))
        assert [s["session_id"] for s in listed["sessions"]] == [sessions[0].json()["session_id"]]


async def test_a_call_held_on_one_replica_and_approved_on_another_runs_once_on_a_third(
    replicas: Replicas,
) -> None:
    agent_key, approver_key = replicas.new_tenant(keys=2)
    async with replicas.clients(agent_key) as on, replicas.clients(approver_key) as approver:
        await _register(on[0], "tools", f"{replicas.tools_url}/security/mcp")
        _ok(await approver[0].post("/v1/approvals/rules", json={"type": "tool", "tool": "scan_domain"}), 201)
        call = _call(await _session(on[0], "execute"), "scan_domain", domain="example.com")

        held = _ok(await on[0].post("/v1/proxy/call", json=call), 202)
        assert held["code"] == "approval_required", held
        approval_id = held["approval_id"]
        assert _ok(await on[2].post("/v1/proxy/call", json=call), 202)["approval_id"] == approval_id
        _ok(await approver[1].post(f"/v1/approvals/{approval_id}/approve"))

        ran = await _all([on[2].post("/v1/proxy/call", json=call), on[2].post("/v1/proxy/call", json=call)])

        # An approval releases one call, once: the same call again asks anew.
        assert sorted(r.status_code for r in ran) == [200, 202], [r.text for r in ran]
        [answered] = [r.json() for r in ran if r.status_code == 200]
        [asked_anew] = [r.json() for r in ran if r.status_code == 202]
        assert asked_anew["approval_id"] != approval_id
        assert answered["content"] == [{"type": "text", "text": "scanned example.com: 0 findings"}]
        assert _ok(await approver[0].get(f"/v1/approvals/{approval_id}"))["status"] == "consumed"


async def test_each_event_made_on_any_replica_is_delivered_once_per_webhook(replicas: Replicas) -> None:
    [key] = replicas.new_tenant()
    with receiver() as listener:
        async with replicas.clients(key) as on:
            secrets = []
            for path in ("first", "second"):
                hook = {"url": f"{listener.url}/{path}", "events": ["session.revoked"]}
                secrets.append(_ok(await on[0].post("/v1/webhooks", json=hook), 201)["secret"])
            sessions = [await _session(on[n % REPLICAS], "read") for n in range(30)]

            revoked = await _all(
                [
                    on[n % REPLICAS].delete(f"/v1/sessions/{session_id}")
                    for n, session_id in enumerate(sessions)
                ]
            )

            assert _statuses(revoked) == {200: 30}
            arrived = await anyio.to_thread.run_sync(listener.wait_for, 60)
            sent = Counter((got.path, got.message_id) for got in arrived)
            assert set(sent.values()) == {1}  # nothing twice
            assert len({got.message_id for got in arrived}) == 30
            assert {got.path.rsplit("/", 1)[1] for got in arrived} == {"first", "second"}
            for got in arrived:
                got.verify(secrets[0] if got.path.endswith("/first") else secrets[1])
            ids = {json.loads(got.body)["data"]["session_id"] for got in arrived}
            assert ids == set(sessions)

            async def recorded() -> bool:
                params = {"status": "delivered", "limit": 100}
                listed = _ok(await on[1].get("/v1/webhooks/deliveries", params=params))["deliveries"]
                return len(listed) == 60 and all(d["attempts"] == 1 for d in listed)

            await _until("deliveries recorded", recorded)
        assert len(listener.received) == 60


async def test_a_rate_limit_is_one_budget_across_the_replicas(replicas: Replicas) -> None:
    [key] = replicas.new_tenant()
    async with replicas.clients(key) as on:
        await _register(on[0], "tools", f"{replicas.tools_url}/security/mcp")
        policy = {"type": "rate_limit", "max_calls": 20, "window_seconds": RATE_WINDOW_S, "per": "tenant"}
        policy_id = _ok(await on[0].post("/v1/proxy/policies", json=policy), 201)["policy_id"]
        sessions = [await _session(on[0], "execute") for _ in range(3)]

        window = int(time.time()) // RATE_WINDOW_S
        responses = await _all(
            [
                on[n % REPLICAS].post(
                    "/v1/proxy/call", json=_call(sessions[n % 3], "scan_domain", domain="a.example")
                )
                for n in range(90)
            ]
        )
        crossed = int(time.time()) // RATE_WINDOW_S != window  # windows are aligned to the Unix epoch

        statuses = _statuses(responses)
        if not crossed:
            assert statuses == {200: 20, 429: 70}, [
                r.text for r in responses if r.status_code not in (200, 429)
            ]
        else:  # the burst straddled a window boundary: each window admits its own 20
            assert set(statuses) <= {200, 429}, statuses
            assert 20 <= statuses[200] <= 40, statuses
        refused = {(r.json()["code"], r.json()["policy_id"]) for r in responses if r.status_code == 429}
        assert refused == {("rate_limited", policy_id)}


# a change made on one replica, in force on the others


Probe = Callable[[httpx.AsyncClient], Awaitable[bool]]


async def _in_force_after(client: httpx.AsyncClient, probe: Probe, start: float) -> float | None:
    """Seconds from `start` until `probe` holds on `client`; None if not within twice the bound."""
    while time.monotonic() - start < 2 * BOUND_S:
        if await probe(client):
            return time.monotonic() - start
        await anyio.sleep(POLL_S)  # polling another replica every 20 ms, not making time pass
    return None


async def _propagation(
    change: Awaitable[httpx.Response], probe: Probe, others: list[httpx.AsyncClient]
) -> list[float | None]:
    """Make `change` (on one replica); how long each of `others` took to act on it. Each of them has
    served the state before the change, twice, so it holds it in memory."""
    for client in others:
        assert [await probe(client) for _ in range(2)] == [False, False]
    assert (await change).status_code < 300
    start = time.monotonic()
    return list(await asyncio.gather(*(_in_force_after(client, probe, start) for client in others)))


def _status_is(status: int, request: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]) -> Probe:
    async def probe(client: httpx.AsyncClient) -> bool:
        return (await request(client)).status_code == status

    return probe


async def test_a_change_on_one_replica_is_in_force_on_the_others_within_the_bound(replicas: Replicas) -> None:
    [key] = replicas.new_tenant()
    delays: dict[str, list[float | None]] = {}
    async with replicas.clients(key) as on:
        a, others = on[0], on[1:]
        await _register(a, "tools", f"{replicas.tools_url}/security/mcp")
        await _register(a, "drifting", replicas.drifting_url)
        session_id = await _session(a, "read", "execute")

        victim = _ok(await a.post("/v1/keys", json={"name": "victim", "scopes": ["sessions:read"]}), 201)
        as_victim = {"Authorization": f"Bearer {victim['key']}"}
        delays["key revoked"] = await _propagation(
            a.delete(f"/v1/keys/{victim['prefix']}"),
            _status_is(401, lambda c: c.get("/v1/sessions", headers=as_victim)),
            others,
        )

        revoked_id = await _session(a, "read")

        async def refused(client: httpx.AsyncClient) -> bool:
            checked = _ok(await client.post(f"/v1/sessions/{revoked_id}/check", json={"scope": "read"}))
            return checked["allowed"] is False

        delays["session revoked"] = await _propagation(
            a.delete(f"/v1/sessions/{revoked_id}"), refused, others
        )

        def calling(tool: str, **arguments: str) -> Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]:
            return lambda c: c.post("/v1/proxy/call", json=_call(session_id, tool, **arguments))

        delays["policy created"] = await _propagation(
            a.post("/v1/proxy/policies", json={"type": "deny", "tools": ["dns_lookup"]}),
            _status_is(403, calling("dns_lookup", domain="example.com")),
            others,
        )
        delays["approval rule created"] = await _propagation(
            a.post("/v1/approvals/rules", json={"type": "tool", "tool": "whois_lookup"}),
            _status_is(202, calling("whois_lookup", domain="example.com")),
            others,
        )

        async def flagged(client: httpx.AsyncClient) -> bool:
            entry = {"session_id": session_id, "tool": "get_headers", "action": "query", "cost_usd": 0}
            return bool(_ok(await client.post("/v1/audit", json=entry), 201)["flagged"])

        delays["anomaly rule created"] = await _propagation(
            a.post("/v1/audit/rules", json={"type": "tool_match", "pattern": "get_headers"}), flagged, others
        )

        greet = calling("greet", name="ann")
        _ok(await greet(a))
        _ok(await a.post("/v1/proxy/call", json=_call(session_id, "drift")))  # the upstream says nothing

        async def refreshed() -> httpx.Response:
            response = await a.post("/v1/proxy/upstreams/drifting/refresh")
            assert response.json()["changed"] == ["greet"], response.text
            return response

        delays["tool definition changed"] = await _propagation(refreshed(), _status_is(409, greet), others)

        async def runs(client: httpx.AsyncClient) -> bool:
            return (await greet(client)).status_code == 200

        delays["tool pin approved"] = await _propagation(
            a.post("/v1/proxy/tools/greet/approve"), runs, others
        )

    shown = {
        what: ["never" if d is None else f"{d * 1000:.0f} ms" for d in found]
        for what, found in delays.items()
    }
    print(f"\npropagation to the other replicas: {shown}")
    assert all(d is not None and d <= BOUND_S for found in delays.values() for d in found), shown


# gateway clients of every replica hear that their tools changed


@asynccontextmanager
async def _gateway(server: Server, key: str, session_id: str) -> AsyncIterator[Client]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}", "X-Session-ID": session_id})
    transport = streamable_http_client(f"{server.url}/mcp/gateway", http_client=http)
    async with http, Client(transport) as client:
        yield client


async def _quiet(events: AsyncIterator[ToolsListChanged], *, for_s: float) -> int:
    """How many times the client was told in the next `for_s` seconds."""
    told = 0
    with anyio.move_on_after(for_s):
        while True:
            await anext(events)
            told += 1
    return told


async def test_gateway_clients_on_every_replica_hear_a_tool_change_made_on_one(replicas: Replicas) -> None:
    [key] = replicas.new_tenant()
    heard: dict[str, list[float]] = {}
    async with replicas.clients(key) as on, AsyncExitStack() as stack:
        a = on[0]
        session_id = await _session(a, "execute")
        streams = []
        for server in replicas.servers:
            client = await stack.enter_async_context(_gateway(server, key, session_id))
            listening = await stack.enter_async_context(client.listen(tools_list_changed=True))
            streams.append(aiter(listening))
        for events in streams:  # a client that starts listening may be told once of a change it cannot
            await _quiet(events, for_s=0.5)  # tell from its own start ("better once too often than never")

        async def told(what: str, change: Awaitable[httpx.Response]) -> None:
            assert (await change).status_code < 300
            start, delays = time.monotonic(), []
            for events in streams:
                with anyio.fail_after(TIMEOUT_S):
                    assert await anext(events) == ToolsListChanged()
                delays.append(time.monotonic() - start)
            heard[what] = delays
            assert [await _quiet(events, for_s=0.3) for events in streams] == [0] * REPLICAS, what

        await told(
            "upstream registered",
            a.post("/v1/proxy/upstreams", json={"name": "drifting", "url": replicas.drifting_url}),
        )
        _ok(await a.post("/v1/proxy/call", json=_call(session_id, "drift")))  # the upstream says nothing
        await told("upstream refreshed", a.post("/v1/proxy/upstreams/drifting/refresh"))
        await told("tool pin approved", a.post("/v1/proxy/tools/greet/approve"))
        # The upstream itself tells the replica connected to it (a) that its tools changed.
        announce = _call(session_id, "drift")
        announce["arguments"] = {"announce": True}
        await told("upstream announced a change", a.post("/v1/proxy/call", json=announce))
        await told("changed tool pinned again", a.post("/v1/proxy/tools/greet/approve"))
        await told("upstream removed", a.delete("/v1/proxy/upstreams/drifting"))

        on_c = await stack.enter_async_context(_gateway(replicas.servers[2], key, session_id))
        names = {tool.name for tool in (await on_c.list_tools()).tools}
    assert "greet" not in names
    shown = {what: [f"{d * 1000:.0f} ms" for d in found] for what, found in heard.items()}
    print(f"\ntool-list changes heard by gateway clients of replicas a, b, c: {shown}")
    assert all(d <= BOUND_S for found in heard.values() for d in found), shown
