"""Command (stdio) upstreams run programs on the server: only the operator's tenants (HALDIR_STDIO_TENANTS)
may register or start them, and only listed programs (HALDIR_STDIO_COMMANDS), over REST and the gateway."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest

from haldir.http.app import create_app
from haldir.settings import Settings
from tests.conftest import Api
from tests.mcp.support import TIMEOUT_S, http_client, refused
from tests.mcp_servers import BIN, CHANGING_TOOLS, everything_stdio_params
from tests.support import FakeClock, admitted_calls

pytestmark = pytest.mark.anyio

TIME_COMMAND = str(BIN / "mcp-server-time")
# Runs tests/servers/changing_tools.py after appending a line to the file in argv[1]: one line per start.
COUNT_STARTS = (
    "import runpy, sys; open(sys.argv[1], 'a').write('started\\n'); "
    "runpy.run_path(sys.argv[2], run_name='__main__')"
)
NOT_REGISTERED = (
    "upstream 'local' is not registered: tenant 'acme' may not run command upstreams: they run programs on "
    "the Haldir server; the operator allows it by adding 'acme' to HALDIR_STDIO_TENANTS"
)


@pytest.fixture
def started(tmp_path: Path) -> Path:
    """The file a counted upstream appends a line to each time its process starts."""
    return tmp_path / "starts.txt"


def counted(started: Path) -> dict[str, Any]:
    """A command upstream whose process starts are counted in `started`."""
    return {"command": sys.executable, "args": ["-c", COUNT_STARTS, str(started), str(CHANGING_TOOLS)]}


def starts(started: Path) -> int:
    return len(started.read_text().splitlines()) if started.exists() else 0


@asynccontextmanager
async def serving(store_url: str, clock: FakeClock, data_dir: Path, **settings: Any) -> AsyncIterator[Api]:
    """The app in-process on `store_url` with these settings (the rest from HALDIR_* variables)."""
    app = create_app(Settings(data_dir=data_dir, database_url=store_url, **settings), clock=clock)
    with anyio.fail_after(TIMEOUT_S):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://haldir.test") as client:
                yield Api(app=app, client=client, governor=app.state.governor, clock=clock, admin_key="")


async def register(api: Api, key: str, name: str, **config: Any) -> httpx.Response:
    return await api.client.post("/v1/proxy/upstreams", json={"name": name, **config}, headers=api.auth(key))


async def upstream_names(api: Api, key: str) -> list[str]:
    listed = await api.client.get("/v1/proxy/upstreams", headers=api.auth(key))
    return [upstream["name"] for upstream in listed.json()["upstreams"]]


async def test_a_tenant_other_than_default_is_refused_a_command_upstream_and_nothing_starts_or_is_stored(
    store_url: str, clock: FakeClock, tmp_path: Path, started: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HALDIR_STDIO_TENANTS", raising=False)
    async with serving(store_url, clock, tmp_path) as api:
        acme = await api.key("*", tenant="acme")
        response = await register(api, acme, "local", **counted(started))
        audit = await api.client.get("/v1/audit?limit=200", headers=api.auth(acme))
        names = await upstream_names(api, acme)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "stdio_not_allowed"
    assert response.json()["error"].startswith(NOT_REGISTERED)
    assert names == []
    assert starts(started) == 0
    assert [entry["action"] for entry in audit.json()["entries"]] == []


async def test_a_key_without_admin_write_is_still_refused_first(
    store_url: str, clock: FakeClock, tmp_path: Path, started: Path
) -> None:
    async with serving(store_url, clock, tmp_path, stdio_tenants=("acme",)) as api:
        writer = await api.key("proxy:write", tenant="acme")
        response = await register(api, writer, "local", **counted(started))
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    assert response.json()["required"] == "admin:write"
    assert starts(started) == 0


async def test_the_default_tenant_may_register_a_command_upstream_by_default(
    store_url: str, clock: FakeClock, tmp_path: Path, started: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HALDIR_STDIO_TENANTS", raising=False)
    async with serving(store_url, clock, tmp_path) as api:
        operator = await api.key("*", tenant="default")
        response = await register(api, operator, "local", **counted(started))
    assert response.status_code == 201, response.text
    assert starts(started) == 1


async def test_a_tenant_listed_in_haldir_stdio_tenants_may_register_one_and_others_may_not(
    store_url: str, clock: FakeClock, tmp_path: Path, started: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HALDIR_STDIO_TENANTS", "default,acme")
    async with serving(store_url, clock, tmp_path) as api:
        allowed = await register(api, await api.key("*", tenant="acme"), "local", **counted(started))
        other = await register(api, await api.key("*", tenant="globex"), "local", **counted(started))
    assert allowed.status_code == 201, allowed.text
    assert other.status_code == 403
    assert other.json()["error"].startswith("upstream 'local' is not registered: tenant 'globex' may not run")
    assert starts(started) == 1


def _node() -> str:
    node = shutil.which("node")
    assert node is not None, "node is not on PATH: install Node.js 20+"
    return node


@pytest.mark.parametrize(
    ("config", "allowed"),
    [
        pytest.param(
            lambda: {"command": "node", "args": everything_stdio_params().args}, True, id="bare-name"
        ),
        pytest.param(lambda: {"command": TIME_COMMAND}, True, id="absolute-path"),
        pytest.param(lambda: {"command": sys.executable, "args": [str(CHANGING_TOOLS)]}, False, id="other"),
        pytest.param(
            lambda: {"command": _node(), "args": everything_stdio_params().args}, False, id="node-path"
        ),
        pytest.param(lambda: {"command": str(BIN / ".." / "bin" / "mcp-server-time")}, False, id="dot-dot"),
        pytest.param(lambda: {"command": f"{BIN}/./mcp-server-time"}, False, id="dot"),
        pytest.param(lambda: {"command": "./mcp-server-time"}, False, id="relative"),
        pytest.param(lambda: {"command": "../bin/node"}, False, id="relative-dot-dot"),
        pytest.param(
            lambda: {"command": "node", "args": ["x.js"], "env": {"PATH": str(BIN)}}, False, id="env-path"
        ),
        pytest.param(
            lambda: {"command": TIME_COMMAND, "env": {"LD_PRELOAD": "/tmp/x.so"}}, False, id="env-preload"
        ),
    ],
)
async def test_haldir_stdio_commands_lets_only_the_listed_programs_start(
    store_url: str, clock: FakeClock, tmp_path: Path, config: Any, allowed: bool
) -> None:
    programs = ("node", TIME_COMMAND)
    async with serving(store_url, clock, tmp_path, stdio_tenants=("acme",), stdio_commands=programs) as api:
        acme = await api.key("*", tenant="acme")
        response = await register(api, acme, "local", **config())
        names = await upstream_names(api, acme)
    if allowed:
        assert response.status_code == 201, response.text
        assert names == ["local"]
        return
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "stdio_not_allowed"
    assert "HALDIR_STDIO_COMMANDS" in response.json()["error"]
    assert names == []


@pytest.mark.parametrize(
    "now",
    [
        pytest.param({"stdio_tenants": ()}, id="tenant-removed"),
        pytest.param({"stdio_tenants": ("acme",), "stdio_commands": ("node",)}, id="program-not-listed"),
    ],
)
async def test_a_stored_command_upstream_the_rule_no_longer_allows_is_refused_before_it_starts(
    store_url: str, clock: FakeClock, tmp_path: Path, started: Path, now: dict[str, Any]
) -> None:
    async with serving(store_url, clock, tmp_path, stdio_tenants=("acme",)) as api:
        acme = await api.key("*", tenant="acme")
        assert (await register(api, acme, "counted", **counted(started))).status_code == 201
        cost = {"type": "tool_cost", "tool": "pid", "cost_usd": "0.25"}
        assert (await api.client.post("/v1/proxy/policies", json=cost, headers=api.auth(acme))).is_success
        session = await api.client.post(
            "/v1/sessions",
            json={"agent_id": "a", "scopes": ["execute"], "spend_limit": "1"},
            headers=api.auth(acme),
        )
        session_id = session.json()["session_id"]
    assert starts(started) == 1

    async with serving(store_url, clock, tmp_path, **now) as api:
        call = {"session_id": session_id, "tool": "pid", "arguments": {}}
        called = await api.client.post("/v1/proxy/call", json=call, headers=api.auth(acme))
        refreshed = await api.client.post("/v1/proxy/upstreams/counted/refresh", headers=api.auth(acme))
        headers = {"X-API-Key": acme, "X-Session-ID": session_id}
        transport = httpx2.ASGITransport(app=api.app)
        async with http_client("http://haldir.test/mcp/gateway", headers, transport=transport) as gateway:
            through_gateway = await refused(gateway, "pid")
        with anyio.fail_after(TIMEOUT_S):
            await api.app.state.proxy.settled()  # the refused calls' outcomes are recorded
        spent = (await api.client.get(f"/v1/sessions/{session_id}", headers=api.auth(acme))).json()["spent"]
        audit = await api.client.get(
            "/v1/audit", params={"session_id": session_id, "limit": 200}, headers=api.auth(acme)
        )
    for response in (called, refreshed):
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "stdio_not_allowed"
        assert response.json()["error"].startswith("upstream 'counted' is not started: ")
    assert through_gateway["code"] == "stdio_not_allowed"
    assert starts(started) == 1  # refused before connecting: no process was spawned
    # Each call was admitted (its cost reserved) before the rule refused to start the upstream; its outcome
    # is an error that released the cost.
    calls = admitted_calls(list(reversed(audit.json()["entries"])))
    assert [(a["charged_usd"], f["status"], f["charged_usd"]) for a, f in calls] == [
        ("0.25", "error", "-0.25")
    ] * 2
    for _, finish in calls:
        assert finish["details"]["error"].startswith("upstream 'counted' is not started: ")
    assert spent == "0.00"  # the refused calls' reserved cost was released
