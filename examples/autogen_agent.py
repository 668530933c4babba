"""An AutoGen `AssistantAgent` whose tools Haldir governs: each call is checked (session, scope, policies,
approval rules), its cost reserved against the session's budget, and recorded in the ledger.

Start a server (`make run`, or `haldir serve`), make a key (`haldir keys create`), then:

    pip install 'haldir[autogen]' autogen-ext
    HALDIR_API_KEY=hld_... python examples/autogen_agent.py

The model client here replays a script so the example runs offline; swap in any tool-calling client
(`OpenAIChatCompletionClient(model=...)`, ...): the governed tools do not change.
"""

from __future__ import annotations

import asyncio
import json
import logging

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import ToolCallExecutionEvent
from autogen_core import EVENT_LOGGER_NAME, FunctionCall
from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
from autogen_core.tools import FunctionTool
from autogen_ext.models.replay import ReplayChatCompletionClient

from haldir import AsyncHaldirClient
from haldir.integrations.autogen import governed


async def forecast(city: str) -> str:
    return f"Sunny in {city}, 21 °C"


async def delete_file(path: str) -> str:
    return f"deleted {path}"


async def send_email(to: str, body: str) -> str:
    return f"sent to {to}"


def call(name: str, **arguments: str) -> CreateResult:
    """A model turn that asks for one tool call."""
    return CreateResult(
        finish_reason="function_calls",
        content=[FunctionCall(id=name, name=name, arguments=json.dumps(arguments))],
        usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
        cached=False,
    )


async def main() -> None:
    async with AsyncHaldirClient() as haldir:  # HALDIR_URL (default http://127.0.0.1:8000), HALDIR_API_KEY
        session = await haldir.create_session("weather-agent", ["execute"], 3600, "1.00")
        await haldir.create_policy({"type": "deny", "tools": ["delete_*"]})
        await haldir.create_approval_rule({"type": "tool", "tool": "send_email"})
        tools = [
            governed(
                FunctionTool(fn, description=description),
                session_id=session["session_id"],
                aclient=haldir,
                cost_usd="0.01",
            )
            for fn, description in [
                (forecast, "The weather forecast for a city."),
                (delete_file, "Delete a file."),
                (send_email, "Send an email."),
            ]
        ]
        model = ReplayChatCompletionClient(
            [
                call("forecast", city="Oslo"),
                call("delete_file", path="/etc"),
                call("send_email", to="team@example.com", body="Sunny in Oslo"),
                "Oslo is sunny; I may not delete /etc, and the email waits for a person's approval.",
            ],
            model_info=ModelInfo(
                vision=False,
                function_calling=True,
                json_output=False,
                family=ModelFamily.UNKNOWN,
                structured_output=False,
            ),
        )
        agent = AssistantAgent("weather_agent", model_client=model, tools=tools, max_tool_iterations=5)
        done = await agent.run(task="What's the weather in Oslo? Clean up /etc, then email the team.")
        for message in done.messages:
            if isinstance(message, ToolCallExecutionEvent):
                for result in message.content:
                    print(f"{result.name}: {result.content}")
        print(f"agent: {done.messages[-1].to_text()}")
        spent = (await haldir.get_session(session["session_id"]))["spent"]
        print(f"session spent {spent} USD; the ledger:")
        trail = (await haldir.list_entries(session_id=session["session_id"], limit=50))["entries"]
        for entry in sorted(trail, key=lambda e: e["leaf_index"]):
            print(f"  {entry['action']:<12} {entry['tool']:<12} {entry['status']:<7} {entry['charged_usd']}")


if __name__ == "__main__":
    logging.getLogger(EVENT_LOGGER_NAME).setLevel(
        logging.ERROR
    )  # the replaying client's token-count warnings
    asyncio.run(main())
