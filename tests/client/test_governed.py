"""Governed calls of local tools through the SDK: `begin_tool_call` / `finish_tool_call` on both clients,
and `governed_call` / `agoverned_call` running a tool between them, against the app in-process."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal

from haldir import ApprovalRequired, AsyncHaldirClient, BudgetExceeded, Conflict, HaldirClient, ToolDenied
from haldir import governed as governed_module
from haldir.governed import ScrubbedToolError, agoverned_call, governed_call
from tests.client.inprocess import AppTransport, blocking
from tests.conftest import Api

pytestmark = pytest.mark.anyio
BASE = "http://haldir.test"
TOKEN = "tok-7b1e55"


def _aclient(api: Api) -> AsyncHaldirClient:
    return AsyncHaldirClient(api_key=api.admin_key, base_url=BASE, transport=httpx.ASGITransport(app=api.app))


def _client(api: Api) -> HaldirClient:
    return HaldirClient(api_key=api.admin_key, base_url=BASE, transport=AppTransport(api.app))


async def _setup(client: AsyncHaldirClient, *, limit: str = "5") -> str:
    await client.store_secret("weather_token", TOKEN, "read")
    session = await client.create_session("weather-bot", ["execute", "read"], 600, limit)
    return str(session["session_id"])


async def _trail(client: AsyncHaldirClient, session_id: str) -> list[dict[str, Any]]:
    page = await client.list_entries(session_id=session_id, limit=100)
    return sorted(page["entries"], key=lambda entry: entry["leaf_index"])


async def test_both_clients_begin_and_finish_a_local_call_with_money_as_decimal(api: Api) -> None:
    async with _aclient(api) as client:
        session_id = await _setup(client)
        begun = await client.begin_tool_call(session_id, "forecast", {"city": "Oslo"}, cost_usd="0.05")
        finished = await client.finish_tool_call(begun["call_id"], latency_ms=3)

        def sync_call() -> tuple[dict[str, Any], dict[str, Any]]:
            with _client(api) as sync:
                again = sync.begin_tool_call(
                    session_id, "forecast", {"city": "Bergen"}, cost_usd=Decimal("1")
                )
                return again, sync.finish_tool_call(again["call_id"], status="error", error="timeout")

        sync_begun, sync_finished = await blocking(sync_call)

    assert (begun["cost_usd"], finished["charged_usd"]) == (Decimal("0.05"), Decimal("0.05"))
    assert (sync_begun["cost_usd"], sync_finished["charged_usd"]) == (Decimal("1.00"), Decimal("0.00"))
    assert (finished["status"], sync_finished["status"]) == ("ok", "error")


async def test_governed_call_runs_the_tool_with_secrets_and_scrubs_them_from_its_result(api: Api) -> None:
    seen: list[dict[str, Any]] = []

    async def forecast(arguments: dict[str, Any]) -> dict[str, Any]:
        seen.append(arguments)
        return {"city": arguments["city"], "sky": "clear", "debug": f"called with {arguments['token']}"}

    async with _aclient(api) as client:
        session_id = await _setup(client)
        result = await agoverned_call(
            client,
            session_id=session_id,
            tool="forecast",
            arguments={"city": "Oslo", "token": "{{secret:weather_token}}"},
            run=forecast,
            cost_usd="0.02",
        )
        trail = await _trail(client, session_id)

    assert seen == [{"city": "Oslo", "token": TOKEN}]
    assert result == {"city": "Oslo", "sky": "clear", "debug": "called with [secret:weather_token]"}
    assert [(e["action"], e["status"]) for e in trail] == [
        ("secret.release", "ok"),
        ("tools/call", "ok"),
        ("tools/call", "ok"),
    ]
    assert trail[-1]["details"]["phase"] == "finish"
    assert Decimal(trail[1]["charged_usd"]) == Decimal("0.02")


async def test_a_tool_that_raises_is_recorded_as_an_error_its_cost_released_and_the_error_raised(
    api: Api,
) -> None:
    def broken(arguments: dict[str, Any]) -> str:
        raise ValueError(f"upstream refused token {arguments['token']}")

    async with _aclient(api) as client:
        session_id = await _setup(client)

        def run() -> None:
            with _client(api) as sync:
                governed_call(
                    sync,
                    session_id=session_id,
                    tool="forecast",
                    arguments={"token": "{{secret:weather_token}}"},
                    run=broken,
                    cost_usd="0.50",
                )

        with pytest.raises(ScrubbedToolError, match=r"token \[secret:weather_token\]$") as raised:
            await blocking(run)
        trail = await _trail(client, session_id)
        session = await client.get_session(session_id)

    finish = trail[-1]
    assert (finish["status"], finish["details"]["phase"]) == ("error", "finish")
    assert finish["details"]["error"] == "ValueError: upstream refused token [secret:weather_token]"
    assert session["spent"] == Decimal("0")
    assert isinstance(raised.value.__cause__, ValueError)  # the tool's own exception, for the program


async def test_a_refusal_raises_haldirs_error_and_never_runs_the_tool(api: Api) -> None:
    ran: list[Any] = []

    async def tool(arguments: dict[str, Any]) -> str:
        ran.append(arguments)
        return "ran"

    async with _aclient(api) as client:
        session_id = await _setup(client, limit="0.10")
        await client.create_policy({"type": "deny", "tools": ["drop_table"]})
        await client.create_approval_rule({"type": "tool", "tool": "send_*"})
        with pytest.raises(ToolDenied) as denied:
            await agoverned_call(client, session_id=session_id, tool="drop_table", arguments={}, run=tool)
        with pytest.raises(BudgetExceeded):
            await agoverned_call(
                client, session_id=session_id, tool="forecast", arguments={}, run=tool, cost_usd="1"
            )
        with pytest.raises(ApprovalRequired) as held:
            await agoverned_call(client, session_id=session_id, tool="send_mail", arguments={}, run=tool)

    assert ran == []
    assert "deny list" in str(denied.value)
    assert held.value.details["approval_id"].startswith("apr_")


async def test_finishing_a_call_twice_raises_conflict(api: Api) -> None:
    async with _aclient(api) as client:
        session_id = await _setup(client)
        begun = await client.begin_tool_call(session_id, "forecast")
        await client.finish_tool_call(begun["call_id"])
        with pytest.raises(Conflict):
            await client.finish_tool_call(begun["call_id"])


async def _add(arguments: dict[str, Any]) -> int:
    return int(arguments["a"]) + int(arguments["b"])


async def test_an_async_client_finishing_in_the_background_records_every_outcome_by_flush(api: Api) -> None:
    async def broken(arguments: dict[str, Any]) -> int:
        raise ValueError("no")

    async with _aclient(api) as plain:
        session_id = await _setup(plain)
        client = AsyncHaldirClient(
            api_key=api.admin_key,
            base_url=BASE,
            transport=httpx.ASGITransport(app=api.app),
            background_finish=True,
        )
        sums = [
            await agoverned_call(
                client,
                session_id=session_id,
                tool="add",
                arguments={"a": i, "b": 1},
                run=_add,
                cost_usd="0.01",
            )
            for i in range(5)
        ]
        with pytest.raises(ValueError, match="no"):
            await agoverned_call(client, session_id=session_id, tool="add", arguments={}, run=broken)
        await client.flush()
        trail = await _trail(plain, session_id)
        last = await agoverned_call(
            client, session_id=session_id, tool="add", arguments={"a": 9, "b": 9}, run=_add, cost_usd="0.01"
        )
        await client.aclose()  # flushes the last outcome
        closed = await _trail(plain, session_id)
        session = await plain.get_session(session_id)

    assert (sums, last) == ([1, 2, 3, 4, 5], 18)
    finishes = [e for e in trail if e["details"].get("phase") == "finish"]
    assert [e["status"] for e in finishes] == ["ok"] * 5 + ["error"]
    assert len([e for e in closed if e["details"].get("phase") == "finish"]) == 7
    assert session["spent"] == Decimal("0.06")


async def test_a_blocking_client_finishing_in_the_background_records_every_outcome_by_close(api: Api) -> None:
    async with _aclient(api) as plain, BlockingPortal() as portal:
        session_id = await _setup(plain)
        client = HaldirClient(
            api_key=api.admin_key,
            base_url=BASE,
            transport=AppTransport(api.app, portal=portal),
            background_finish=True,
        )

        def calls() -> list[int]:
            def add(arguments: dict[str, Any]) -> int:
                return int(arguments["a"]) + int(arguments["b"])

            sums = [
                governed_call(
                    client,
                    session_id=session_id,
                    tool="add",
                    arguments={"a": i, "b": 1},
                    run=add,
                    cost_usd="0.01",
                )
                for i in range(8)
            ]
            assert client.flush(timeout=30)
            client.close()
            return sums

        sums = await blocking(calls)
        trail = await _trail(plain, session_id)

    assert sums == list(range(1, 9))
    finishes = [e for e in trail if e["details"].get("phase") == "finish"]
    assert [e["status"] for e in finishes] == ["ok"] * 8


async def test_a_background_finish_that_fails_is_logged_not_raised(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    async with _aclient(api) as plain:
        session_id = await _setup(plain)
        begun = await plain.begin_tool_call(session_id, "add")
        await plain.finish_tool_call(begun["call_id"])
        client = AsyncHaldirClient(
            api_key=api.admin_key,
            base_url=BASE,
            transport=httpx.ASGITransport(app=api.app),
            background_finish=True,
        )
        with caplog.at_level(logging.WARNING, logger="haldir.governed"):
            # the call was finished already: the background finish meets a Conflict
            client.finish_tool_call_soon(begun["call_id"]).add_done_callback(
                lambda done: governed_module._sent(begun, done)
            )
            await client.aclose()

    assert f"could not record the outcome of call {begun['call_id']}" in caplog.text
