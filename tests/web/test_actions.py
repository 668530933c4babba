"""What operators do from the dashboard, on both stores: revoke a session, approve or deny an approval,
redeliver a webhook delivery, approve a changed tool; bad input gets a 4xx page, never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api
from tests.proxy.conftest import drifting_tools_params
from tests.web.conftest import Browser

pytestmark = pytest.mark.anyio

WALKER_HOOK_URL = "https://1.1.1.1:9/haldir-dashboard"


async def _rest(api: Api, method: str, path: str, key: str, body: Any = None) -> Any:
    response = await api.client.request(method, path, json=body, headers=api.auth(key))
    assert response.status_code < 300, response.text
    return response.json()


async def _held_payment(api: Api, agent_key: str, *, tool: str = "wire_transfer") -> str:
    """An approval an agent's key asked for: the dashboard's key is another one, so it may decide."""
    session = await _rest(
        api,
        "POST",
        "/v1/sessions",
        agent_key,
        {"agent_id": "buyer", "scopes": ["spend"], "spend_limit": "50"},
    )
    asked = await _rest(
        api,
        "POST",
        "/v1/approvals/request",
        agent_key,
        {"session_id": session["session_id"], "tool": tool, "amount": "20", "reason": "monthly invoice"},
    )
    return str(asked["approval_id"])


async def test_revoking_a_session_from_the_dashboard_revokes_it(api: Api, browser: Browser) -> None:
    session = await _rest(api, "POST", "/v1/sessions", api.admin_key, {"agent_id": "bot", "scopes": ["read"]})
    session_id = session["session_id"]
    await browser.sign_in(api.admin_key)

    listed = await browser.get("/ui/sessions")
    revoked = await browser.act(f"/ui/sessions/{session_id}/revoke")
    shown = await browser.get(revoked.headers["location"])
    active = await browser.get("/ui/sessions")

    assert session_id in listed.text
    assert revoked.status_code == 303
    assert revoked.headers["location"] == f"/ui/sessions/{session_id}"
    assert "revoked" in shown.text
    assert session_id not in active.text  # the list shows active sessions by default
    stored = await _rest(api, "GET", f"/v1/sessions/{session_id}", api.admin_key)
    assert stored["revoked_at"] is not None


async def test_approving_a_pending_approval_records_the_decision(api: Api, browser: Browser) -> None:
    approval_id = await _held_payment(api, await api.key("*"))
    await browser.sign_in(api.admin_key)

    pending = await browser.get("/ui/approvals")
    approved = await browser.act(f"/ui/approvals/{approval_id}/approve")
    shown = await browser.get(approved.headers["location"])
    after = await browser.get("/ui/approvals")

    assert approval_id in pending.text
    assert "monthly invoice" in pending.text
    assert approved.status_code == 303
    assert '<span class="pill approved">approved</span>' in shown.text
    assert approval_id not in after.text
    stored = await _rest(api, "GET", f"/v1/approvals/{approval_id}", api.admin_key)
    assert (stored["status"], stored["decided_by"]) == ("approved", api.admin_key[:12])


async def test_denying_an_approval_records_the_note(api: Api, browser: Browser) -> None:
    approval_id = await _held_payment(api, await api.key("*"))
    await browser.sign_in(api.admin_key)

    denied = await browser.act(f"/ui/approvals/{approval_id}/deny", note="not this month")
    shown = await browser.get(denied.headers["location"])

    assert denied.status_code == 303
    assert "not this month" in shown.text
    stored = await _rest(api, "GET", f"/v1/approvals/{approval_id}", api.admin_key)
    assert (stored["status"], stored["note"]) == ("denied", "not this month")


async def test_the_key_that_asked_may_not_decide_from_the_dashboard_either(
    api: Api, browser: Browser
) -> None:
    agent_key = await api.key("*")
    approval_id = await _held_payment(api, agent_key)
    await browser.sign_in(agent_key)

    response = await browser.act(f"/ui/approvals/{approval_id}/approve")

    assert response.status_code == 403
    assert "another key" in response.text


async def test_redelivering_a_delivery_queues_it_again(api: Api, browser: Browser) -> None:
    hook = await _rest(
        api, "POST", "/v1/webhooks", api.admin_key, {"url": WALKER_HOOK_URL, "events": ["budget.threshold"]}
    )
    delivery = await _rest(api, "POST", f"/v1/webhooks/{hook['webhook_id']}/test", api.admin_key)
    await browser.sign_in(api.admin_key)

    listed = await browser.get("/ui/webhooks")
    redelivered = await browser.act(f"/ui/webhooks/deliveries/{delivery['delivery_id']}/redeliver")
    shown = await browser.get(redelivered.headers["location"])

    assert hook["webhook_id"] in listed.text
    assert delivery["delivery_id"] in listed.text
    assert redelivered.status_code == 303
    assert redelivered.headers["location"] == f"/ui/webhooks?webhook_id={hook['webhook_id']}"
    assert delivery["delivery_id"] in shown.text


async def test_approving_a_changed_tool_pins_its_new_definition(api: Api, browser: Browser) -> None:
    params = drifting_tools_params()
    await _rest(
        api,
        "POST",
        "/v1/proxy/upstreams",
        api.admin_key,
        {"name": "drifting", "command": params.command, "args": list(params.args)},
    )
    session = await _rest(
        api, "POST", "/v1/sessions", api.admin_key, {"agent_id": "a", "scopes": ["execute"]}
    )
    await _rest(
        api, "POST", "/v1/proxy/call", api.admin_key, {"session_id": session["session_id"], "tool": "drift"}
    )
    await _rest(api, "POST", "/v1/proxy/upstreams/drifting/refresh", api.admin_key)
    await browser.sign_in(api.admin_key)

    changed = await browser.get("/ui/upstreams")
    approved = await browser.act("/ui/tools/greet/approve")
    pinned = await browser.get("/ui/upstreams")

    assert "greets, revision 2" in changed.text  # what changed is shown before approving
    assert "/ui/tools/greet/approve" in changed.text
    assert approved.status_code == 303
    assert "/ui/tools/greet/approve" not in pinned.text
    tools = (await _rest(api, "GET", "/v1/proxy/tools", api.admin_key))["tools"]
    greet = next(tool for tool in tools if tool["name"] == "greet")
    assert (greet["status"], greet["definition"]["description"]) == ("pinned", "greets, revision 2")


@pytest.mark.parametrize(
    ("method", "path", "fields", "status"),
    [
        ("GET", "/ui/sessions", {"show": "everything"}, 400),
        ("GET", "/ui/sessions", {"cursor": "not-a-cursor"}, 400),
        ("GET", "/ui/audit", {"status": "<b>bold</b>"}, 400),
        ("GET", "/ui/audit", {"agent_id": "a" * 201}, 400),
        ("GET", "/ui/webhooks", {"webhook_id": "nope"}, 400),
        ("GET", "/ui/sessions/ses_missing", {}, 404),
        ("GET", "/ui/approvals/apr_missing", {}, 404),
        ("GET", "/ui/audit/aud_missing", {}, 404),
        ("POST", "/ui/approvals/{approval_id}/deny", {"note": "n" * 1001}, 400),
        ("POST", "/ui/sessions/ses_missing/revoke", {}, 404),
        ("POST", "/ui/webhooks/deliveries/dlv_missing/redeliver", {}, 404),
        ("POST", "/ui/tools/no_such_tool/approve", {}, 404),
        ("POST", "/ui/login", {}, 400),
    ],
)
async def test_bad_input_gets_a_4xx_page_never_a_500(
    api: Api, browser: Browser, method: str, path: str, fields: dict[str, str], status: int
) -> None:
    approval_id = await _held_payment(api, await api.key("*"))
    await browser.sign_in(api.admin_key)
    path = path.replace("{approval_id}", approval_id)

    if method == "GET":
        response = await browser.get(path, **fields)
    else:
        response = await browser.act(path, **fields)

    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert '<p class="problem" role="alert">' in response.text
    assert "<b>bold</b>" not in response.text


async def test_deciding_an_approval_twice_answers_409_with_its_status(api: Api, browser: Browser) -> None:
    approval_id = await _held_payment(api, await api.key("*"))
    await browser.sign_in(api.admin_key)
    await browser.act(f"/ui/approvals/{approval_id}/approve")

    again = await browser.act(f"/ui/approvals/{approval_id}/deny", note="too late")

    assert again.status_code == 409
    assert "is approved" in again.text
