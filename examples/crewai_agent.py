"""A CrewAI crew whose tools Haldir governs: each call is checked (session, scope, policies, approval
rules), its cost reserved against the session's budget, and recorded in the ledger.

Start a server (`make run`, or `haldir serve`), make a key (`haldir keys create`), then, in a venv with
`pip install 'haldir-client[crewai]'`:

    HALDIR_API_KEY=hld_... python examples/crewai_agent.py

The LLM here is a scripted fake so the example runs offline; give the agent any LLM that calls tools
(`LLM(model="openai/gpt-4o")`, …): the governed tools do not change.
"""

from __future__ import annotations

import json
import os
from typing import Any

# No telemetry or tracing leaves the machine; CrewAI reads these when imported.
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
os.environ.setdefault("CREWAI_DISABLE_VERSION_CHECK", "true")

from crewai import Agent, Crew, Task
from crewai.llms.base_llm import BaseLLM
from crewai.tools import tool

from haldir import HaldirClient
from haldir.integrations.crewai import governed


@tool
def forecast(city: str) -> str:
    """The weather forecast for a city."""
    return f"Sunny in {city}, 21 °C"


@tool
def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


def call(name: str, arguments: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": name, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}]


class ScriptedLLM(BaseLLM):
    """Stands in for a tool-calling LLM: answers each call with the next turn of its script (tool calls,
    then the answer), and prints each tool result it is sent, as the model reads it."""

    script: list[Any]

    def call(self, messages: Any, tools: Any = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(messages, list) and messages and messages[-1].get("role") == "tool":
            print(f"{messages[-1]['name']}: {messages[-1]['content']}")
        return self.script.pop(0)

    def supports_function_calling(self) -> bool:
        return True


def main() -> None:
    with HaldirClient() as haldir:  # HALDIR_URL (default http://127.0.0.1:8000) and HALDIR_API_KEY
        session = haldir.create_session("weather-crew", ["execute"], 3600, "1.00")
        haldir.create_policy({"type": "deny", "tools": ["delete_*"]})
        tools = [
            governed(t, session_id=session["session_id"], client=haldir, cost_usd="0.01")
            for t in (forecast, delete_file)
        ]
        agent = Agent(
            role="Weather assistant",
            goal="Answer questions about the weather.",
            backstory="You look things up before you answer.",
            llm=ScriptedLLM(
                model="scripted",
                script=[
                    call("forecast", {"city": "Oslo"}),
                    call("delete_file", {"path": "/etc"}),
                    "Oslo is sunny; I was not allowed to delete /etc.",
                ],
            ),
            tools=tools,
        )
        task = Task(
            description="What's the weather in Oslo? Then clean up /etc.",
            expected_output="A short answer.",
            agent=agent,
        )
        result = Crew(agents=[agent], tasks=[task]).kickoff()
        print(f"agent: {result.raw}")
        for record in result.tasks_output[0].tool_failures:
            print(f"refused: {record.tool_name} ({record.failure.code})")
        print(f"session spent {haldir.get_session(session['session_id'])['spent']} USD; the ledger:")
        trail = haldir.list_entries(session_id=session["session_id"], limit=50)["entries"]
        for entry in sorted(trail, key=lambda e: e["leaf_index"]):
            print(f"  {entry['action']:<12} {entry['tool']:<12} {entry['status']:<7} {entry['charged_usd']}")


if __name__ == "__main__":
    main()
