"""AutoGen: a real `AssistantAgent` on autogen-ext's `ReplayChatCompletionClient` (a model that answers
from a script, `FunctionCall`s included) driving governed `FunctionTool`s against the app in-process;
allowed, denied, over budget, held for approval, secrets, a failing tool, strict, the blocking client."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import anyio
import httpx
import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_core import EVENT_LOGGER_NAME, CancellationToken, FunctionCall
from autogen_core.models import (
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    ModelFamily,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import BaseTool, FunctionTool
from autogen_ext.models.replay import ReplayChatCompletionClient

from haldir import AsyncHaldirClient, HaldirClient, ToolDenied
from haldir.integrations.autogen import HaldirToolError, ScrubbedToolError, governed
from tests.conftest import Api
from tests.integrations.inprocess import BASE, TOKEN, aclient, governed_calls, spent, weather_session

pytestmark = pytest.mark.anyio
RAN: list[dict[str, Any]] = []
TOOL_CALLING = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)


def forecast(city: str, token: str = "") -> str:
    RAN.append({"tool": "forecast", "city": city, "token": token})
    return f"Sunny in {city} (asked with {token or 'no token'})"


async def delete_file(path: str) -> str:
    RAN.append({"tool": "delete_file", "path": path})
    return f"deleted {path}"


async def send_email(to: str, body: str) -> str:
    RAN.append({"tool": "send_email", "to": to})
    return f"sent to {to}"


def flaky(city: str) -> str:
    raise RuntimeError(f"no data for {city}")


def login(token: str) -> str:
    raise PermissionError(f"token {token} was refused")


FORECAST = FunctionTool(forecast, description="The weather forecast for a city.")
DELETE_FILE = FunctionTool(delete_file, description="Delete a file.")
SEND_EMAIL = FunctionTool(send_email, description="Send an email.")
FLAKY = FunctionTool(flaky, description="A forecast that fails.")
LOGIN = FunctionTool(login, description="Log in with a token.")


def _model(*calls: tuple[str, dict[str, Any]]) -> ReplayChatCompletionClient:
    """A model that asks for each call in turn, then answers."""
    turns: list[str | CreateResult] = [
        CreateResult(
            finish_reason="function_calls",
            content=[FunctionCall(id=f"call-{i}", name=name, arguments=json.dumps(args))],
            usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
            cached=False,
        )
        for i, (name, args) in enumerate(calls)
    ]
    return ReplayChatCompletionClient([*turns, "All done."], model_info=TOOL_CALLING)


async def run_agent(model: ReplayChatCompletionClient, tools: Sequence[BaseTool[Any, Any]]) -> str:
    """One agent step: the task, the model's tool calls, their results fed back, the model's answer."""
    agent = AssistantAgent("agent", model_client=model, tools=list(tools), max_tool_iterations=10)
    with anyio.fail_after(60):
        done = await agent.run(task="Help me.")
    return str(done.messages[-1].content)


def _results(model: ReplayChatCompletionClient) -> list[FunctionExecutionResult]:
    """The tool results the model was given, as it was given them."""
    messages = model.create_calls[-1]["messages"]
    return [r for m in messages if isinstance(m, FunctionExecutionResultMessage) for r in m.content]


@pytest.fixture(autouse=True)
def _nothing_ran_yet() -> None:
    RAN.clear()


async def _admin(api: Api, method: str, path: str, body: Any = None) -> Any:
    async with aclient(api) as client:
        return await client.request(method, path, json=body)


async def _governed_agent(
    api: Api,
    session_id: str,
    model: ReplayChatCompletionClient,
    tools: Sequence[FunctionTool],
    **options: Any,
) -> str:
    async with aclient(api) as client:
        wrapped = [governed(t, session_id=session_id, aclient=client, **options) for t in tools]
        return await run_agent(model, wrapped)


async def test_a_governed_tool_keeps_the_tools_name_description_and_schema() -> None:
    async with AsyncHaldirClient(api_key="hld_x", base_url=BASE) as client:
        wrapped = governed(FORECAST, session_id="ses_x", aclient=client)

    assert (wrapped.name, wrapped.description, wrapped.schema) == (
        "forecast",
        "The weather forecast for a city.",
        FORECAST.schema,
    )
    assert wrapped.args_type() is FORECAST.args_type()


async def test_an_allowed_call_runs_and_is_recorded_with_its_cost(api: Api) -> None:
    session_id = await weather_session(api)
    model = _model(("forecast", {"city": "Oslo"}))

    answer = await _governed_agent(api, session_id, model, [FORECAST], cost_usd="0.05")

    assert answer == "All done."
    (result,) = _results(model)
    assert (result.is_error, result.content) == (False, "Sunny in Oslo (asked with no token)")
    assert [t["name"] for t in model.create_calls[0]["tools"]] == ["forecast"]
    calls = await governed_calls(api, session_id)
    assert [(e["details"]["phase"], e["status"], Decimal(e["charged_usd"])) for e in calls] == [
        ("admit", "ok", Decimal("0.05")),
        ("finish", "ok", Decimal("0")),
    ]
    assert all(e["details"]["local"] is True for e in calls)
    assert await spent(api, session_id) == Decimal("0.05")


async def test_a_denied_call_is_an_error_result_the_model_reads_and_a_denied_entry(api: Api) -> None:
    await _admin(api, "POST", "/v1/proxy/policies", {"type": "deny", "tools": ["delete_*"]})
    session_id = await weather_session(api)
    model = _model(("delete_file", {"path": "/etc/passwd"}))

    await _governed_agent(api, session_id, model, [DELETE_FILE])

    (result,) = _results(model)
    assert result.is_error
    assert result.content == (
        "Haldir refused this call (tool_denied): Tool 'delete_file' is on the deny list"
    )
    assert RAN == []
    denied = await governed_calls(api, session_id)
    assert [(e["tool"], e["status"], e["flagged"]) for e in denied] == [("delete_file", "denied", True)]


async def test_a_call_over_the_budget_is_an_error_result_and_reserves_nothing(api: Api) -> None:
    session_id = await weather_session(api, limit="0.10")
    model = _model(("forecast", {"city": "Oslo"}))

    await _governed_agent(api, session_id, model, [FORECAST], cost_usd="0.25")

    (result,) = _results(model)
    assert result.is_error
    assert str(result.content).startswith("Haldir refused this call (budget_exceeded)")
    assert RAN == []
    assert [e["status"] for e in await governed_calls(api, session_id)] == ["denied"]
    assert await spent(api, session_id) == Decimal("0")


async def test_a_held_call_shows_the_approval_id_and_runs_once_a_person_approves(api: Api) -> None:
    await _admin(api, "POST", "/v1/approvals/rules", {"type": "tool", "tool": "send_*"})
    session_id = await weather_session(api)
    email = {"to": "ceo@example.com", "body": "hi"}

    held = _model(("send_email", email))
    await _governed_agent(api, session_id, held, [SEND_EMAIL])
    (result,) = _results(held)
    approval_id = next(word for word in str(result.content).split() if word.startswith("apr_"))
    assert result.is_error
    assert "(approval_required)" in result.content
    assert f"Approval {approval_id} is pending" in result.content
    assert RAN == []
    approver = await api.key("approvals:write")  # never the key that asked
    decided = await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=api.auth(approver))
    assert decided.status_code == 200, decided.text
    again = _model(("send_email", email))
    await _governed_agent(api, session_id, again, [SEND_EMAIL])

    assert [(r.is_error, r.content) for r in _results(again)] == [(False, "sent to ceo@example.com")]
    assert RAN == [{"tool": "send_email", "to": "ceo@example.com"}]


async def test_a_secret_is_injected_by_name_and_the_model_and_autogens_event_log_never_see_it(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    session_id = await weather_session(api)
    model = _model(("forecast", {"city": "Oslo", "token": "{{secret:weather_token}}"}))

    with caplog.at_level(logging.INFO, logger=EVENT_LOGGER_NAME):
        await _governed_agent(api, session_id, model, [FORECAST], cost_usd="0.01")

    assert RAN == [{"tool": "forecast", "city": "Oslo", "token": TOKEN}]
    (result,) = _results(model)
    assert result.content == "Sunny in Oslo (asked with [secret:weather_token])"
    assert TOKEN not in str(model.create_calls)
    assert "[secret:weather_token]" in caplog.text
    assert TOKEN not in caplog.text
    assert TOKEN not in str(await governed_calls(api, session_id))


async def test_a_tool_that_raises_is_recorded_as_an_error_and_its_cost_released(api: Api) -> None:
    session_id = await weather_session(api)
    model = _model(("flaky", {"city": "Oslo"}))

    await _governed_agent(api, session_id, model, [FLAKY], cost_usd="0.30")

    (result,) = _results(model)
    assert (result.is_error, result.content) == (True, "no data for Oslo")
    finish = (await governed_calls(api, session_id))[-1]
    assert (finish["status"], finish["details"]["error"]) == ("error", "RuntimeError: no data for Oslo")
    assert await spent(api, session_id) == Decimal("0")


async def test_a_tool_error_that_holds_a_secret_reaches_the_model_and_the_ledger_scrubbed(api: Api) -> None:
    session_id = await weather_session(api)
    model = _model(("login", {"token": "{{secret:weather_token}}"}))

    await _governed_agent(api, session_id, model, [LOGIN])

    (result,) = _results(model)
    assert (result.is_error, result.content) == (True, "token [secret:weather_token] was refused")
    finish = (await governed_calls(api, session_id))[-1]
    assert finish["details"]["error"] == "PermissionError: token [secret:weather_token] was refused"
    async with aclient(api) as client:
        wrapped = governed(LOGIN, session_id=session_id, aclient=client)
        with pytest.raises(ScrubbedToolError) as raised:
            await wrapped.run_json({"token": "{{secret:weather_token}}"}, CancellationToken())
    assert isinstance(raised.value.__cause__, PermissionError)


async def test_a_refusal_raised_to_a_caller_carries_haldirs_error_and_code(api: Api) -> None:
    await _admin(api, "POST", "/v1/proxy/policies", {"type": "deny", "tools": ["delete_file"]})
    session_id = await weather_session(api)

    async with aclient(api) as client:
        plain = governed(DELETE_FILE, session_id=session_id, aclient=client)
        with pytest.raises(HaldirToolError) as refused:
            await plain.run_json({"path": "/tmp/x"}, CancellationToken())
        strict = governed(DELETE_FILE, session_id=session_id, aclient=client, strict=True)
        with pytest.raises(ToolDenied, match="deny list"):
            await strict.run_json({"path": "/tmp/x"}, CancellationToken())

    assert (refused.value.code, type(refused.value.error)) == ("tool_denied", ToolDenied)
    assert refused.value.__cause__ is refused.value.error
    assert RAN == []


async def test_strict_mode_inside_an_assistant_agent_is_still_an_error_result(api: Api) -> None:
    """AutoGen's workbench catches every exception a tool raises; strict changes only what it catches."""
    await _admin(api, "POST", "/v1/proxy/policies", {"type": "deny", "tools": ["delete_file"]})
    session_id = await weather_session(api)
    model = _model(("delete_file", {"path": "/tmp/x"}))

    await _governed_agent(api, session_id, model, [DELETE_FILE], strict=True)

    (result,) = _results(model)
    assert (result.is_error, result.content) == (True, "Tool 'delete_file' is on the deny list")


async def test_a_cancelled_call_never_asks_haldir(api: Api) -> None:
    session_id = await weather_session(api)
    token = CancellationToken()
    token.cancel()

    async with aclient(api) as client:
        wrapped = governed(FORECAST, session_id=session_id, aclient=client)
        with pytest.raises(asyncio.CancelledError):
            await wrapped.run_json({"city": "Oslo"}, token)

    assert await governed_calls(api, session_id) == []
    assert RAN == []


class LoopTransport(httpx.BaseTransport):
    """The app in-process for a blocking client called from any thread: each request is served on `loop`."""

    def __init__(self, api: Api, loop: asyncio.AbstractEventLoop) -> None:
        self._asgi = httpx.ASGITransport(app=api.app)
        self._loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def served() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
            return httpx.Response(response.status_code, headers=response.headers, content=raw)

        return asyncio.run_coroutine_threadsafe(served(), self._loop).result(timeout=60)


async def test_a_blocking_client_governs_the_call_from_a_worker_thread(api: Api) -> None:
    session_id = await weather_session(api)
    model = _model(("forecast", {"city": "Oslo", "token": "{{secret:weather_token}}"}))
    transport = LoopTransport(api, asyncio.get_running_loop())

    with HaldirClient(api_key=api.admin_key, base_url=BASE, transport=transport) as client:
        await run_agent(model, [governed(FORECAST, session_id=session_id, client=client, cost_usd="0.02")])

    (result,) = _results(model)
    assert result.content == "Sunny in Oslo (asked with [secret:weather_token])"
    assert [e["status"] for e in await governed_calls(api, session_id)] == ["ok", "ok"]
    assert await spent(api, session_id) == Decimal("0.02")


def test_governed_needs_a_client() -> None:
    with pytest.raises(TypeError, match="aclient="):
        governed(FORECAST, session_id="ses_x")
