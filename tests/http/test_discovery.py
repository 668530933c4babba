"""The discovery documents: public, cheap, built from the live routes and MCP servers, free of tenant data."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from fastapi import FastAPI

from haldir.http.app import create_app
from haldir.http.discovery import CARD_PATH, LLMS_PATH, PLUGIN_PATH, PluginManifest, ServerCard
from haldir.mcp import governance
from haldir.mcp.card import META, REGISTRY_NAME
from haldir.mcp.governance import GovernanceTool, SessionArgs, _hints
from haldir.settings import Settings
from tests.conftest import Api
from tests.mcp.support import TOOL_NAMES, http_client

pytestmark = pytest.mark.anyio

DOCUMENTS = {
    LLMS_PATH: "text/plain; charset=utf-8",
    PLUGIN_PATH: "application/json",
    CARD_PATH: "application/json",
}
GATEWAY_OWN_TOOLS = {"haldir_check_permission", "haldir_get_spend", "haldir_get_audit", "haldir_get_approval"}


@pytest.fixture
def store_url(sqlite_url: str) -> str:
    """The documents touch no store: one backend is enough for the tests that need a tenant."""
    return sqlite_url


def _app(tmp_path: Path, **settings: Any) -> FastAPI:
    # No lifespan: the documents need no store, which is part of what is tested.
    return create_app(Settings(data_dir=tmp_path, **settings))


async def _client(app: FastAPI, base_url: str = "http://haldir.test") -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client:
        yield client


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for found in _client(_app(tmp_path)):
        yield found


def _operations(app: FastAPI) -> set[str]:
    return {f"{method.upper()} {path}" for path, ops in app.openapi()["paths"].items() for method in ops}


async def test_each_document_answers_without_a_key_with_its_type_and_cache_headers(
    client: httpx.AsyncClient,
) -> None:
    for path, media in DOCUMENTS.items():
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"] == media
        assert response.headers["cache-control"] == "public, max-age=300"
        assert response.headers["vary"] == "Host, X-Forwarded-Proto"
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["x-content-type-options"] == "nosniff"
        again = await client.get(path, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""


async def test_llms_txt_follows_the_convention_and_names_every_route_and_tool(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async for client in _client(app):
        text = (await client.get(LLMS_PATH)).text
    assert text.startswith("# Haldir\n\n> ")
    assert re.search(r"^## MCP$", text, flags=re.MULTILINE)
    named = set(re.findall(r"`((?:GET|POST|PUT|PATCH|DELETE) /[^`]*)`", text))
    assert named == _operations(app), "llms.txt names exactly the routes of the OpenAPI document"
    for name in TOOL_NAMES | GATEWAY_OWN_TOOLS | {"security-audit", "budget-check"}:
        assert f"`{name}`" in text
    for link in ("/openapi.json", "/mcp", "/mcp/gateway", CARD_PATH, PLUGIN_PATH):
        assert f"(http://haldir.test{link})" in text


async def test_a_route_added_to_the_app_joins_llms_txt(tmp_path: Path) -> None:
    app = _app(tmp_path)

    @app.get("/v1/probe", tags=["probe"])
    async def probe() -> dict[str, str]:
        """A probe route added by this test."""
        return {}

    async for client in _client(app):
        text = (await client.get(LLMS_PATH)).text
    assert "- `GET /v1/probe`: A probe route added by this test." in text


async def test_the_plugin_manifest_points_at_the_openapi_document_with_bearer_auth(
    client: httpx.AsyncClient,
) -> None:
    manifest = (await client.get(PLUGIN_PATH)).json()
    PluginManifest.model_validate(manifest)
    assert manifest["schema_version"] == "v1"
    assert manifest["name_for_model"] == "haldir"
    assert manifest["auth"] == {"type": "user_http", "authorization_type": "bearer"}
    assert manifest["api"] == {"type": "openapi", "url": "http://haldir.test/openapi.json"}
    assert len(manifest["description_for_human"]) <= 100
    assert (await client.get(manifest["api"]["url"])).status_code == 200


async def test_urls_come_from_the_public_url_setting_and_never_from_forwarded_host(tmp_path: Path) -> None:
    async for client in _client(_app(tmp_path, public_url="https://gov.example.com/haldir/")):
        response = await client.get(PLUGIN_PATH, headers={"X-Forwarded-Host": "evil.example"})
        card = (await client.get(CARD_PATH)).json()
    assert response.json()["api"]["url"] == "https://gov.example.com/haldir/openapi.json"
    assert "vary" not in response.headers
    assert card["remotes"][0]["url"] == "https://gov.example.com/haldir/mcp"
    async for client in _client(_app(tmp_path)):
        forwarded = await client.get(PLUGIN_PATH, headers={"X-Forwarded-Host": "evil.example"})
        odd_host = await client.get(LLMS_PATH, headers={"Host": "evil](javascript:x)"})
    assert "evil" not in forwarded.text
    assert "evil" not in odd_host.text
    assert "(/openapi.json)" in odd_host.text  # links become relative rather than carry that Host


async def test_the_server_card_lists_the_servers_tools_prompts_and_transports(
    client: httpx.AsyncClient,
) -> None:
    card = (await client.get(CARD_PATH)).json()
    ServerCard.model_validate(card)
    assert card["name"] == REGISTRY_NAME
    assert {tool["name"] for tool in card["tools"]} == TOOL_NAMES
    assert {prompt["name"] for prompt in card["prompts"]} == {"security-audit", "budget-check"}
    assert all(tool["inputSchema"]["type"] == "object" and tool["description"] for tool in card["tools"])
    gateway = card["_meta"][f"{META}/gateway"]
    assert {tool["name"] for tool in gateway["tools"]} == GATEWAY_OWN_TOOLS
    assert gateway["remotes"][0]["url"] == "http://haldir.test/mcp/gateway"
    assert "X-Session-ID" in {header["name"] for header in gateway["remotes"][0]["headers"]}
    transports = {
        (t["type"], t.get("url") or " ".join([t["command"], *t["args"]]))
        for t in card["_meta"][f"{META}/transports"]
    }
    assert transports == {
        ("streamable-http", "http://haldir.test/mcp"),
        ("streamable-http", "http://haldir.test/mcp/gateway"),
        ("stdio", "haldir-mcp"),
        ("stdio", "haldir mcp"),
        ("stdio", "haldir proxy"),
    }


async def test_a_tool_registered_on_the_server_joins_the_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = GovernanceTool(
        "probeTool",
        SessionArgs,
        governance.get_session,
        "sessions:read",
        "A tool added by this test.",
        _hints("Probe", read_only=True, idempotent=True),
    )
    monkeypatch.setattr(governance, "TOOLS", (*governance.TOOLS, extra))
    async for client in _client(_app(tmp_path)):
        card = (await client.get(CARD_PATH)).json()
        text = (await client.get(LLMS_PATH)).text
    assert {tool["name"] for tool in card["tools"]} == TOOL_NAMES | {"probeTool"}
    assert "`probeTool`" in text


async def test_the_card_matches_what_the_live_endpoints_list_and_holds_no_tenant_data(api: Api) -> None:
    owner = api.auth(api.admin_key)
    session = await api.client.post(
        "/v1/sessions", json={"agent_id": "agent-zeta-7", "scopes": ["read"]}, headers=owner
    )
    session_id = session.json()["session_id"]
    await api.client.post("/v1/secrets", json={"name": "secret-omega-9", "value": "v4lue-xyz"}, headers=owner)
    transport = httpx2.ASGITransport(app=api.app)
    async with http_client("http://haldir.test/mcp", owner, transport=transport) as mcp:
        tools = [
            tool.model_dump(mode="json", by_alias=True, exclude_none=True)
            for tool in (await mcp.list_tools()).tools
        ]
        prompts = [
            p.model_dump(mode="json", by_alias=True, exclude_none=True)
            for p in (await mcp.list_prompts()).prompts
        ]
    gateway_headers = {**owner, "X-Session-ID": session_id}
    async with http_client("http://haldir.test/mcp/gateway", gateway_headers, transport=transport) as mcp:
        gateway_tools = [
            tool.model_dump(mode="json", by_alias=True, exclude_none=True)
            for tool in (await mcp.list_tools()).tools
        ]
    card = (await api.client.get(CARD_PATH)).json()
    assert card["tools"] == tools
    assert card["prompts"] == prompts
    assert card["_meta"][f"{META}/gateway"]["tools"] == gateway_tools
    for path in DOCUMENTS:
        text = (await api.client.get(path)).text
        for private in (
            "acme",
            session_id,
            "agent-zeta-7",
            "secret-omega-9",
            "v4lue-xyz",
            api.admin_key[:12],
        ):
            assert private not in text, (path, private)
