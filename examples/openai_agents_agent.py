"""An OpenAI Agents SDK agent whose tools Haldir governs: each call is checked (session, scope, policies,
approval rules), its cost reserved against the session's budget, and recorded in the ledger.

Start a server (`make run`, or `haldir serve`), make a key (`haldir keys create`), then:

    HALDIR_API_KEY=hld_... python examples/openai_agents_agent.py

The model here is the SDK's scripted test model (`agents.testing.ScriptedModel`) so the example runs
offline, with tracing off (it would export to OpenAI); give the agent a real model (`model="gpt-5"`)
and the governed tools do not change.
"""

from __future__ import annotations

import asyncio

from agents import Agent, Runner, Tool, ToolCallItem, ToolCallOutputItem, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call

from haldir import AsyncHaldirClient
from haldir.integrations.openai_agents import governed


@function_tool
def forecast(city: str) -> str:
    """The weather forecast for a city."""
    return f"Sunny in {city}, 21 °C"


@function_tool
def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


async def main() -> None:
    set_tracing_disabled(True)
    async with AsyncHaldirClient() as haldir:  # HALDIR_URL (default http://127.0.0.1:8000), HALDIR_API_KEY
        session = await haldir.create_session("weather-agent", ["execute"], 3600, "1.00")
        await haldir.create_policy({"type": "deny", "tools": ["delete_*"]})
        tools: list[Tool] = [
            governed(t, session_id=session["session_id"], aclient=haldir, cost_usd="0.01")
            for t in (forecast, delete_file)
        ]
        model = ScriptedModel(
            [
                [function_call("forecast", {"city": "Oslo"}, call_id="1")],
                [function_call("delete_file", {"path": "/etc"}, call_id="2")],
                [assistant_message("Oslo is sunny; I was not allowed to delete /etc.")],
            ]
        )
        agent = Agent(name="weather-agent", model=model, tools=tools)
        result = await Runner.run(agent, "What's the weather in Oslo? Then clean up /etc.")
        for item in result.new_items:
            if isinstance(item, ToolCallItem):
                name = getattr(item.raw_item, "name", "tool")
            elif isinstance(item, ToolCallOutputItem):
                print(f"{name}: {item.output}")
        print(f"agent: {result.final_output}")
        spent = (await haldir.get_session(session["session_id"]))["spent"]
        print(f"session spent {spent} USD; the ledger:")
        trail = (await haldir.list_entries(session_id=session["session_id"], limit=50))["entries"]
        for entry in sorted(trail, key=lambda e: e["leaf_index"]):
            print(f"  {entry['action']:<12} {entry['tool']:<12} {entry['status']:<7} {entry['charged_usd']}")


if __name__ == "__main__":
    asyncio.run(main())
