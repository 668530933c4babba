"""A LangChain agent whose tools Haldir governs: each call is checked (session, scope, policies,
approval rules), its cost reserved against the session's budget, and recorded in the ledger.

Start a server (`make run`, or `haldir serve`), make a key (`haldir keys create`), then:

    HALDIR_API_KEY=hld_... python examples/langchain_agent.py

The chat model here is a scripted fake so the example runs offline; swap in any tool-calling model
(`ChatOpenAI(model=...)`, `ChatAnthropic(...)`): the governed tools do not change.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import BaseTool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool

from haldir import HaldirClient
from haldir.integrations.langchain import HaldirCallbackHandler, governed


@tool
def forecast(city: str) -> str:
    """The weather forecast for a city."""
    return f"Sunny in {city}, 21 °C"


@tool
def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


class ScriptedModel(GenericFakeChatModel):
    """Stands in for a tool-calling chat model: asks for two tool calls, then answers."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


def main() -> None:
    with HaldirClient() as haldir:  # HALDIR_URL (default http://127.0.0.1:8000) and HALDIR_API_KEY
        session = haldir.create_session("weather-agent", ["execute"], 3600, "1.00")
        haldir.create_policy({"type": "deny", "tools": ["delete_*"]})
        tools: list[BaseTool] = [
            governed(t, session_id=session["session_id"], client=haldir, cost_usd="0.01")
            for t in (forecast, delete_file)
        ]
        model = ScriptedModel(
            messages=iter(
                [
                    AIMessage("", tool_calls=[{"name": "forecast", "args": {"city": "Oslo"}, "id": "1"}]),
                    AIMessage("", tool_calls=[{"name": "delete_file", "args": {"path": "/etc"}, "id": "2"}]),
                    AIMessage("Oslo is sunny; I was not allowed to delete /etc."),
                ]
            )
        ).bind_tools(tools)
        config: Any = {"callbacks": [HaldirCallbackHandler(haldir, session_id=session["session_id"])]}
        by_name = {t.name: t for t in tools}
        messages: list[BaseMessage] = [HumanMessage("What's the weather in Oslo? Then clean up /etc.")]
        while True:
            answer = model.invoke(messages, config)
            messages.append(answer)
            if not answer.tool_calls:
                break
            for call in answer.tool_calls:
                reply = by_name[call["name"]].invoke(call, config)
                print(f"{call['name']}: {reply.content}")
                messages.append(reply)
        print(f"agent: {answer.content}")
        print(f"session spent {haldir.get_session(session['session_id'])['spent']} USD; the ledger:")
        trail = haldir.list_entries(session_id=session["session_id"], limit=50)["entries"]
        for entry in sorted(trail, key=lambda e: e["leaf_index"]):
            print(f"  {entry['action']:<12} {entry['tool']:<12} {entry['status']:<7} {entry['charged_usd']}")


if __name__ == "__main__":
    main()
