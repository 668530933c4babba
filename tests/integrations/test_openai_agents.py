"""OpenAI Agents SDK: a real `Agent` and `Runner.run`, with the SDK's scripted model (`agents.testing`)
making the tool calls, against the app in-process; governed tools (allowed, denied, over budget, held for
approval, strict, secrets, a tool that raises) and the tool guardrails."""

from __future__ import annotations

import importlib
import sys
from decimal import Decimal
from typing import Any

import pytest
from agents import (
    Agent,
    FunctionTool,
    Runner,
    RunResult,
    ToolCallOutputItem,
    function_tool,
    set_tracing_disabled,
)
from agents.testing import ScriptedModel, assistant_message, function_call

from haldir import AsyncHaldirClient, ToolDenied
from haldir.integrations.openai_agents import HaldirGuardrails, HaldirToolError, governed
from tests.conftest import Api
from tests.integrations.inprocess import BASE, TOKEN, aclient, governed_calls, spent, weather_session

pytestmark = pytest.mark.anyio
RAN: list[dict[str, Any]] = []


@function_tool
def forecast(city: str, token: str) -> str:
    """The weather forecast for a city."""
    RAN.append({"tool": "forecast", "city": city, "token": token})
    return f"Sunny in {city} (asked with {token or 'no token'})"


@function_tool
def delete_file(path: str) -> str:
    """Delete a file."""
    RAN.append({"tool": "delete_file", "path": path})
    return f"deleted {path}"


@function_tool
def send_email(to: str, body: str) -> str:
    """Send an email."""
    RAN.append({"tool": "send_email", "to": to})
    return f"sent to {to}"


@function_tool
def flaky(city: str) -> str:
    """A tool that fails."""
    raise RuntimeError(f"no data for {city}")


@pytest.fixture(autouse=True)
def _offline() -> None:
    set_tracing_disabled(True)  # the network is closed; the SDK would export traces to OpenAI
    RAN.clear()


def _script(*calls: tuple[str, dict[str, Any]]) -> ScriptedModel:
    """A model that makes each call in turn, then answers."""
    turns = [[function_call(name, args, call_id=f"call-{i}")] for i, (name, args) in enumerate(calls)]
    return ScriptedModel([*turns, [assistant_message("All done.")]])


async def _run(model: ScriptedModel, tools: list[FunctionTool]) -> RunResult:
    return await Runner.run(Agent(name="weather-bot", model=model, tools=list(tools)), "Help me.")


def _outputs(result: RunResult) -> list[Any]:
    return [item.output for item in result.new_items if isinstance(item, ToolCallOutputItem)]


async def _admin(api: Api, path: str, body: Any) -> None:
    async with aclient(api) as client:
        await client.request("POST", path, json=body)


def test_without_the_sdk_the_integration_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "agents", None)  # `import agents` raises ImportError
    monkeypatch.delitem(sys.modules, "haldir.integrations.openai_agents")

    with pytest.raises(
        ImportError, match=r"needs openai-agents: pip install 'haldir-client\[openai-agents\]'"
    ):
        importlib.import_module("haldir.integrations.openai_agents")


def test_a_governed_tool_keeps_the_tools_name_description_and_parameters() -> None:
    client = AsyncHaldirClient(api_key="hld_x", base_url=BASE)

    wrapped = governed(forecast, session_id="ses_x", aclient=client)

    assert (wrapped.name, wrapped.description) == ("forecast", forecast.description)
    assert wrapped.params_json_schema == forecast.params_json_schema
    assert wrapped.strict_json_schema is forecast.strict_json_schema


async def test_an_allowed_call_runs_and_is_recorded_with_its_cost(api: Api) -> None:
    session_id = await weather_session(api)
    model = _script(("forecast", {"city": "Oslo", "token": ""}))

    async with aclient(api) as client:
        result = await _run(
            model, [governed(forecast, session_id=session_id, aclient=client, cost_usd="0.05")]
        )

    assert _outputs(result) == ["Sunny in Oslo (asked with no token)"]
    assert result.final_output == "All done."
    assert [tool.name for tool in model.calls[0].tools] == ["forecast"]
    calls = await governed_calls(api, session_id)
    assert [(e["tool"], e["details"]["phase"], e["status"], Decimal(e["charged_usd"])) for e in calls] == [
        ("forecast", "admit", "ok", Decimal("0.05")),
        ("forecast", "finish", "ok", Decimal("0")),
    ]
    assert await spent(api, session_id) == Decimal("0.05")


async def test_a_denied_call_is_an_output_the_model_reads_and_a_denied_entry(api: Api) -> None:
    await _admin(api, "/v1/proxy/policies", {"type": "deny", "tools": ["delete_*"]})
    session_id = await weather_session(api)
    model = _script(("delete_file", {"path": "/etc/passwd"}))

    async with aclient(api) as client:
        result = await _run(model, [governed(delete_file, session_id=session_id, aclient=client)])

    (output,) = _outputs(result)
    assert output.startswith("Haldir refused this call (tool_denied): ")
    assert "deny list" in output
    assert output in str(model.last_call.input if model.last_call else None)  # the model read it
    (item,) = [item for item in result.new_items if isinstance(item, ToolCallOutputItem)]
    assert item.custom_data is not None  # a program can tell why
    assert item.custom_data["haldir"]["code"] == "tool_denied"
    assert RAN == []
    calls = await governed_calls(api, session_id)
    assert [(e["tool"], e["status"], e["flagged"]) for e in calls] == [("delete_file", "denied", True)]


async def test_a_call_over_the_budget_is_refused_and_reserves_nothing(api: Api) -> None:
    session_id = await weather_session(api, limit="0.10")

    async with aclient(api) as client:
        wrapped = governed(forecast, session_id=session_id, aclient=client, cost_usd="0.25")
        result = await _run(_script(("forecast", {"city": "Oslo", "token": ""})), [wrapped])

    assert "(budget_exceeded)" in _outputs(result)[0]
    assert RAN == []
    assert [e["status"] for e in await governed_calls(api, session_id)] == ["denied"]
    assert await spent(api, session_id) == Decimal("0")


async def test_a_held_call_shows_the_approval_id_and_runs_once_a_person_approves(api: Api) -> None:
    await _admin(api, "/v1/approvals/rules", {"type": "tool", "tool": "send_*"})
    session_id = await weather_session(api)
    email = {"to": "ceo@example.com", "body": "hi"}

    async with aclient(api) as client:
        tools = [governed(send_email, session_id=session_id, aclient=client)]
        held = await _run(_script(("send_email", email)), tools)
        (output,) = _outputs(held)
        approval_id = next(word for word in output.split() if word.startswith("apr_"))
        assert "(approval_required)" in output
        (item,) = [item for item in held.new_items if isinstance(item, ToolCallOutputItem)]
        assert item.custom_data is not None
        assert item.custom_data["haldir"]["approval_id"] == approval_id
        assert RAN == []
        approver = await api.key("approvals:write")  # never the key that asked
        decided = await api.client.post(f"/v1/approvals/{approval_id}/approve", headers=api.auth(approver))
        assert decided.status_code == 200, decided.text
        again = await _run(_script(("send_email", email)), tools)

    assert _outputs(again) == ["sent to ceo@example.com"]
    assert RAN == [{"tool": "send_email", "to": "ceo@example.com"}]


async def test_strict_mode_raises_haldirs_error_out_of_the_run(api: Api) -> None:
    await _admin(api, "/v1/proxy/policies", {"type": "deny", "tools": ["delete_file"]})
    session_id = await weather_session(api)

    async with aclient(api) as client:
        wrapped = governed(delete_file, session_id=session_id, aclient=client, strict=True)
        with pytest.raises(HaldirToolError, match=r"\(tool_denied\)") as raised:
            await _run(_script(("delete_file", {"path": "/tmp/x"})), [wrapped])

    assert isinstance(raised.value.error, ToolDenied)
    assert raised.value.code == "tool_denied"
    assert RAN == []


async def test_a_secret_is_injected_by_name_and_never_reaches_the_model(api: Api) -> None:
    session_id = await weather_session(api)
    model = _script(("forecast", {"city": "Oslo", "token": "{{secret:weather_token}}"}))

    async with aclient(api) as client:
        result = await _run(model, [governed(forecast, session_id=session_id, aclient=client)])

    assert RAN == [{"tool": "forecast", "city": "Oslo", "token": TOKEN}]
    assert _outputs(result) == ["Sunny in Oslo (asked with [secret:weather_token])"]
    assert TOKEN not in str([call.input for call in model.calls])
    assert TOKEN not in str(await governed_calls(api, session_id))


async def test_a_tool_whose_input_is_not_a_json_object_gets_it_as_given_with_secrets_injected(
    api: Api,
) -> None:
    async def echo(ctx: Any, raw: str) -> str:
        RAN.append({"tool": "echo", "raw": raw})
        return f"echo {raw}"

    schema = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
    echo_tool = FunctionTool(name="echo", description="Echo.", params_json_schema=schema, on_invoke_tool=echo)
    session_id = await weather_session(api)
    model = ScriptedModel(
        [
            [function_call("echo", "plain {{secret:weather_token}}", call_id="call-0")],
            [assistant_message("All done.")],
        ]
    )

    async with aclient(api) as client:
        result = await _run(model, [governed(echo_tool, session_id=session_id, aclient=client)])

    assert [ran["raw"] for ran in RAN] == [f"plain {TOKEN}"]
    assert _outputs(result) == ["echo plain [secret:weather_token]"]
    assert [e["status"] for e in await governed_calls(api, session_id)] == ["ok", "ok"]


async def test_a_tool_that_raises_is_recorded_as_an_error_and_handled_as_the_sdk_does(api: Api) -> None:
    session_id = await weather_session(api)

    async with aclient(api) as client:
        wrapped = governed(flaky, session_id=session_id, aclient=client, cost_usd="0.30")
        result = await _run(_script(("flaky", {"city": "Oslo"})), [wrapped])

    assert _outputs(result) == ["An error occurred while running the tool. Please try again."]
    finish = (await governed_calls(api, session_id))[-1]
    assert (finish["status"], finish["details"]["error"]) == ("error", "RuntimeError: no data for Oslo")
    assert await spent(api, session_id) == Decimal("0")


def _guarded(guard: HaldirGuardrails, tool: FunctionTool) -> FunctionTool:
    """`tool` as `@function_tool(tool_input_guardrails=…, tool_output_guardrails=…, …)` would make it."""
    return function_tool(
        tool.__wrapped__,
        tool_input_guardrails=[guard.input],
        tool_output_guardrails=[guard.output],
        failure_error_function=guard.failure_error_function,
    )


async def test_guardrails_govern_a_tool_without_wrapping_it(api: Api) -> None:
    await _admin(api, "/v1/proxy/policies", {"type": "deny", "tools": ["delete_*"]})
    session_id = await weather_session(api)
    model = _script(("forecast", {"city": "Oslo", "token": ""}), ("delete_file", {"path": "/etc"}))

    async with aclient(api) as client:
        guard = HaldirGuardrails(client, session_id=session_id, cost_usd="0.05")
        result = await _run(model, [_guarded(guard, forecast), _guarded(guard, delete_file)])

    sunny, refused = _outputs(result)
    assert sunny == "Sunny in Oslo (asked with no token)"
    assert refused.startswith("Haldir refused this call (tool_denied): ")
    assert [t["tool"] for t in RAN] == ["forecast"]
    rejected = [r.output for r in result.tool_input_guardrail_results if r.output.behavior["type"] != "allow"]
    assert [type(output.output_info) for output in rejected] == [ToolDenied]  # a program can tell why
    calls = await governed_calls(api, session_id)
    assert [(e["tool"], e["details"].get("phase"), e["status"]) for e in calls] == [
        ("forecast", "admit", "ok"),
        ("forecast", "finish", "ok"),
        ("delete_file", None, "denied"),
    ]
    assert await spent(api, session_id) == Decimal("0.05")


async def test_guardrails_record_a_tool_that_raises_as_an_error(api: Api) -> None:
    session_id = await weather_session(api)

    async with aclient(api) as client:
        guard = HaldirGuardrails(client, session_id=session_id, cost_usd="0.30")
        result = await _run(_script(("flaky", {"city": "Oslo"})), [_guarded(guard, flaky)])

    assert _outputs(result) == ["An error occurred while running the tool. Please try again."]
    finish = (await governed_calls(api, session_id))[-1]
    assert (finish["status"], finish["details"]["error"]) == ("error", "RuntimeError: no data for Oslo")
    assert await spent(api, session_id) == Decimal("0")


async def test_guardrails_reject_a_secret_reference_they_cannot_inject(api: Api) -> None:
    session_id = await weather_session(api)
    model = _script(("forecast", {"city": "Oslo", "token": "{{secret:weather_token}}"}))

    async with aclient(api) as client:
        result = await _run(model, [_guarded(HaldirGuardrails(client, session_id=session_id), forecast)])

    assert "cannot inject secrets through a tool guardrail" in _outputs(result)[0]
    assert RAN == []
    assert await governed_calls(api, session_id) == []


async def test_strict_guardrails_raise_haldirs_error_out_of_the_run(api: Api) -> None:
    await _admin(api, "/v1/proxy/policies", {"type": "deny", "tools": ["delete_file"]})
    session_id = await weather_session(api)

    async with aclient(api) as client:
        guard = HaldirGuardrails(client, session_id=session_id, strict=True)
        with pytest.raises(HaldirToolError) as raised:
            await _run(_script(("delete_file", {"path": "/tmp/x"})), [_guarded(guard, delete_file)])

    assert isinstance(raised.value.error, ToolDenied)
    assert RAN == []
