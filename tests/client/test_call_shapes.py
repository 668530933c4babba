"""The SDK's calls as the seeds print them, on both clients: positional and keyword arguments, the
environment's defaults, `url=` as the older name of `base_url`, `request` / `_request`,
`get_audit_trail` and `get_spend`."""

from __future__ import annotations

import inspect
import json
from decimal import Decimal

import httpx
import pytest

from haldir import ApprovalRequired, AsyncHaldirClient, HaldirClient, NotFound
from tests.client.inprocess import AppTransport, blocking
from tests.conftest import Api

BASE = "http://haldir.test"

# Each method's positional-or-keyword parameters, then its keyword-only ones.
SHAPES = {
    "__init__": (["api_key", "base_url"], ["url", "timeout", "transport", "background_finish"]),
    "create_session": (["agent_id", "scopes", "ttl", "spend_limit"], ["idempotency_key"]),
    "store_secret": (["name", "value", "scope_required"], ["idempotency_key"]),
    "get_secret": (["name", "session_id"], ["version"]),
    "authorize_payment": (["session_id", "amount", "currency", "description"], ["idempotency_key"]),
    "log_action": (
        ["session_id", "tool", "action", "cost_usd", "details"],
        ["status", "authorization_id"],
    ),
    "check_permission": (["session_id", "scope"], []),
    "revoke_session": (["session_id"], []),
    "request": (["method", "path", "json", "params"], []),
}


def _sync(api: Api) -> HaldirClient:
    return HaldirClient(api_key=api.admin_key, base_url=BASE, transport=AppTransport(api.app))


def _async(api: Api) -> AsyncHaldirClient:
    return AsyncHaldirClient(api_key=api.admin_key, base_url=BASE, transport=httpx.ASGITransport(app=api.app))


def _recording(seen: list[httpx.Request], body: object = None, status: int = 200) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status) if body is None else httpx.Response(status, json=body)

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("client", [HaldirClient, AsyncHaldirClient])
@pytest.mark.parametrize("method", sorted(SHAPES))
def test_positional_parameters_are_where_the_seeds_put_them(
    client: type[HaldirClient | AsyncHaldirClient], method: str
) -> None:
    parameters = list(inspect.signature(getattr(client, method)).parameters.values())[1:]
    positional = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    keyword = [p.name for p in parameters if p.kind is p.KEYWORD_ONLY]
    assert (positional, keyword) == SHAPES[method]


def test_request_and_underscore_request_are_one_method() -> None:
    assert HaldirClient._request is HaldirClient.request
    assert AsyncHaldirClient._request is AsyncHaldirClient.request


def test_the_seeds_audit_and_spend_names_are_the_governors_methods() -> None:
    for client in (HaldirClient, AsyncHaldirClient):
        assert client.get_audit_trail is client.list_entries
        assert client.get_spend is client.spend


@pytest.mark.anyio
async def test_the_readme_quick_start_runs_as_printed_on_the_blocking_client(api: Api) -> None:
    def quick_start() -> list[dict[str, object]]:
        with _sync(api) as h:
            session = h.create_session("my-agent", scopes=["read", "spend:50"])
            h.store_secret("stripe_key", "sk_live_xxx")
            key = h.get_secret("stripe_key", session_id=session["session_id"])
            authorized = h.authorize_payment(session["session_id"], 29.99)
            logged = h.log_action(session["session_id"], tool="stripe", action="charge", cost_usd=29.99)
            revoked = h.revoke_session(session["session_id"])
        return [session, key, authorized, logged, revoked]

    session, key, authorized, logged, revoked = await blocking(quick_start)
    assert session["scopes"] == ["read", "spend"]
    assert key["value"] == "sk_live_xxx"
    assert authorized["amount"] == Decimal("29.99")
    assert str(logged["entry_id"]).startswith("aud_")
    assert revoked["is_valid"] is False


@pytest.mark.anyio
async def test_the_readme_quick_start_runs_as_printed_on_the_async_client(api: Api) -> None:
    async with _async(api) as h:
        session = await h.create_session("my-agent", scopes=["read", "spend:50"])
        await h.store_secret("stripe_key", "sk_live_xxx")
        key = await h.get_secret("stripe_key", session_id=session["session_id"])
        authorized = await h.authorize_payment(session["session_id"], 29.99)
        logged = await h.log_action(session["session_id"], tool="stripe", action="charge", cost_usd=29.99)
        revoked = await h.revoke_session(session["session_id"])
    assert key["value"] == "sk_live_xxx"
    assert authorized["amount"] == Decimal("29.99")
    assert logged["entry_id"].startswith("aud_")
    assert revoked["is_valid"] is False


@pytest.mark.anyio
async def test_the_blog_post_example_runs_as_printed_on_the_blocking_client(api: Api) -> None:
    def example() -> list[dict[str, object]]:
        with _sync(api) as h:
            session = h.create_session(
                agent_id="order-processing-bot",
                scopes=["read", "spend:50"],
                ttl=3600,  # Session expires in 1 hour
            )
            h.store_secret("stripe_key", "sk_live_xxx", scope_required="spend")
            key = h.get_secret("stripe_key", session_id=session["session_id"])
            authorized = h.authorize_payment(session["session_id"], amount=29.99)
            h.log_action(session["session_id"], tool="stripe", action="charge", cost_usd=29.99)
            revoked = h.revoke_session(session["session_id"])
        return [session, key, authorized, revoked]

    session, key, authorized, revoked = await blocking(example)
    assert (session["ttl"], session["spend_limit"]) == (3600, Decimal("50.00"))
    assert key["value"] == "sk_live_xxx"
    assert authorized["remaining_budget"] == Decimal("20.01")
    assert revoked["is_valid"] is False


@pytest.mark.anyio
async def test_the_blog_post_example_runs_as_printed_on_the_async_client(api: Api) -> None:
    async with _async(api) as h:
        session = await h.create_session(
            agent_id="order-processing-bot",
            scopes=["read", "spend:50"],
            ttl=3600,
        )
        await h.store_secret("stripe_key", "sk_live_xxx", scope_required="spend")
        key = await h.get_secret("stripe_key", session_id=session["session_id"])
        authorized = await h.authorize_payment(session["session_id"], amount=29.99)
        await h.log_action(session["session_id"], tool="stripe", action="charge", cost_usd=29.99)
        revoked = await h.revoke_session(session["session_id"])
    assert key["value"] == "sk_live_xxx"
    assert authorized["remaining_budget"] == Decimal("20.01")
    assert revoked["is_valid"] is False


@pytest.mark.anyio
async def test_the_proxy_guide_reads_the_audit_trail_and_spend_as_printed_on_the_blocking_client(
    api: Api,
) -> None:
    def guide() -> tuple[list[str], str]:
        with _sync(api) as h:
            session = h.create_session(
                agent_id="scanner-bot", scopes=["read", "execute"], spend_limit=10.00, ttl=1800
            )
            h.log_action(session["session_id"], "search", "query", "1.5")
            with pytest.raises(NotFound):
                h._request(
                    "POST",
                    "/v1/proxy/call",
                    json={
                        "tool": "scan_domain",
                        "arguments": {"domain": "example.com"},
                        "session_id": session["session_id"],
                    },
                )
            trail = h.get_audit_trail(session_id=session["session_id"])
            lines = []
            for entry in trail["entries"]:
                status = "DENIED" if entry.get("flagged") else "OK"
                lines.append(f"{entry['timestamp']} | {entry['tool']} | {status} | ${entry['cost_usd']:.2f}")
            spend = h.get_spend(session_id=session["session_id"])
            return lines, f"Total spend: ${spend['total_usd']:.2f}"

    lines, total = await blocking(guide)
    assert lines == [
        "2026-04-05T19:00:00.000000Z | scan_domain | DENIED | $0.00",
        "2026-04-05T19:00:00.000000Z | search | OK | $1.50",
    ]
    assert total == "Total spend: $1.50"


@pytest.mark.anyio
async def test_the_proxy_guide_reads_the_audit_trail_and_spend_as_printed_on_the_async_client(
    api: Api,
) -> None:
    async with _async(api) as h:
        session = await h.create_session(
            agent_id="scanner-bot", scopes=["read", "execute"], spend_limit=10.00, ttl=1800
        )
        assert session["spend_limit"] == Decimal("10.00")
        await h.log_action(session["session_id"], "search", "query", "1.5")
        await h.log_action(session["session_id"], "search", "query", "0.25", {"page": 2})
        trail = await h.get_audit_trail(session_id=session["session_id"])
        costs = [f"${entry['cost_usd']:.2f}" for entry in trail["entries"]]
        assert (costs, trail["next_cursor"]) == (["$0.25", "$1.50"], None)
        first_page = await h.get_audit_trail(
            session_id=session["session_id"], tool="search", flagged=False, limit=1
        )
        assert [e["cost_usd"] for e in first_page["entries"]] == [Decimal("0.25")]
        assert first_page["next_cursor"] is not None
        spend = await h.get_spend(session_id=session["session_id"])
        assert f"Total spend: ${spend['total_usd']:.2f}" == "Total spend: $1.75"
        assert await h.get_spend(agent_id="scanner-bot") == spend
        assert (await h.get_spend(session_id=session["session_id"]))["by_tool"] == {"search": Decimal("1.75")}


@pytest.mark.anyio
async def test_request_sends_any_route_with_the_key_and_answers_its_json_on_both_clients(api: Api) -> None:
    spec = {"type": "spend_limit", "max_usd": Decimal("12.50"), "per": "agent"}

    def blocking_calls() -> tuple[object, object]:
        with _sync(api) as h:
            created = h._request("POST", "/v1/proxy/policies", json=spec)
            listed = h.request("GET", "/v1/proxy/policies")
            with pytest.raises(NotFound):
                h.request("DELETE", "/v1/proxy/policies/pol_missing")
        return created, listed

    created, listed = await blocking(blocking_calls)
    assert isinstance(created, dict)
    assert created["max_usd"] == Decimal("12.50")
    assert listed == {"policies": [created]}
    async with _async(api) as h:
        removed = await h._request("delete", f"/v1/proxy/policies/{created['policy_id']}")
        assert removed == created
        session = await h.request("POST", "/v1/sessions", json={"agent_id": "bot", "scopes": ["read"]})
        page = await h.request("GET", "/v1/sessions", params={"agent_id": "bot", "active": True, "limit": 1})
        assert [s["session_id"] for s in page["sessions"]] == [session["session_id"]]
        with pytest.raises(NotFound, match="ses_nope"):
            await h._request("GET", "/v1/sessions/ses_nope")


def test_request_posts_the_seeds_upstream_registration_as_json() -> None:
    seen: list[httpx.Request] = []
    answer = {"name": "security-tools", "tools": {"added": ["scan_domain"]}}
    with HaldirClient(api_key="hld_xxx", base_url=BASE, transport=_recording(seen, answer, 201)) as h:
        for name, url in [("security-tools", "https://security-mcp.internal/mcp")]:
            assert h._request("POST", "/v1/proxy/upstreams", json={"name": name, "url": url}) == answer
    (sent,) = seen
    assert (sent.method, str(sent.url)) == ("POST", f"{BASE}/v1/proxy/upstreams")
    assert sent.headers["Authorization"] == "Bearer hld_xxx"
    assert sent.headers["Content-Type"] == "application/json"
    assert json.loads(sent.content) == {"name": "security-tools", "url": "https://security-mcp.internal/mcp"}


@pytest.mark.anyio
async def test_request_answers_lists_as_lists_and_an_empty_body_as_none() -> None:
    seen: list[httpx.Request] = []
    listed = [{"amount": "1.10"}, {"amount": "2.20"}]
    async with AsyncHaldirClient(api_key="k", base_url=BASE, transport=_recording(seen, listed)) as h:
        assert await h.request("GET", "/v1/anything") == [
            {"amount": Decimal("1.10")},
            {"amount": Decimal("2.20")},
        ]
    with HaldirClient(api_key="k", base_url=BASE, transport=_recording(seen, None, 204)) as sync:
        assert sync.request("POST", "/v1/anything", json={"a": 1}) is None
    assert [r.content for r in seen] == [b"", b'{"a":1}']


@pytest.mark.parametrize("path", ["https://elsewhere.example/v1/audit", "http://haldir.test/v1/audit"])
def test_request_refuses_a_full_url_so_the_key_never_leaves_for_another_host(path: str) -> None:
    seen: list[httpx.Request] = []
    with (
        HaldirClient(api_key="hld_secret", base_url=BASE, transport=_recording(seen, {})) as h,
        pytest.raises(ValueError, match="takes a path on the Haldir server"),
    ):
        h.request("GET", path)
    assert seen == []


@pytest.mark.anyio
async def test_the_key_and_url_default_to_the_environment_on_both_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[httpx.Request] = []
    monkeypatch.setenv("HALDIR_URL", "https://haldir.example/")
    monkeypatch.setenv("HALDIR_API_KEY", "hld_from_env")
    with HaldirClient(transport=_recording(seen, {"tree_size": 0})) as sync:
        sync.tree_head()
    async with AsyncHaldirClient(transport=_recording(seen, {"tree_size": 0})) as aio:
        await aio.tree_head()
    assert sync.url == aio.url == "https://haldir.example"
    assert [str(r.url) for r in seen] == ["https://haldir.example/v1/audit/tree-head"] * 2
    assert [r.headers["Authorization"] for r in seen] == ["Bearer hld_from_env"] * 2

    monkeypatch.delenv("HALDIR_URL")
    with HaldirClient("hld_given", transport=_recording(seen, {})) as given:
        given.tree_head()
    assert given.url == "http://127.0.0.1:8000"
    assert seen[-1].headers["Authorization"] == "Bearer hld_given"


def test_the_seeds_constructor_takes_the_key_first_and_the_url_as_base_url() -> None:
    h = HaldirClient(api_key="hld_xxx", base_url="https://haldir.xyz")
    assert h.url == "https://haldir.xyz"
    h.close()
    positional = HaldirClient("hld_xxx", "https://haldir.xyz/")
    assert positional.url == "https://haldir.xyz"
    positional.close()


@pytest.mark.anyio
async def test_url_is_the_older_name_of_base_url_on_both_clients() -> None:
    with HaldirClient(api_key="k", url="https://old.example") as sync:
        assert sync.url == "https://old.example"
    async with AsyncHaldirClient(api_key="k", base_url="https://a.example", url="https://a.example") as aio:
        assert aio.url == "https://a.example"
    for client in (HaldirClient, AsyncHaldirClient):
        with pytest.raises(TypeError, match="give the server URL once"):
            client(api_key="k", base_url="https://a.example", url="https://b.example")


@pytest.mark.parametrize("client", [HaldirClient, AsyncHaldirClient])
def test_a_url_given_first_as_before_is_refused_rather_than_sent_as_the_key(
    client: type[HaldirClient | AsyncHaldirClient],
) -> None:
    with pytest.raises(TypeError, match="the first positional argument is the API key"):
        client("http://127.0.0.1:8000", "hld_k")


@pytest.mark.anyio
async def test_scopes_given_as_one_string_are_refused_rather_than_split_into_letters() -> None:
    seen: list[httpx.Request] = []
    with (
        HaldirClient(api_key="k", base_url=BASE, transport=_recording(seen, {})) as sync,
        pytest.raises(TypeError, match=r"such as \['read'\]"),
    ):
        sync.create_session("bot", "read")
    async with AsyncHaldirClient(api_key="k", base_url=BASE, transport=_recording(seen, {})) as aio:
        with pytest.raises(TypeError, match="not a string"):
            await aio.create_session("bot", "read")
        await aio.create_session("bot")
    assert [json.loads(request.content)["scopes"] for request in seen] == [[]]


@pytest.mark.anyio
async def test_a_held_payment_raises_approval_required_and_runs_once_approved_on_both_clients(
    api: Api,
) -> None:
    approver_key = await api.key("approvals:write")
    agent = _async(api)
    approver = AsyncHaldirClient(
        api_key=approver_key, base_url=BASE, transport=httpx.ASGITransport(app=api.app)
    )
    await agent.create_approval_rule({"type": "spend_over", "threshold": 100})
    session = await agent.create_session("buyer", scopes=["spend"], spend_limit=500)

    with pytest.raises(ApprovalRequired) as held:
        await agent.authorize_payment(session["session_id"], 150)
    approval_id = held.value.details["approval_id"]
    pending = await approver.list_pending_approvals()
    decided = await approver.approve(approval_id, note="fine")

    def blocking_retry() -> dict[str, object]:
        with _sync(api) as h:
            return h.authorize_payment(session["session_id"], 150)

    authorized = await blocking(blocking_retry)
    assert [a["approval_id"] for a in pending["approvals"]] == [approval_id]
    assert decided["status"] == "approved"
    assert authorized["remaining_budget"] == Decimal("350")
    assert (await agent.get_approval(approval_id))["status"] == "consumed"
