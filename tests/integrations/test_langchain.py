"""LangChain: a real agent loop (a fake chat model with bound tools, `langchain-core`'s tool calling and
tool messages) driving governed tools against the app in-process; allowed, denied, over budget, held for
approval, strict, async, secrets, and the ledger callback handler."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import httpx
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from haldir import AsyncHaldirClient, HaldirClient, ToolDenied
from haldir.integrations.langchain import AsyncHaldirCallbackHandler, HaldirCallbackHandler, governed
from tests.client.inprocess import AppTransport, blocking
from tests.conftest import Api

pytestmark = pytest.mark.anyio
BASE = "http://haldir.test"
TOKEN = "wt-51f0c2"
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


@tool
def send_email(to: str, body: str) -> str:
    """Send an email."""
    RAN.append({"tool": "send_email", "to": to})
    return f"sent to {to}"


class ScriptedChatModel(GenericFakeChatModel):
    """A fake chat model that accepts tools as a tool-calling model does and answers from a script."""

    bound: list[dict[str, Any]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any) -> Any:
        self.bound = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=self.bound, **kwargs)


def _script(*calls: tuple[str, dict[str, Any]]) -> ScriptedChatModel:
    turns: list[AIMessage | str] = [
        AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call-{i}"}])
        for i, (name, args) in enumerate(calls)
    ]
    return ScriptedChatModel(messages=iter([*turns, AIMessage(content="All done.")]))


def run_agent(model: ScriptedChatModel, tools: list[BaseTool], callbacks: list[Any]) -> list[BaseMessage]:
    """The tool-calling loop: ask the model, run each tool call it makes, feed back the tool messages."""
    by_name = {t.name: t for t in tools}
    bound = model.bind_tools(tools)
    config: Any = {"callbacks": callbacks}
    messages: list[BaseMessage] = [HumanMessage("Help me.")]
    for _ in range(10):
        answer = bound.invoke(messages, config)
        messages.append(answer)
        if not answer.tool_calls:
            return messages
        for call in answer.tool_calls:
            messages.append(by_name[call["name"]].invoke(call, config))
    raise AssertionError("the agent did not stop")


async def arun_agent(
    model: ScriptedChatModel, tools: list[BaseTool], callbacks: list[Any]
) -> list[BaseMessage]:
    by_name = {t.name: t for t in tools}
    bound = model.bind_tools(tools)
    config: Any = {"callbacks": callbacks}
    messages: list[BaseMessage] = [HumanMessage("Help me.")]
    for _ in range(10):
        answer = await bound.ainvoke(messages, config)
        messages.append(answer)
        if not answer.tool_calls:
            return messages
        for call in answer.tool_calls:
            messages.append(await by_name[call["name"]].ainvoke(call, config))
    raise AssertionError("the agent did not stop")


@pytest.fixture(autouse=True)
def _nothing_ran_yet() -> None:
    RAN.clear()


async def _aclient(api: Api) -> AsyncHaldirClient:
    return AsyncHaldirClient(api_key=api.admin_key, base_url=BASE, transport=httpx.ASGITransport(app=api.app))


async def _session(api: Api, *, limit: str = "5") -> str:
    async with await _aclient(api) as client:
        await client.store_secret("weather_token", TOKEN, "read")
        made = await client.create_session("weather-bot", ["execute", "read"], 600, limit)
    return str(made["session_id"])


async def _trail(api: Api, session_id: str) -> list[dict[str, Any]]:
    async with await _aclient(api) as client:
        page = await client.list_entries(session_id=session_id, limit=100)
    return sorted(page["entries"], key=lambda entry: entry["leaf_index"])


async def _admin(api: Api, method: str, path: str, body: Any = None) -> Any:
    async with await _aclient(api) as client:
        return await client.request(method, path, json=body)


async def _blocking_agent(
    api: Api, session_id: str, model: ScriptedChatModel, tools: list[BaseTool], **options: Any
) -> list[BaseMessage]:
    """The agent loop in a worker thread with a blocking client, as a sync program runs it."""

    def run() -> list[BaseMessage]:
        with HaldirClient(api_key=api.admin_key, base_url=BASE, transport=AppTransport(api.app)) as client:
            wrapped: list[BaseTool] = [
                governed(t, session_id=session_id, client=client, **options) for t in tools
            ]
            handler = HaldirCallbackHandler(client, session_id=session_id)
            return run_agent(model, wrapped, [handler])

    return await blocking(run)


def _tool_messages(messages: list[BaseMessage]) -> list[ToolMessage]:
    return [m for m in messages if isinstance(m, ToolMessage)]


def test_a_governed_tool_keeps_the_tools_name_description_and_args_schema() -> None:
    client = HaldirClient(api_key="hld_x", base_url=BASE)
    try:
        wrapped = governed(forecast, session_id="ses_x", client=client)
    finally:
        client.close()

    assert convert_to_openai_tool(wrapped) == convert_to_openai_tool(forecast)
    assert (wrapped.name, wrapped.description) == ("forecast", forecast.description)


async def test_an_allowed_call_runs_and_is_recorded_with_its_cost_and_the_runs_events(api: Api) -> None:
    session_id = await _session(api)
    model = _script(("forecast", {"city": "Oslo"}))

    messages = await _blocking_agent(api, session_id, model, [forecast], cost_usd="0.05")

    (reply,) = _tool_messages(messages)
    assert (reply.status, reply.content) == ("success", "Sunny in Oslo (asked with no token)")
    assert messages[-1].content == "All done."
    assert [bound["function"]["name"] for bound in model.bound] == ["forecast"]
    trail = await _trail(api, session_id)
    calls = [e for e in trail if e["action"] == "tools/call"]
    assert [(e["details"]["phase"], e["status"], Decimal(e["charged_usd"])) for e in calls] == [
        ("admit", "ok", Decimal("0.05")),
        ("finish", "ok", Decimal("0")),
    ]
    assert all(e["details"]["local"] is True for e in calls)
    events = [(e["tool"], e["action"], e["status"]) for e in trail if e["action"] != "tools/call"]
    assert events == [("llm", "llm.call", "ok"), ("forecast", "tool.run", "ok"), ("llm", "llm.call", "ok")]
    async with await _aclient(api) as client:
        assert (await client.get_session(session_id))["spent"] == Decimal("0.05")


async def test_a_denied_call_is_a_tool_error_the_model_reads_and_a_denied_entry(api: Api) -> None:
    await _admin(api, "POST", "/v1/proxy/policies", {"type": "deny", "tools": ["delete_*"]})
    session_id = await _session(api)

    messages = await _blocking_agent(
        api, session_id, _script(("delete_file", {"path": "/etc/passwd"})), [delete_file]
    )

    (reply,) = _tool_messages(messages)
    assert reply.status == "error"
    assert "Haldir refused this call (tool_denied)" in str(reply.content)
    assert "deny list" in str(reply.content)
    assert RAN == []
    denied = [e for e in await _trail(api, session_id) if e["action"] == "tools/call"]
    assert [(e["tool"], e["status"], e["flagged"]) for e in denied] == [("delete_file", "denied", True)]


async def test_a_call_over_the_budget_is_a_tool_error_and_reserves_nothing(api: Api) -> None:
    session_id = await _session(api, limit="0.10")

    messages = await _blocking_agent(
        api, session_id, _script(("forecast", {"city": "Oslo"})), [forecast], cost_usd="0.25"
    )

    (reply,) = _tool_messages(messages)
    assert reply.status == "error"
    assert "(budget_exceeded)" in str(reply.content)
    assert RAN == []
    trail = await _trail(api, session_id)
    assert [e["status"] for e in trail if e["action"] == "tools/call"] == ["denied"]
    async with await _aclient(api) as client:
        assert (await client.get_session(session_id))["spent"] == Decimal("0")


async def test_a_held_call_shows_the_approval_id_and_runs_once_a_person_approves(api: Api) -> None:
    await _admin(api, "POST", "/v1/approvals/rules", {"type": "tool", "tool": "send_*"})
    session_id = await _session(api)
    email = {"to": "ceo@example.com", "body": "hi"}

    held = await _blocking_agent(api, session_id, _script(("send_email", email)), [send_email])
    (reply,) = _tool_messages(held)
    approval_id = next(word for word in str(reply.content).split() if word.startswith("apr_"))
    assert "(approval_required)" in str(reply.content)
    assert RAN == []
    approver = await api.key("approvals:write")  # never the key that asked
    decided = await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=api.auth(approver))
    assert decided.status_code == 200, decided.text
    again = await _blocking_agent(api, session_id, _script(("send_email", email)), [send_email])

    assert _tool_messages(again)[0].content == "sent to ceo@example.com"
    assert RAN == [{"tool": "send_email", "to": "ceo@example.com"}]


async def test_strict_mode_raises_haldirs_own_error_out_of_the_agent(api: Api) -> None:
    await _admin(api, "POST", "/v1/proxy/policies", {"type": "deny", "tools": ["delete_file"]})
    session_id = await _session(api)

    with pytest.raises(ToolDenied, match="deny list"):
        await _blocking_agent(
            api, session_id, _script(("delete_file", {"path": "/tmp/x"})), [delete_file], strict=True
        )
    assert RAN == []


async def test_an_async_agent_governs_its_calls_and_the_model_never_sees_the_secret(api: Api) -> None:
    session_id = await _session(api)
    model = _script(("forecast", {"city": "Oslo", "token": "{{secret:weather_token}}"}))

    async with await _aclient(api) as client:
        wrapped: list[BaseTool] = [governed(forecast, session_id=session_id, aclient=client, cost_usd="0.01")]
        handler = AsyncHaldirCallbackHandler(client, session_id=session_id)
        messages = await arun_agent(model, wrapped, [handler])

    assert RAN == [{"tool": "forecast", "city": "Oslo", "token": TOKEN}]
    (reply,) = _tool_messages(messages)
    assert reply.content == "Sunny in Oslo (asked with [secret:weather_token])"
    assert TOKEN not in str([m.content for m in messages])
    trail = await _trail(api, session_id)
    assert TOKEN not in str(trail)
    assert [e["action"] for e in trail] == [
        "llm.call",
        "secret.release",
        "tools/call",
        "tools/call",
        "tool.run",
        "llm.call",
    ]


async def test_a_tool_that_raises_is_recorded_as_an_error_and_its_cost_released(api: Api) -> None:
    @tool
    def flaky(city: str) -> str:
        """A tool that fails."""
        raise RuntimeError(f"no data for {city}")

    session_id = await _session(api)
    runner: Callable[..., Any] = _blocking_agent

    with pytest.raises(RuntimeError, match="no data for Oslo"):
        await runner(api, session_id, _script(("flaky", {"city": "Oslo"})), [flaky], cost_usd="0.30")

    finish = [e for e in await _trail(api, session_id) if e["action"] == "tools/call"][-1]
    assert (finish["status"], finish["details"]["error"]) == ("error", "RuntimeError: no data for Oslo")
    async with await _aclient(api) as client:
        assert (await client.get_session(session_id))["spent"] == Decimal("0")
