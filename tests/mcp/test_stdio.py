"""`haldir-mcp` as an MCP client starts it: a subprocess on stdio, on the local store or a remote server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters

from haldir.mcp.stdio import uses_local_store
from haldir.settings import ClientSettings, Settings
from tests.e2e.server import environment, haldir
from tests.mcp.conftest import Running
from tests.mcp.support import TIMEOUT_S, TOOL_NAMES, call, prompt_text, refused

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

HALDIR_MCP = str(Path(sys.executable).parent / "haldir-mcp")
VALUE = "sk_live_51Hx-very-secret"


@dataclass
class LocalStore:
    env: dict[str, str]
    admin_key: str
    narrow_key: str


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    """A migrated local store in a temporary data dir, with keys made by `haldir keys create`."""
    env = environment(tmp_path_factory.mktemp("mcp-stdio"))
    migrated = haldir("migrate", "up", env=env)
    assert migrated.returncode == 0, migrated.stderr
    return LocalStore(env, _key(env, "*"), _key(env, "sessions:read"))


def _key(env: dict[str, str], *scopes: str) -> str:
    created = haldir("keys", "create", "--json", "--tenant", "acme", "--scopes", ",".join(scopes), env=env)
    assert created.returncode == 0, created.stderr
    return str(json.loads(created.stdout)["key"])


@asynccontextmanager
async def stdio_client(env: dict[str, str], *, cwd: Path | None = None) -> AsyncIterator[Client]:
    """The SDK's client on `haldir-mcp`, started the way an MCP client config starts it."""
    params = StdioServerParameters(command=HALDIR_MCP, env=env, cwd=cwd)
    with anyio.fail_after(TIMEOUT_S):
        async with Client(params) as client:
            yield client


async def test_the_local_store_mode_governs_records_and_applies_the_keys_scopes(local: LocalStore) -> None:
    async with stdio_client({**local.env, "HALDIR_API_KEY": local.admin_key}) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOL_NAMES
        sid = (
            await call(client, "createSession", agent_id="desk", scopes=["read", "spend"], spend_limit="9")
        )["session_id"]
        await call(client, "storeSecret", name="api_token", value=VALUE)
        assert (await call(client, "getSecret", name="api_token", session_id=sid))["value"] == VALUE
        logged = await call(client, "logAction", session_id=sid, tool="crm", action="update", cost_usd="3")
        trail = (await call(client, "getAuditTrail", session_id=sid))["entries"]
        assert "spent 3.00 USD (33.3% used)" in await prompt_text(client, "budget-check", session_id=sid)
    assert [(entry["tool"], entry["action"]) for entry in trail] == [
        ("crm", "update"),
        ("vault", "secret.release"),
    ]
    assert trail[0]["entry_id"] == logged["entry_id"]
    assert VALUE not in json.dumps(trail)

    async with stdio_client({**local.env, "HALDIR_API_KEY": local.narrow_key}) as client:
        body = await refused(client, "getSecret", name="api_token", session_id=sid)
        assert (await call(client, "getSession", session_id=sid))["spent"] == "3.00"
    assert body["code"] == "insufficient_scope"
    assert body["granted"] == ["sessions:read"]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (None, "HALDIR_API_KEY is not set"),
        ("hld_" + "x" * 48, "HALDIR_API_KEY is not a usable key of the store in"),
    ],
)
def test_a_missing_or_invalid_key_stops_it_with_a_message_on_stderr(
    local: LocalStore, key: str | None, message: str
) -> None:
    env = local.env if key is None else {**local.env, "HALDIR_API_KEY": key}
    result = subprocess.run(
        [HALDIR_MCP], env=env, input="", capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert result.returncode == 3
    assert result.stdout == ""
    assert message in result.stderr


async def test_the_remote_mode_calls_the_server_with_the_key(running: Running) -> None:
    admin = {"Authorization": f"Bearer {running.admin_key}"}
    async with httpx.AsyncClient(base_url=running.url, timeout=TIMEOUT_S) as rest:
        created = await rest.post(
            "/v1/keys", json={"name": "mcp", "scopes": ["sessions:write"]}, headers=admin
        )
    narrow = created.json()["key"]
    env = {**environment(Path("/nonexistent")), "HALDIR_URL": running.url}
    async with stdio_client({**env, "HALDIR_API_KEY": running.admin_key}) as client:
        sid = (await call(client, "createSession", agent_id="remote", scopes=["read"]))["session_id"]
        logged = await call(client, "logAction", session_id=sid, tool="t", action="a")
        trail = (await call(client, "getAuditTrail", session_id=sid))["entries"]
    assert [entry["entry_id"] for entry in trail] == [logged["entry_id"]]
    async with stdio_client({**env, "HALDIR_API_KEY": narrow}) as client:
        denied = await refused(client, "getAuditTrail", session_id=sid)
    assert denied["code"] == "insufficient_scope"
    assert denied["required"] == "audit:read"
    assert denied["request_id"].startswith("req_")


async def test_the_readmes_config_with_a_url_serves_the_ten_tools_from_an_empty_folder(
    running: Running, tmp_path: Path
) -> None:
    """Only HALDIR_API_KEY and HALDIR_URL, started in a folder with no store: the MCP client's usual case."""
    env = {"HALDIR_API_KEY": running.admin_key, "HALDIR_URL": running.url}
    async with stdio_client(env, cwd=tmp_path) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOL_NAMES
        created = await call(client, "createSession", agent_id="desk", scopes=["read"])
    assert created["session_id"].startswith("ses_")
    assert [path async for path in anyio.Path(tmp_path).iterdir()] == []  # no store was created


def test_with_only_a_key_it_calls_the_default_server_and_never_creates_a_store(tmp_path: Path) -> None:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8000)) == 0:
            pytest.skip("something listens on 127.0.0.1:8000, the default HALDIR_URL")
    env = {"HALDIR_API_KEY": "hld_" + "x" * 48, "PATH": os.environ.get("PATH", "")}
    result = subprocess.run(
        [HALDIR_MCP], env=env, cwd=tmp_path, input="", capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert result.returncode == 7, result.stderr
    assert result.stdout == ""
    assert (
        "haldir-mcp: error: cannot reach the Haldir server at http://127.0.0.1:8000 (the default, as "
        "HALDIR_URL is not set and neither HALDIR_DATA_DIR nor HALDIR_DATABASE_URL names a local store)"
    ) in result.stderr
    assert list(tmp_path.iterdir()) == []  # no .haldir folder


@pytest.mark.parametrize(
    ("variables", "local"),
    [
        ({}, False),
        ({"HALDIR_URL": "https://haldir.example.com"}, False),
        ({"HALDIR_DATA_DIR": "/srv/haldir"}, True),
        ({"HALDIR_DATABASE_URL": "postgresql://db/haldir"}, True),
        ({"HALDIR_DATA_DIR": "/srv/haldir", "HALDIR_URL": "https://haldir.example.com"}, False),
    ],
)
def test_a_local_store_is_used_only_when_named_and_no_url_is_set(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], local: bool
) -> None:
    for name in ("HALDIR_URL", "HALDIR_DATA_DIR", "HALDIR_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert uses_local_store(Settings(), ClientSettings()) is local
