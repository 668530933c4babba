"""/v1/proxy over HTTP, in-process, against real MCP servers: register, list, policies, governed calls."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

import anyio
import pytest
import rfc8785

from tests.conftest import Api
from tests.mcp_servers import changing_tools_params, everything_stdio_params, time_server_params
from tests.proxy.conftest import drifting_tools_params
from tests.support import admitted_calls, call_outcomes

pytestmark = pytest.mark.anyio

TOKEN = "sk_live_51Hx-proxy-token"


async def _register(api: Api, name: str, params: Any) -> dict[str, Any]:
    response = await api.client.post(
        "/v1/proxy/upstreams",
        json={"name": name, "command": params.command, "args": list(params.args)},
        headers=api.auth(api.admin_key),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _session(api: Api, *scopes: str, spend_limit: str | None = None) -> str:
    body: dict[str, Any] = {"agent_id": "agent-1", "scopes": list(scopes)}
    if spend_limit is not None:
        body["spend_limit"] = spend_limit
    response = await api.client.post("/v1/sessions", json=body, headers=api.auth(api.admin_key))
    assert response.status_code == 201, response.text
    return str(response.json()["session_id"])


async def _call(api: Api, session_id: str, tool: str, arguments: dict[str, Any]) -> Any:
    return await api.client.post(
        "/v1/proxy/call",
        json={"session_id": session_id, "tool": tool, "arguments": arguments},
        headers=api.auth(api.admin_key),
    )


async def _policy(api: Api, spec: dict[str, Any]) -> str:
    response = await api.client.post("/v1/proxy/policies", json=spec, headers=api.auth(api.admin_key))
    assert response.status_code == 201, response.text
    return str(response.json()["policy_id"])


async def _drop_policy(api: Api, policy_id: str) -> None:
    response = await api.client.delete(f"/v1/proxy/policies/{policy_id}", headers=api.auth(api.admin_key))
    assert response.status_code == 200, response.text
    assert response.json()["policy_id"] == policy_id


async def _calls(api: Api, session_id: str, *, settled: bool = True) -> list[dict[str, Any]]:
    """The session's `tools/call` ledger entries, oldest first; once the outcomes of the calls answered so
    far are recorded, unless `settled` is False."""
    if settled:
        await api.app.state.proxy.settled()
    response = await api.client.get(
        "/v1/audit", params={"session_id": session_id, "limit": 200}, headers=api.auth(api.admin_key)
    )
    assert response.status_code == 200, response.text
    return [entry for entry in reversed(response.json()["entries"]) if entry["action"] == "tools/call"]


async def _tool_names(api: Api) -> set[str]:
    response = await api.client.get("/v1/proxy/tools", headers=api.auth(api.admin_key))
    return {tool["name"] for tool in response.json()["tools"]}


async def test_a_call_through_the_proxy_reaches_the_upstream_and_the_ledger(api: Api) -> None:
    registered = await _register(api, "time", time_server_params())
    assert set(registered["tools"]["added"]) == {"get_current_time", "convert_time"}
    assert await _tool_names(api) == {"get_current_time", "convert_time"}
    session_id = await _session(api, "execute")
    response = await _call(api, session_id, "get_current_time", {"timezone": "UTC"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result.get("isError") is not True
    assert '"timezone": "UTC"' in result["content"][0]["text"]
    ((admit, finish),) = admitted_calls(await _calls(api, session_id))
    assert (admit["tool"], finish["status"]) == ("get_current_time", "ok")


async def test_a_denied_call_names_its_policy(api: Api) -> None:
    await _register(api, "everything", everything_stdio_params())
    policy = await api.client.post(
        "/v1/proxy/policies", json={"type": "deny", "tools": ["echo"]}, headers=api.auth(api.admin_key)
    )
    assert policy.status_code == 201, policy.text
    session_id = await _session(api, "execute")
    response = await _call(api, session_id, "echo", {"message": "hi"})
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "tool_denied"
    assert body["policy_id"] == policy.json()["policy_id"]
    assert "deny list" in body["flag_reason"]


# upstreams


async def test_stdio_and_http_upstreams_are_registered_listed_and_deleted(
    loopback_api: Api, everything_http: str
) -> None:
    api = loopback_api
    await _register(api, "time", time_server_params())
    remote = await api.client.post(
        "/v1/proxy/upstreams",
        json={"name": "remote", "url": everything_http, "headers": {"X-Trace": "1"}},
        headers=api.auth(api.admin_key),
    )
    assert remote.status_code == 201, remote.text
    assert remote.json()["transport"] == "http"
    assert remote.json()["header_names"] == ["X-Trace"]
    assert "echo" in remote.json()["tools"]["added"]
    again = await api.client.post(
        "/v1/proxy/upstreams",
        json={"name": "remote", "url": everything_http},
        headers=api.auth(api.admin_key),
    )
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"
    listed = (await api.client.get("/v1/proxy/upstreams", headers=api.auth(api.admin_key))).json()
    assert {(u["name"], u["transport"]) for u in listed["upstreams"]} == {
        ("time", "stdio"),
        ("remote", "http"),
    }
    session_id = await _session(api, "execute")
    echoed = await _call(api, session_id, "echo", {"message": "over http"})
    assert echoed.status_code == 200, echoed.text
    assert echoed.json()["content"][0]["text"] == "Echo: over http"
    deleted = await api.client.delete("/v1/proxy/upstreams/remote", headers=api.auth(api.admin_key))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["name"] == "remote"
    assert await _tool_names(api) == {"get_current_time", "convert_time"}
    gone = await _call(api, session_id, "echo", {"message": "again"})
    assert gone.status_code == 404
    assert gone.json()["code"] == "not_found"
    missing = await api.client.delete("/v1/proxy/upstreams/remote", headers=api.auth(api.admin_key))
    assert missing.status_code == 404


async def test_an_upstream_url_on_loopback_is_refused_unless_allowed(api: Api, everything_http: str) -> None:
    refused = await api.client.post(
        "/v1/proxy/upstreams",
        json={"name": "remote", "url": everything_http},
        headers=api.auth(api.admin_key),
    )
    assert refused.status_code == 400
    assert refused.json()["code"] == "outbound_refused"
    listed = (await api.client.get("/v1/proxy/upstreams", headers=api.auth(api.admin_key))).json()
    assert listed["upstreams"] == []


async def test_an_unreachable_upstream_is_not_kept(api: Api) -> None:
    response = await api.client.post(
        "/v1/proxy/upstreams",
        json={"name": "broken", "command": "/nonexistent/mcp-server"},
        headers=api.auth(api.admin_key),
    )
    assert response.status_code == 502, response.text
    assert response.json()["code"] == "upstream_unavailable"
    listed = (await api.client.get("/v1/proxy/upstreams", headers=api.auth(api.admin_key))).json()
    assert listed["upstreams"] == []


async def test_tools_of_the_same_name_are_exposed_by_upstream(api: Api) -> None:
    await _register(api, "a", everything_stdio_params())
    await _register(api, "b", everything_stdio_params())
    names = await _tool_names(api)
    assert {"a__echo", "b__echo"} <= names
    assert "echo" not in names
    session_id = await _session(api, "execute")
    response = await _call(api, session_id, "b__echo", {"message": "from b"})
    assert response.status_code == 200, response.text
    assert response.json()["content"][0]["text"] == "Echo: from b"
    assert (await _call(api, session_id, "echo", {"message": "?"})).json()["code"] == "not_found"
    entry = (await _calls(api, session_id))[0]
    assert (entry["tool"], entry["details"]["upstream"], entry["details"]["tool_name"]) == (
        "b__echo",
        "b",
        "echo",
    )
    await api.client.delete("/v1/proxy/upstreams/a", headers=api.auth(api.admin_key))
    assert "echo" in await _tool_names(api)


async def test_a_changed_definition_is_refused_until_approved(api: Api) -> None:
    await _register(api, "drifting", drifting_tools_params())
    session_id = await _session(api, "execute")
    assert (await _call(api, session_id, "greet", {"name": "ann"})).status_code == 200
    assert (await _call(api, session_id, "drift", {})).status_code == 200  # the upstream tells nobody
    refreshed = await api.client.post("/v1/proxy/upstreams/drifting/refresh", headers=api.auth(api.admin_key))
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["changed"] == ["greet"]
    tools = (await api.client.get("/v1/proxy/tools", headers=api.auth(api.admin_key))).json()["tools"]
    greet = next(tool for tool in tools if tool["name"] == "greet")
    assert greet["status"] == "changed"
    assert greet["pending_definition"]["description"] == "greets, revision 2"
    changed = await _call(api, session_id, "greet", {"name": "ann"})
    assert changed.status_code == 409
    assert changed.json()["code"] == "tool_definition_changed"
    approved = await api.client.post("/v1/proxy/tools/greet/approve", headers=api.auth(api.admin_key))
    assert approved.status_code == 200, approved.text
    assert approved.json()["definition"]["description"] == "greets, revision 2"
    again = await api.client.post("/v1/proxy/tools/greet/approve", headers=api.auth(api.admin_key))
    assert again.status_code == 200  # approving a pinned tool changes nothing
    assert again.json()["pinned_hash"] == approved.json()["pinned_hash"]
    works = await _call(api, session_id, "greet", {"name": "ann"})
    assert works.status_code == 200
    assert works.json()["content"][0]["text"] == "hello ann"
    outcomes = call_outcomes(await _calls(api, session_id))
    assert outcomes == [("greet", "ok"), ("drift", "ok"), ("greet", "denied"), ("greet", "ok")]


# denials


async def _refused(
    api: Api, session_id: str, tool: str, arguments: dict[str, Any], status: int
) -> dict[str, Any]:
    response = await _call(api, session_id, tool, arguments)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert body["flag_reason"]
    return body


async def test_each_refusal_has_its_code_status_and_ledger_entry(api: Api) -> None:
    await _register(api, "time", time_server_params())
    utc = {"timezone": "UTC"}
    session_id = await _session(api, "execute")
    reader = await _session(api, "read")
    refusals: list[tuple[str, str | None]] = []

    deny = await _policy(api, {"type": "deny", "tools": ["get_current_time"]})
    body = await _refused(api, session_id, "get_current_time", utc, 403)
    assert (body["code"], body["policy_id"]) == ("tool_denied", deny)
    refusals.append(("tool_denied", deny))
    await _drop_policy(api, deny)

    allow = await _policy(api, {"type": "allow", "tools": ["convert_time"]})
    body = await _refused(api, session_id, "get_current_time", utc, 403)
    assert (body["code"], body["policy_id"]) == ("not_allowed", allow)
    refusals.append(("not_allowed", allow))
    await _drop_policy(api, allow)

    body = await _refused(api, reader, "get_current_time", utc, 403)
    assert body["code"] == "not_allowed"
    assert "policy_id" not in body
    assert "execute" in body["error"]

    rule = {"argument": "timezone", "one_of": ["UTC"]}
    arguments = await _policy(api, {"type": "arguments", "tool": "get_current_time", "rules": [rule]})
    body = await _refused(api, session_id, "get_current_time", {"timezone": "Europe/Paris"}, 403)
    assert (body["code"], body["policy_id"]) == ("argument_rejected", arguments)
    refusals.append(("argument_rejected", arguments))
    assert (await _call(api, session_id, "get_current_time", utc)).status_code == 200
    await _drop_policy(api, arguments)

    hours = {"start": "09:00", "end": "17:00"}
    window = await _policy(api, {"type": "time_window", "allowed_hours": hours, "timezone": "UTC"})
    body = await _refused(api, session_id, "get_current_time", utc, 403)  # the fake clock says 19:00 UTC
    assert (body["code"], body["policy_id"]) == ("outside_time_window", window)
    refusals.append(("outside_time_window", window))
    api.clock.advance(15 * 3600)  # 10:00 the next day, when the first session has expired
    morning = await _session(api, "execute")
    assert (await _call(api, morning, "get_current_time", utc)).status_code == 200
    await _drop_policy(api, window)

    rate = await _policy(api, {"type": "rate_limit", "max_calls": 2, "window_seconds": 60})
    for _ in range(2):
        assert (await _call(api, morning, "convert_time", _convert())).status_code == 200
    response = await _call(api, morning, "convert_time", _convert())
    assert response.status_code == 429
    body = response.json()
    assert (body["code"], body["policy_id"]) == ("rate_limited", rate)
    assert 1 <= body["retry_after"] <= 60
    assert response.headers["Retry-After"] == str(body["retry_after"])
    refusals.append(("rate_limited", rate))
    api.clock.advance(body["retry_after"])
    assert (await _call(api, morning, "convert_time", _convert())).status_code == 200
    await _drop_policy(api, rate)

    budgeted = await _session(api, "execute", spend_limit="1")
    cost = await _policy(api, {"type": "tool_cost", "tool": "get_current_time", "cost_usd": "0.40"})
    for _ in range(2):
        assert (await _call(api, budgeted, "get_current_time", utc)).status_code == 200
    body = await _refused(api, budgeted, "get_current_time", utc, 402)
    assert body["code"] == "budget_exceeded"
    assert body["remaining_budget"] == "0.20"

    denied = [e for sid in (session_id, morning) for e in await _calls(api, sid) if e["status"] == "denied"]
    assert [e["details"].get("policy_id") for e in denied] == [pid for _, pid in refusals]
    assert all(e["flagged"] and e["flag_reason"] == e["details"]["refused"] for e in denied)
    budget_calls = await _calls(api, budgeted)
    assert call_outcomes(budget_calls) == [("get_current_time", "ok")] * 2 + [("get_current_time", "denied")]
    session = (await api.client.get(f"/v1/sessions/{budgeted}", headers=api.auth(api.admin_key))).json()
    assert session["spent"] == "0.80"
    for admit, finish in admitted_calls(budget_calls):
        assert (admit["charged_usd"], finish["charged_usd"]) == ("0.40", "0.00")
        assert cost in admit["details"]["policy_ids"]
        assert cost in finish["details"]["policy_ids"]


def _convert() -> dict[str, str]:
    return {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}


# the ledger


async def test_the_ledger_records_ok_and_error_calls_with_digests_and_latency(api: Api) -> None:
    await _register(api, "time", time_server_params())
    cost = await _policy(api, {"type": "tool_cost", "tool": "get_current_time", "cost_usd": "0.25"})
    session_id = await _session(api, "execute", spend_limit="5")
    ok = await _call(api, session_id, "get_current_time", {"timezone": "UTC"})
    failed = await _call(api, session_id, "get_current_time", {"timezone": "Nowhere/Nope"})
    assert ok.status_code == failed.status_code == 200
    assert failed.json()["isError"] is True
    entries = await _calls(api, session_id)
    assert len(entries) == 4
    calls = admitted_calls(entries)
    assert [((a["status"], a["charged_usd"]), (f["status"], f["charged_usd"])) for a, f in calls] == [
        (("ok", "0.25"), ("ok", "0.00")),
        (("ok", "0.25"), ("error", "-0.25")),
    ]
    for (admit, finish), answer, arguments in [
        (calls[0], ok.json(), {"timezone": "UTC"}),
        (calls[1], failed.json(), {"timezone": "Nowhere/Nope"}),
    ]:
        assert admit["details"]["policy_ids"] == [cost]
        assert admit["details"]["arguments_sha256"] == _sha256(arguments)
        details = finish["details"]
        assert details["policy_ids"] == [cost]
        assert details["arguments_sha256"] == _sha256(arguments)
        assert details["result_sha256"] == _sha256(answer)
        assert details["latency_ms"] > 0
    session = (await api.client.get(f"/v1/sessions/{session_id}", headers=api.auth(api.admin_key))).json()
    assert session["spent"] == "0.25"


async def test_a_calls_answer_comes_before_its_outcome_is_recorded(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _register(api, "time", time_server_params())
    session_id = await _session(api, "execute")
    recorded = anyio.Event()
    finish_call = api.governor.proxy.finish_call

    async def held_finish_call(*args: Any, **kwargs: Any) -> Any:
        await recorded.wait()
        return await finish_call(*args, **kwargs)

    monkeypatch.setattr(api.governor.proxy, "finish_call", held_finish_call)
    try:
        with anyio.fail_after(30):  # the answer does not wait for the outcome's record
            response = await _call(api, session_id, "get_current_time", {"timezone": "UTC"})
        assert response.status_code == 200, response.text
        (admit,) = await _calls(api, session_id, settled=False)
        assert (admit["status"], admit["details"]["phase"]) == ("ok", "admit")
    finally:
        recorded.set()
    with anyio.fail_after(10):
        await api.app.state.proxy.settled()
    again, finish = await _calls(api, session_id, settled=False)
    assert again == admit
    assert (finish["status"], finish["details"]["phase"], finish["details"]["call_id"]) == (
        "ok",
        "finish",
        admit["details"]["call_id"],
    )
    assert finish["details"]["result_sha256"] == _sha256(response.json())


def _sha256(value: Any) -> str:
    return hashlib.sha256(rfc8785.dumps(value)).hexdigest()


# secrets


async def _store_secret(api: Api, name: str, value: str, scope_required: str) -> None:
    stored = await api.client.post(
        "/v1/secrets",
        json={"name": name, "value": value, "scope_required": scope_required},
        headers=api.auth(api.admin_key),
    )
    assert stored.status_code == 201, stored.text


async def test_a_secret_in_the_arguments_reaches_the_upstream_and_nothing_else(api: Api) -> None:
    await _store_secret(api, "stripe_token", TOKEN, "read")
    await _register(api, "everything", everything_stdio_params())
    session_id = await _session(api, "execute", "read")
    response = await _call(api, session_id, "echo", {"message": "token={{secret:stripe_token}}"})
    assert response.status_code == 200, response.text
    assert response.json()["content"][0]["text"] == "Echo: token=[secret:stripe_token]"
    assert TOKEN not in response.text
    lacking = await _session(api, "execute")
    refused = await _call(api, lacking, "echo", {"message": "{{secret:stripe_token}}"})
    assert refused.status_code == 403
    assert refused.json()["code"] == "scope_denied"
    assert "read" in refused.json()["error"]
    unknown = await _call(api, session_id, "echo", {"message": "{{secret:nope}}"})
    assert unknown.status_code == 404
    await _no_value_anywhere(api, TOKEN)


async def test_a_secret_in_a_stdio_upstreams_env_is_injected_and_scrubbed(api: Api) -> None:
    await _store_secret(api, "env_token", TOKEN, "admin")
    params = everything_stdio_params()
    registered = await api.client.post(
        "/v1/proxy/upstreams",
        json={
            "name": "everything",
            "command": params.command,
            "args": list(params.args),
            "env": {"UPSTREAM_TOKEN": "{{secret:env_token}}"},
        },
        headers=api.auth(api.admin_key),
    )
    assert registered.status_code == 201, registered.text
    assert registered.json()["env_names"] == ["UPSTREAM_TOKEN"]
    session_id = await _session(api, "execute")
    response = await _call(api, session_id, "get-env", {})
    assert response.status_code == 200, response.text
    env = json.loads(response.json()["content"][0]["text"])
    assert env["UPSTREAM_TOKEN"] == "[secret:env_token]"
    assert not any(name.startswith("HALDIR_") for name in env)
    await _no_value_anywhere(api, TOKEN)


async def _no_value_anywhere(api: Api, value: str) -> None:
    """Neither the ledger (every entry of the tenant, the outcomes of the calls answered so far among
    them) nor the proxy's listings hold the value."""
    await api.app.state.proxy.settled()
    for path in ("/v1/audit?limit=200", "/v1/proxy/upstreams", "/v1/proxy/tools"):
        response = await api.client.get(path, headers=api.auth(api.admin_key))
        assert response.status_code == 200
        assert value not in response.text, path


# concurrency


async def test_concurrent_calls_never_overspend_and_reconcile_with_the_ledger(api: Api) -> None:
    await _register(api, "time", time_server_params())
    await _policy(api, {"type": "tool_cost", "tool": "get_current_time", "cost_usd": "0.10"})
    session_id = await _session(api, "execute", spend_limit="1")
    statuses: list[int] = []

    async def one() -> None:
        response = await _call(api, session_id, "get_current_time", {"timezone": "UTC"})
        statuses.append(response.status_code)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tasks:
            for _ in range(32):
                tasks.start_soon(one)
    assert sorted(statuses) == [200] * 10 + [402] * 22
    session = (await api.client.get(f"/v1/sessions/{session_id}", headers=api.auth(api.admin_key))).json()
    assert session["spent"] == "1.00"
    entries = await _calls(api, session_id)
    charged = sum(Decimal(e["charged_usd"]) for e in entries)
    assert charged == Decimal(session["spent"])
    assert [e["status"] for e in entries].count("denied") == 22
    calls = admitted_calls(entries)
    assert [(a["charged_usd"], f["status"], f["charged_usd"]) for a, f in calls] == [
        ("0.10", "ok", "0.00")
    ] * 10
    assert len(entries) == 22 + 2 * 10


async def test_a_key_without_proxy_write_cannot_call(api: Api) -> None:
    await _register(api, "time", time_server_params())
    session_id = await _session(api, "execute")
    reader = await api.key("proxy:read", "sessions:read")
    response = await api.client.post(
        "/v1/proxy/call",
        json={"session_id": session_id, "tool": "get_current_time", "arguments": {"timezone": "UTC"}},
        headers=api.auth(reader),
    )
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    assert (await api.client.get("/v1/proxy/tools", headers=api.auth(reader))).status_code == 200


async def test_an_upstream_that_dies_mid_call_is_a_502_recorded_as_an_error_and_refunded(api: Api) -> None:
    await _register(api, "changing", changing_tools_params())
    await _policy(api, {"type": "tool_cost", "tool": "crash", "cost_usd": "0.50"})
    session_id = await _session(api, "execute", spend_limit="1")
    response = await _call(api, session_id, "crash", {})
    assert response.status_code == 502, response.text
    assert response.json()["code"] == "upstream_unavailable"
    ((admitted, finished),) = admitted_calls(await _calls(api, session_id))
    assert admitted["charged_usd"] == "0.50"
    assert (finished["status"], finished["charged_usd"]) == ("error", "-0.50")
    assert finished["details"]["error"]
    assert finished["details"]["result_sha256"] is None
    session = (await api.client.get(f"/v1/sessions/{session_id}", headers=api.auth(api.admin_key))).json()
    assert session["spent"] == "0.00"
    again = await _call(api, session_id, "pid", {})  # the pool starts the upstream again
    assert again.status_code == 200, again.text
