"""The SDK: the async client against the app in-process, the sync one against a real server process."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from haldir import (
    AsyncHaldirClient,
    HaldirClient,
    HaldirError,
    InsufficientScope,
    InvalidApiKey,
    InvalidRequest,
    NotFound,
    ServerUnavailable,
    Verifier,
    parse_checkpoint,
    verify_consistency,
    verify_inclusion,
)
from tests.conftest import Api
from tests.e2e.server import environment, free_port, haldir, serve

BASE = "http://haldir.test"


def _client(api: Api, key: str | None = None) -> AsyncHaldirClient:
    return AsyncHaldirClient(
        api_key=key or api.admin_key, base_url=BASE, transport=httpx.ASGITransport(app=api.app)
    )


def _answering(status: int, body: object = None, *, text: str = "") -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, text=text)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handle)


@pytest.mark.anyio
async def test_the_async_client_speaks_the_governor_method_names(api: Api) -> None:
    async with _client(api) as client:
        session = await client.create_session(agent_id="bot", scopes=["execute"], spend_limit="25", ttl=600)
        session_id = session["session_id"]
        assert session["spend_limit"] == Decimal("25.00")
        assert (await client.get_session(session_id))["is_valid"] is True
        assert [s["session_id"] for s in (await client.list_sessions(agent_id="bot"))["sessions"]] == [
            session_id
        ]
        assert (await client.check_permission(session_id, "execute:refund"))["allowed"] is True

        logged = [
            await client.log_action(session_id=session_id, tool="stripe", action="charge") for _ in range(5)
        ]
        await client.log_action(session_id=session_id, tool="github", action="push", cost_usd="1.50")
        entry = await client.get_entry(logged[0]["entry_id"])
        assert entry["record"]["tool"] == "stripe"
        page = await client.list_entries(tool="stripe", limit=2)
        assert [e["entry_id"] for e in page["entries"]] == [logged[4]["entry_id"], logged[3]["entry_id"]]
        in_order = [e["leaf_index"] async for e in client.iter_entries(order="asc", page_size=2)]
        assert in_order == [0, 1, 2, 3, 4, 5]

        head = await client.tree_head()
        key = await client.log_key()
        checkpoint = parse_checkpoint(await client.checkpoint(), Verifier.from_vkey(key["vkey"]))
        assert (
            (checkpoint.origin, checkpoint.tree_size)
            == (key["origin"], head["tree_size"])
            == (
                "haldir.local/acme",
                6,
            )
        )
        proof = await client.inclusion_proof(logged[2]["entry_id"])
        verify_inclusion(
            leaf_hash=bytes.fromhex(proof["leaf_hash"]),
            index=proof["leaf_index"],
            size=proof["tree_size"],
            proof=[bytes.fromhex(p) for p in proof["proof"]],
            root=checkpoint.root_hash,
        )
        link = await client.consistency_proof(first=3, second=6)
        verify_consistency(
            first=3,
            second=6,
            first_root=bytes.fromhex(link["first_root"]),
            second_root=checkpoint.root_hash,
            proof=[bytes.fromhex(p) for p in link["proof"]],
        )
        assert await client.verify_log() == {"ok": True, "tree_size": 6, "first_bad": None}
        assert (await client.spend(session_id=session_id))["by_tool"] == {
            "stripe": Decimal("0.00"),
            "github": Decimal("1.50"),
        }
        assert (await client.revoke_session(session_id))["is_valid"] is False


@pytest.mark.anyio
async def test_error_responses_come_back_as_their_classes_with_the_message(api: Api) -> None:
    reader = await api.key("sessions:read")
    async with _client(api) as admin, _client(api, reader) as client:
        with pytest.raises(NotFound) as missing:
            await admin.get_session("ses_nope")
        assert "ses_nope" in missing.value.message
        assert missing.value.details["request_id"]
        with pytest.raises(InsufficientScope) as denied:
            await client.create_session(agent_id="bot", scopes=["read"])
        assert "sessions:write" in denied.value.message
        with pytest.raises(InvalidRequest) as invalid:
            await admin.consistency_proof(first=0, second=1)
        assert invalid.value.details["problems"]
        with pytest.raises(NotFound):
            await admin.get_entry("../../v1/sessions")
    async with _client(api, "hld_" + "x" * 48) as stranger:
        with pytest.raises(InvalidApiKey):
            await stranger.tree_head()


@pytest.mark.anyio
async def test_an_unknown_error_code_is_a_haldir_error_with_the_status() -> None:
    body = {"error": "slow down", "code": "rate_limited_someday", "request_id": "req_1"}
    async with AsyncHaldirClient(api_key="hld_k", base_url=BASE, transport=_answering(429, body)) as client:
        with pytest.raises(HaldirError) as caught:
            await client.tree_head()
    assert type(caught.value) is HaldirError
    assert caught.value.message == "slow down"
    assert caught.value.details == {"status": 429, "code": "rate_limited_someday", "request_id": "req_1"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "error"), [(502, ServerUnavailable), (500, HaldirError), (200, HaldirError)]
)
async def test_a_response_without_the_envelope_is_a_haldir_error(
    status: int, error: type[HaldirError]
) -> None:
    async with AsyncHaldirClient(
        api_key="hld_k", base_url=BASE, transport=_answering(status, text="<html>")
    ) as client:
        with pytest.raises(error):
            await client.verify_log()


@pytest.mark.anyio
async def test_a_failed_connection_is_server_unavailable_not_an_httpx_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with AsyncHaldirClient(
        api_key="hld_k", base_url=BASE, transport=httpx.MockTransport(refuse)
    ) as client:
        with pytest.raises(ServerUnavailable, match=r"cannot reach the Haldir server at http://haldir\.test"):
            await client.log_key()
    with (
        HaldirClient(api_key="hld_k", base_url=f"http://127.0.0.1:{free_port()}", timeout=5) as sync,
        pytest.raises(ServerUnavailable) as caught,
    ):
        sync.tree_head()
    assert caught.value.exit_code == 7


def test_url_and_key_default_to_the_client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"tree_size": 0})

    monkeypatch.setenv("HALDIR_URL", "http://haldir.example:9000/")
    monkeypatch.setenv("HALDIR_API_KEY", "hld_from_env")
    with HaldirClient(transport=httpx.MockTransport(record)) as client:
        assert client.url == "http://haldir.example:9000"
        client.list_entries(flagged=False, since="2026-04-05T19:00:00Z", order="asc")
    with HaldirClient(api_key="hld_given", transport=httpx.MockTransport(record)) as client:
        client.spend(agent_id="a b")
    first, second = seen
    assert str(first.url).startswith("http://haldir.example:9000/v1/audit?")
    assert dict(first.url.params) == {
        "flagged": "false",
        "since": "2026-04-05T19:00:00Z",
        "limit": "50",
        "order": "asc",
    }
    assert first.headers["Authorization"] == "Bearer hld_from_env"
    assert second.headers["Authorization"] == "Bearer hld_given"
    assert second.url.params["agent_id"] == "a b"


@pytest.mark.e2e
def test_the_sync_client_against_a_real_server(tmp_path: Path) -> None:
    env = environment(tmp_path)
    assert haldir("migrate", "up", env=env).returncode == 0
    with (
        serve(env, tmp_path) as server,
        HaldirClient(api_key=server.printed_keys()[0], base_url=server.url) as client,
    ):
        session = client.create_session(
            agent_id="bot", scopes=["read"], spend_limit="5", idempotency_key="once"
        )
        again = client.create_session(
            agent_id="bot", scopes=["read"], spend_limit="5", idempotency_key="once"
        )
        assert again["session_id"] == session["session_id"]
        for cost in ("0.10", "0.20", "0.30"):
            client.log_action(session_id=session["session_id"], tool="search", action="query", cost_usd=cost)
        assert [e["cost_usd"] for e in client.iter_entries(page_size=2)] == [
            Decimal("0.30"),
            Decimal("0.20"),
            Decimal("0.10"),
        ]
        assert client.spend()["total_usd"] == Decimal("0.60")
        assert client.tree_head()["tree_size"] == 3
        with pytest.raises(NotFound):
            client.revoke_session("ses_missing")
