"""Tenants are isolated in the dashboard as in the API: another tenant's ids answer 404 and change nothing;
agent-supplied strings render as text, on both stores."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import Api
from tests.web.conftest import Browser

pytestmark = pytest.mark.anyio

AGENT = '<script>alert("agent")</script>'
TOOL = '"><img src=x onerror=alert(1)>'
REASON = "<svg onload=alert(2)>"


async def _rest(api: Api, path: str, key: str, body: Any) -> Any:
    response = await api.client.post(path, json=body, headers=api.auth(key))
    assert response.status_code < 300, response.text
    return response.json()


async def _other_tenants_resources(api: Api) -> dict[str, str]:
    """A session, an approval and an audit entry of tenant `globex`."""
    owner, asker = await api.key("*", tenant="globex"), await api.key("*", tenant="globex")
    session = await _rest(
        api, "/v1/sessions", owner, {"agent_id": "g", "scopes": ["spend"], "spend_limit": "9"}
    )
    entry = await _rest(
        api, "/v1/audit", owner, {"session_id": session["session_id"], "tool": "t", "action": "a"}
    )
    approval = await _rest(
        api, "/v1/approvals/request", asker, {"session_id": session["session_id"], "tool": "t", "amount": "1"}
    )
    return {
        "session_id": session["session_id"],
        "entry_id": entry["entry_id"],
        "approval_id": approval["approval_id"],
        "owner": owner,
    }


async def test_another_tenants_ids_answer_404_and_change_nothing(api: Api, browser: Browser) -> None:
    theirs = await _other_tenants_resources(api)
    await browser.sign_in(api.admin_key)

    pages = [
        await browser.get(f"/ui/sessions/{theirs['session_id']}"),
        await browser.get(f"/ui/approvals/{theirs['approval_id']}"),
        await browser.get(f"/ui/audit/{theirs['entry_id']}"),
    ]
    actions = [
        await browser.act(f"/ui/sessions/{theirs['session_id']}/revoke"),
        await browser.act(f"/ui/approvals/{theirs['approval_id']}/approve"),
        await browser.act(f"/ui/approvals/{theirs['approval_id']}/deny", note="x"),
    ]
    listed = [await browser.get(path) for path in ("/ui/sessions", "/ui/approvals", "/ui/audit")]

    assert [response.status_code for response in pages + actions] == [404] * 6
    assert not any(
        theirs[name] in page.text for page in listed for name in ("session_id", "approval_id", "entry_id")
    )
    owner = api.auth(theirs["owner"])
    session = (await api.client.get(f"/v1/sessions/{theirs['session_id']}", headers=owner)).json()
    approval = (await api.client.get(f"/v1/approvals/{theirs['approval_id']}", headers=owner)).json()
    assert session["revoked_at"] is None
    assert approval["status"] == "pending"


async def test_agent_ids_tool_names_and_reasons_render_as_text(api: Api, browser: Browser) -> None:
    asker = await api.key("*")
    session = await _rest(
        api, "/v1/sessions", asker, {"agent_id": AGENT, "scopes": ["spend"], "spend_limit": "9"}
    )
    entry = await _rest(
        api, "/v1/audit", asker, {"session_id": session["session_id"], "tool": TOOL, "action": TOOL}
    )
    approval = await _rest(
        api,
        "/v1/approvals/request",
        asker,
        {"session_id": session["session_id"], "tool": TOOL, "amount": "1", "reason": REASON},
    )
    await browser.sign_in(api.admin_key)

    pages = {
        path: (await browser.get(path)).text
        for path in (
            "/ui/sessions",
            f"/ui/sessions/{session['session_id']}",
            "/ui/audit",
            f"/ui/audit/{entry['entry_id']}",
            "/ui/approvals",
            f"/ui/approvals/{approval['approval_id']}",
        )
    }

    for path, html in pages.items():
        assert "<script>alert" not in html, path
        assert "<img src=x" not in html, path
        assert "<svg onload" not in html, path
        assert not re.search(r"<[^>]*\sonerror=", html), path
    assert "&lt;script&gt;alert(&#34;agent&#34;)&lt;/script&gt;" in pages["/ui/sessions"]
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages["/ui/audit"]
    assert "&lt;svg onload=alert(2)&gt;" in pages["/ui/approvals"]
