"""Money in the SDK: exact `Decimal`s in results, exact decimal strings on the wire, user data untouched,
and the plain JSON back for MCP and the CLI."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from haldir import AsyncHaldirClient, HaldirClient
from haldir.client.money import plain, with_money
from haldir.mcp.backends import remote_backend
from haldir.mcp.gateway_backends import RemoteGateway
from tests.client.inprocess import AppTransport, blocking
from tests.conftest import Api

BASE = "http://haldir.test"
DETAILS = {"cost_usd": "1.50", "amount": "2", "nested": {"total_usd": "3.00"}, "price": 1.5, "note": "0.10"}


def _async(api: Api) -> AsyncHaldirClient:
    return AsyncHaldirClient(api_key=api.admin_key, base_url=BASE, transport=httpx.ASGITransport(app=api.app))


def _answering(body: object, seen: list[httpx.Request] | None = None) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handle)


def _exact(value: object, text: str) -> None:
    assert type(value) is Decimal
    assert str(value) == text  # Decimal("29.99") == Decimal("29.990") too: compare the digits
    assert f"{value:.2f}" == f"{Decimal(text):.2f}"


@pytest.mark.anyio
async def test_money_comes_back_as_exact_decimals(api: Api) -> None:
    async with _async(api) as h:
        payer = await h.create_session("payer", ["spend"], spend_limit=Decimal("100"))
        _exact(payer["spend_limit"], "100.00")
        authorized = await h.authorize_payment(payer["session_id"], Decimal("29.99"))
        _exact(authorized["amount"], "29.99")
        _exact(authorized["remaining_budget"], "70.01")
        payment = await h.get_payment(authorized["authorization_id"])
        _exact(payment["reported"], "0.00")
        assert payment["captured_amount"] is None

        logger = await h.create_session("logger", ["execute"], spend_limit="1")
        logged = await h.log_action(logger["session_id"], "search", "query", "0.000001")
        entry = await h.get_entry(logged["entry_id"])
        _exact(entry["record"]["cost_usd"], "0.000001")
        _exact(entry["record"]["charged_usd"], "0.000001")
        session = await h.get_session(logger["session_id"])
        _exact(session["spent"], "0.000001")
        _exact(session["remaining_budget"], "0.999999")
        spend = await h.spend(session_id=logger["session_id"])
        _exact(spend["total_usd"], "0.000001")
        assert spend["count"] == 1
        for sums in (spend["by_session"], spend["by_agent"], spend["by_tool"]):
            (amount,) = sums.values()
            _exact(amount, "0.000001")
        policy = await h.create_policy({"type": "spend_limit", "max_usd": "12.5"})
        _exact(policy["max_usd"], "12.50")


@pytest.mark.anyio
async def test_the_blocking_client_answers_money_as_exact_decimals_too(api: Api) -> None:
    def run() -> tuple[dict[str, Any], dict[str, Any]]:
        with HaldirClient(api_key=api.admin_key, base_url=BASE, transport=AppTransport(api.app)) as h:
            session = h.create_session("bot", ["spend"], spend_limit=50)
            authorized = h.authorize_payment(session["session_id"], 29.99)
            return authorized, h.get_spend(session_id=session["session_id"])

    authorized, spend = await blocking(run)
    _exact(authorized["amount"], "29.99")
    _exact(authorized["remaining_budget"], "20.01")
    _exact(spend["total_usd"], "29.99")


@pytest.mark.anyio
async def test_user_details_come_back_exactly_as_sent_even_with_money_names(api: Api) -> None:
    async with _async(api) as h:
        session = await h.create_session("bot", ["execute"])
        logged = await h.log_action(session["session_id"], "t", "a", 0, DETAILS)
        record = (await h.get_entry(logged["entry_id"]))["record"]
        (listed,) = (await h.get_audit_trail(session_id=session["session_id"]))["entries"]
    assert record["details"] == listed["details"] == DETAILS
    assert type(record["details"]["cost_usd"]) is str
    _exact(record["cost_usd"], "0.00")


def test_user_data_and_proxied_results_are_never_converted() -> None:
    opaque = {"amount": "5.00", "cost_usd": "1.50"}
    body = {
        "content": [{"type": "text", "text": "5.00", "amount": "5.00"}],
        "structuredContent": opaque,
        "structured_content": opaque,
        "isError": False,
        "_meta": opaque,
        "result": opaque,
        "arguments": opaque,
        "definition": {"inputSchema": {"properties": {"amount": {"default": "1.00"}}}},
        "pending_definition": opaque,
        "annotations": opaque,
        "inputSchema": opaque,
        "outputSchema": opaque,
    }
    assert with_money(body) == body


def test_only_decimal_strings_become_decimals() -> None:
    body: dict[str, Any] = {
        "amount": "abc",
        "cost_usd": "1e5",
        "spent": "NaN",
        "reported": 5,
        "total_usd": None,
        "max_usd": " 1.5",
        "threshold": "1_000",
        "captured_amount": "0.50",
        "charged_usd": "-2.00",
        "by_tool": {"search": "0.000001", "odd": 3},
        "session_id": "10.00",
    }
    converted = with_money(body)
    assert converted == {
        **body,
        "captured_amount": Decimal("0.50"),
        "charged_usd": Decimal("-2.00"),
        "by_tool": {"search": Decimal("0.000001"), "odd": 3},
    }
    assert type(converted["session_id"]) is str


@pytest.mark.anyio
async def test_money_inside_lists_and_records_is_converted_on_both_clients() -> None:
    page = {
        "entries": [{"record": {"cost_usd": "29.99", "details": {"cost_usd": "29.99"}}}],
        "next_cursor": None,
    }
    with HaldirClient(api_key="k", base_url=BASE, transport=_answering(page)) as sync:
        sync_entry = sync.get_entry("aud_x")
    async with AsyncHaldirClient(api_key="k", base_url=BASE, transport=_answering(page)) as aio:
        aio_entry = await aio.get_entry("aud_x")
    for entry in (sync_entry, aio_entry):
        (only,) = entry["entries"]
        _exact(only["record"]["cost_usd"], "29.99")
        assert only["record"]["details"] == {"cost_usd": "29.99"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("given_amount", "sent"),
    [
        (Decimal("0.50"), "0.50"),
        (Decimal("1E+2"), "100"),
        (29.99, "29.99"),
        (10.0, "10.0"),
        (1e-06, "0.000001"),
        (5, "5"),
        ("7.25", "7.25"),
    ],
)
async def test_amounts_are_sent_as_exact_decimal_strings(
    given_amount: Decimal | float | str, sent: str
) -> None:
    seen: list[httpx.Request] = []
    answer = {"authorization_id": "pay_x", "amount": sent}
    with HaldirClient(api_key="k", base_url=BASE, transport=_answering(answer, seen)) as sync:
        sync.authorize_payment("ses_x", given_amount)
        sync.create_session("bot", ["spend"], None, given_amount)
    async with AsyncHaldirClient(api_key="k", base_url=BASE, transport=_answering(answer, seen)) as aio:
        await aio.log_action("ses_x", "t", "a", given_amount)
        await aio.capture_payment("pay_x", amount=given_amount)
    bodies = [json.loads(request.content) for request in seen]
    assert [bodies[0]["amount"], bodies[1]["spend_limit"], bodies[2]["cost_usd"], bodies[3]["amount"]] == [
        sent
    ] * 4


@pytest.mark.anyio
async def test_a_decimal_anywhere_in_a_request_body_is_sent_as_its_string(api: Api) -> None:
    seen: list[httpx.Request] = []
    with HaldirClient(api_key="k", base_url=BASE, transport=_answering({}, seen)) as sync:
        sync.log_action("ses_x", "t", "a", details={"quote": Decimal("0.10"), "items": [Decimal("1.000")]})
        sync.create_policy({"type": "tool_cost", "tool": "search", "cost_usd": Decimal("0.25")})
        sync.request("POST", "/v1/anything", json=[Decimal("2.50")])
    assert json.loads(seen[0].content)["details"] == {"quote": "0.10", "items": ["1.000"]}
    assert json.loads(seen[1].content)["cost_usd"] == "0.25"
    assert json.loads(seen[2].content) == ["2.50"]

    async with _async(api) as h:
        session = await h.create_session("bot", ["execute"], spend_limit=Decimal("5"))
        spent = await h.log_action(
            session["session_id"], "t", "a", Decimal("0.10"), {"quote": Decimal("0.10")}
        )
        record = (await h.get_entry(spent["entry_id"]))["record"]
        assert record["details"] == {"quote": "0.10"}
        policy = await h.create_policy({"type": "tool_cost", "tool": "search", "cost_usd": Decimal("0.25")})
        _exact(policy["cost_usd"], "0.25")
        # A result fed back into a request: its Decimals go out as the strings they came in as.
        again = await h.request(
            "POST", "/v1/proxy/policies", json={k: policy[k] for k in ("type", "tool", "cost_usd")}
        )
        _exact(again["cost_usd"], "0.25")


@given(st.from_regex(r"-?(0|[1-9][0-9]{0,12})(\.[0-9]{1,8})?", fullmatch=True))
def test_plain_gives_back_the_exact_decimal_string_the_server_sent(text: str) -> None:
    body = {"amount": text, "by_agent": {"bot": text}, "entries": [{"record": {"cost_usd": text}}]}
    converted = with_money(body)
    assert type(converted["amount"]) is Decimal
    assert plain(converted) == body
    assert json.dumps(plain(converted)) == json.dumps(body)


@pytest.mark.anyio
async def test_the_mcp_remote_backends_answer_the_rest_bodies_as_plain_json(api: Api) -> None:
    async with _async(api) as h:
        session = await h.create_session("bot", ["execute", "spend"], spend_limit="10")
        session_id = session["session_id"]
        await h.log_action(session_id, "search", "query", "0.50")
        backend = remote_backend(h)
        gateway = RemoteGateway(h, session_id)
        assert await backend.get_session(session_id) == await _rest(api, f"/v1/sessions/{session_id}")
        spend = await _rest(api, f"/v1/audit/spend?session_id={session_id}")
        assert await backend.spend(session_id=session_id) == spend
        assert await gateway.spend(session_id=session_id) == spend
        assert spend["by_tool"] == {"search": "0.50"}
        entries = await _rest(api, f"/v1/audit?session_id={session_id}")
        assert await backend.list_entries(session_id=session_id) == entries
        assert entries["entries"][0]["cost_usd"] == "0.50"
        authorized = await backend.authorize_payment(session_id=session_id, amount=Decimal("1.25"))
        assert (authorized["amount"], authorized["remaining_budget"]) == ("1.25", "8.25")
        latest = await gateway.list_entries(session_id=session_id, limit=1)
        assert latest["entries"][0]["charged_usd"] == "1.25"
        json.dumps([authorized, latest])  # plain JSON: no Decimal left anywhere


async def _rest(api: Api, path: str) -> Any:
    response = await api.client.get(path, headers=api.auth(api.admin_key))
    assert response.status_code == 200, response.text
    return response.json()
