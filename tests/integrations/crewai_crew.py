"""A real CrewAI crew (one agent, one task, a scripted fake LLM calling tools natively) over governed tools,
against the server at HALDIR_URL with HALDIR_API_KEY; prints what happened as JSON. It runs in
`.venv-clients` (CrewAI cannot share `.venv` with the server): tests/integrations/test_crewai.py runs it.

argv[1] is the scenario, JSON: `session_id`, `calls` (`[[tool, arguments], …]`, the model's tool calls in
order), and optionally `cost_usd`, `failure_policy` (CrewAI's `tool_failure_policy` of the task), `react`
(the model has no native tool calling and answers ReAct text) and `mode` (`crew`, or `arun`: each call
awaited on the governed tool with an `AsyncHaldirClient`, no crew).
"""

from __future__ import annotations

import os

# No telemetry or tracing leaves the machine; CrewAI reads these when imported.
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
os.environ.setdefault("CREWAI_DISABLE_VERSION_CHECK", "true")

import asyncio
import json
import sys
from typing import Any

from crewai import Agent, Crew, Task
from crewai.llms.base_llm import BaseLLM
from crewai.tools import BaseTool, ToolExecutionFailedError, ToolFailure, tool
from pydantic import Field

from haldir import AsyncHaldirClient, HaldirClient
from haldir.integrations.crewai import governed

RAN: list[dict[str, Any]] = []


@tool
def forecast(city: str, token: str = "") -> str:
    """The weather forecast for a city."""
    RAN.append({"tool": "forecast", "city": city, "token": token})
    return f"Sunny in {city} (asked with {token or 'no token'})"


@tool
def delete_file(path: str) -> str:
    """Delete a file."""
    RAN.append({"tool": "delete_file", "path": path})
    return f"deleted {path}"


@tool("Delete File")
def delete_file_by_title(path: str) -> str:
    """Delete a file (a tool named as a title; the model and Haldir know it as delete_file)."""
    RAN.append({"tool": "Delete File", "path": path})
    return f"deleted {path}"


@tool
def send_email(to: str, body: str) -> str:
    """Send an email."""
    RAN.append({"tool": "send_email", "to": to})
    return f"sent to {to}"


@tool
def flaky(city: str) -> str:
    """A forecast service that is down."""
    RAN.append({"tool": "flaky", "city": city})
    raise RuntimeError(f"no data for {city}")


@tool
def vault_lookup(token: str) -> ToolFailure:
    """A lookup whose service rejects the token it was given."""
    RAN.append({"tool": "vault_lookup"})
    return ToolFailure(message=f"token {token} expired", code="expired")


@tool
async def alookup(city: str, token: str = "") -> str:
    """The weather forecast for a city, asynchronously."""
    RAN.append({"tool": "alookup", "city": city, "token": token})
    return f"Rainy in {city} (asked with {token or 'no token'})"


TOOLS: dict[str, BaseTool] = {
    t.name: t for t in (forecast, delete_file, delete_file_by_title, send_email, flaky, vault_lookup, alookup)
}


class ScriptedLLM(BaseLLM):
    """Stands in for a tool-calling model: answers each call with the next turn of its script (a list of
    OpenAI-style tool calls, or the final text) and keeps the messages it was sent."""

    script: list[Any]
    seen: list[Any] = Field(default_factory=list)
    offered: list[Any] = Field(default_factory=list)

    def call(self, messages: Any, tools: Any = None, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(messages)
        self.offered = tools or []
        return self.script.pop(0)

    def supports_function_calling(self) -> bool:
        return True


class ReActLLM(ScriptedLLM):
    """A model without native tool calling: CrewAI prompts it for ReAct text and parses its actions."""

    def supports_function_calling(self) -> bool:
        return False


def tool_call(index: int, name: str, arguments: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{index}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
    ]


def run_crew(scenario: dict[str, Any], client: HaldirClient) -> dict[str, Any]:
    calls = scenario["calls"]
    names = sorted({name for name, _ in calls})
    tools = [
        governed(
            TOOLS[n], session_id=scenario["session_id"], client=client, cost_usd=scenario.get("cost_usd")
        )
        for n in names
    ]
    if scenario.get("react"):
        turns = [f"Thought: I need {n}.\nAction: {n}\nAction Input: {json.dumps(a)}" for n, a in calls]
        llm: ScriptedLLM = ReActLLM(model="react", script=[*turns, "Thought: Done.\nFinal Answer: All done."])
    else:
        llm = ScriptedLLM(
            model="scripted", script=[*(tool_call(i, n, a) for i, (n, a) in enumerate(calls)), "All done."]
        )
    agent = Agent(
        role="assistant", goal="Help the user.", backstory="A careful assistant.", llm=llm, tools=tools
    )
    task = Task(
        description="Help me.",
        expected_output="An answer.",
        agent=agent,
        tool_failure_policy=scenario.get("failure_policy"),
    )
    report: dict[str, Any] = {"answer": None, "failures": [], "raised": None}
    try:
        output = Crew(agents=[agent], tasks=[task]).kickoff()
    except ToolExecutionFailedError as exc:
        failure = exc.record.failure
        report["raised"] = {"type": type(exc).__name__, "code": failure.code, "details": failure.details}
    else:
        report["answer"] = output.raw
        report["failures"] = [
            {
                "tool": r.tool_name,
                "message": r.failure.message,
                "code": r.failure.code,
                "retryable": r.failure.retryable,
                "details": r.failure.details,
            }
            for r in output.tasks_output[0].tool_failures
        ]
    last = llm.seen[-1] if llm.seen else []
    report["tool_messages"] = [
        {"name": m["name"], "content": m["content"]}
        for m in last
        if isinstance(m, dict) and m.get("role") == "tool"
    ]
    report["offered"] = llm.offered
    return report


async def run_async(scenario: dict[str, Any]) -> dict[str, Any]:
    results: list[Any] = []
    async with AsyncHaldirClient() as client:
        for name, arguments in scenario["calls"]:
            wrapped = governed(
                TOOLS[name],
                session_id=scenario["session_id"],
                aclient=client,
                cost_usd=scenario.get("cost_usd"),
            )
            answer = await wrapped.arun(**arguments)
            results.append(answer.model_dump(mode="json") if isinstance(answer, ToolFailure) else answer)
    return {"results": results}


def main() -> None:
    scenario = json.loads(sys.argv[1])
    if scenario.get("mode") == "arun":
        report = asyncio.run(run_async(scenario))
    else:
        with HaldirClient() as client:  # HALDIR_URL and HALDIR_API_KEY
            report = run_crew(scenario, client)
    print(json.dumps({**report, "ran": RAN}))


if __name__ == "__main__":
    main()
