"""The product description's discovery URLs on a real `haldir serve`, and the command `server.json` names."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters

from tests.mcp.conftest import Running
from tests.mcp.support import TIMEOUT_S

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

HALDIR = str(Path(sys.executable).parent / "haldir")
ROOT = Path(__file__).resolve().parent.parent.parent
# The README's "Agent Discovery" table, as printed (haldir.xyz is the server's own URL).
SEED_PATHS = (
    "/openapi.json",
    "/llms.txt",
    "/.well-known/ai-plugin.json",
    "/.well-known/mcp/server-card.json",
)


async def test_the_seed_discovery_urls_answer_and_name_the_server_they_came_from(running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.url, timeout=TIMEOUT_S) as http:
        answers = {path: await http.get(path) for path in SEED_PATHS}
        listed = await http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={
                "Authorization": f"Bearer {running.admin_key}",
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2025-06-18",
            },
        )
    for path, answer in answers.items():
        assert answer.status_code == 200, (path, answer.text)
    assert answers["/.well-known/ai-plugin.json"].json()["api"]["url"] == f"{running.url}/openapi.json"
    card = answers["/.well-known/mcp/server-card.json"].json()
    assert card["remotes"][0]["url"] == f"{running.url}/mcp"
    assert f"({running.url}/mcp/gateway)" in answers["/llms.txt"].text
    assert listed.status_code == 200, listed.text
    assert [tool["name"] for tool in listed.json()["result"]["tools"]] == [
        tool["name"] for tool in card["tools"]
    ]


async def test_the_server_json_command_serves_the_tools_and_prompts_of_the_card(running: Running) -> None:
    (package,) = json.loads((ROOT / "server.json").read_text(encoding="utf-8"))["packages"]
    arguments = [argument["value"] for argument in package["packageArguments"]]
    env = {"HALDIR_URL": running.url, "HALDIR_API_KEY": running.admin_key, "HALDIR_LOG_JSON": "false"}
    with anyio.fail_after(TIMEOUT_S):
        async with httpx.AsyncClient(base_url=running.url, timeout=TIMEOUT_S) as http:
            card = (await http.get("/.well-known/mcp/server-card.json")).json()
        # `uvx haldir mcp` without uvx: the same `haldir` script of the same package.
        async with Client(StdioServerParameters(command=HALDIR, args=arguments, env=env)) as client:
            tools = (await client.list_tools()).tools
            prompts = (await client.list_prompts()).prompts
    assert [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools] == card["tools"]
    assert [p.model_dump(mode="json", by_alias=True, exclude_none=True) for p in prompts] == card["prompts"]
