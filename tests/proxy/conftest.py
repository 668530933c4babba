"""A real `haldir serve` process for the gateway's end-to-end tests, with a fresh tenant per test."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.client.stdio import StdioServerParameters

from haldir.core.keys import Principal
from haldir.http.app import create_app
from haldir.runtime import open_runtime
from haldir.settings import Settings
from tests.conftest import Api
from tests.e2e.server import Server, environment, haldir, serve
from tests.mcp_servers import everything_http
from tests.support import FakeClock, outcomes_pending

_ = everything_http  # the fixture, imported for pytest to find

TIMEOUT_S = 30
OUTCOME_TIMEOUT_S = 10  # how long the server may take to record the outcome of a call it answered
MAX_TENANTS = 64  # tenants (one per test) of a module's live server
DRIFTING_TOOLS = Path(__file__).with_name("drifting_tools.py")


def drifting_tools_params() -> StdioServerParameters:
    """tests/proxy/drifting_tools.py: `greet`, whose definition `drift` changes."""
    return StdioServerParameters(command=sys.executable, args=[str(DRIFTING_TOOLS)])


@dataclass
class Live:
    """A running server; `data_dir` is its SQLite store, where tests make keys of new tenants, named from
    `tenant_ids`: the tenants its HALDIR_STDIO_TENANTS lets register stdio upstreams."""

    server: Server
    data_dir: Path
    env: dict[str, str]
    tenant_ids: list[str]

    @property
    def url(self) -> str:
        return self.server.url


@dataclass
class Tenant:
    """One tenant of the live server: its `*` key and a REST client acting with it."""

    live: Live
    key: str
    rest: httpx.AsyncClient

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def register(self, name: str, params: Any) -> dict[str, Any]:
        response = await self.rest.post(
            "/v1/proxy/upstreams", json={"name": name, "command": params.command, "args": list(params.args)}
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def recorded(self, session_id: str) -> list[dict[str, Any]]:
        """The session's ledger entries, oldest first, once every call admitted so far has its outcome
        recorded: the server records it after the call's answer, so this polls the server, bounded."""
        with anyio.fail_after(OUTCOME_TIMEOUT_S):
            while True:
                response = await self.rest.get("/v1/audit", params={"session_id": session_id, "limit": 200})
                assert response.status_code == 200, response.text
                entries: list[dict[str, Any]] = list(reversed(response.json()["entries"]))
                if not outcomes_pending(entries):
                    return entries
                await anyio.sleep(0.02)  # polling the server process, not making time pass

    async def session(self, *scopes: str, spend_limit: str | None = None) -> str:
        body: dict[str, Any] = {"agent_id": "agent-1", "scopes": list(scopes)}
        if spend_limit is not None:
            body["spend_limit"] = spend_limit
        response = await self.rest.post("/v1/sessions", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["session_id"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    workdir = tmp_path_factory.mktemp("gateway")
    tenant_ids = [f"t-{uuid.uuid4().hex[:10]}" for _ in range(MAX_TENANTS)]
    env = environment(workdir) | {
        "HALDIR_OUTBOUND_ALLOW": "127.0.0.0/8",
        "HALDIR_STDIO_TENANTS": ",".join(tenant_ids),
    }
    migrated = haldir("migrate", "up", env=env)
    assert migrated.returncode == 0, migrated.stderr
    with serve(env, workdir) as server:
        yield Live(server, workdir, env, tenant_ids)


@pytest.fixture
async def tenant(live: Live) -> AsyncIterator[Tenant]:
    """A new tenant with a `*` key, so each test sees only its own upstreams, tools and ledger."""
    assert live.tenant_ids, f"more than {MAX_TENANTS} tenants in one module: raise MAX_TENANTS"
    name = live.tenant_ids.pop()
    settings = Settings(data_dir=live.data_dir, database_url=f"sqlite:///{live.data_dir / 'haldir.db'}")
    async with open_runtime(settings) as runtime:
        created = await runtime.governor.keys.create_key(Principal.operator(name), name="test", scopes=["*"])
    key = created.value.value
    assert key is not None
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=live.url, headers=headers, timeout=TIMEOUT_S) as rest:
        yield Tenant(live, key, rest)


@pytest.fixture
async def loopback_api(store_url: str, clock: FakeClock, tmp_path: Path) -> AsyncIterator[Api]:
    """The `api` fixture's app, allowed to reach upstream URLs on loopback (HALDIR_OUTBOUND_ALLOW)."""
    settings = Settings(
        data_dir=tmp_path,
        database_url=store_url,
        custom_scopes=("stripe",),
        outbound_allow=("127.0.0.0/8",),
        stdio_tenants=("acme",),
    )
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://haldir.test") as client:
            api = Api(app=app, client=client, governor=app.state.governor, clock=clock, admin_key="")
            api.admin_key = await api.key("*")
            yield api
