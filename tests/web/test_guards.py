"""Every page and form is guarded: the strict CSP and headers, CSRF tokens, the cross-origin check, and
the signed-in key's scopes."""

from __future__ import annotations

import re

import httpx
import pytest

from haldir.web.app import CONTENT_SECURITY_POLICY
from tests.conftest import Api
from tests.web.conftest import Browser

pytestmark = pytest.mark.anyio

PAGES = ["/ui/", "/ui/sessions", "/ui/audit", "/ui/spend", "/ui/approvals", "/ui/webhooks", "/ui/upstreams"]


@pytest.fixture
def store_url(sqlite_url: str) -> str:
    """Guards live above the store: one backend is enough here."""
    return sqlite_url


async def _session(api: Api, agent_id: str = "agent-1") -> str:
    made = await api.client.post(
        "/v1/sessions", json={"agent_id": agent_id, "scopes": ["read"]}, headers=api.auth(api.admin_key)
    )
    assert made.status_code == 201, made.text
    return str(made.json()["session_id"])


async def _is_active(api: Api, session_id: str) -> bool:
    shown = await api.client.get(f"/v1/sessions/{session_id}", headers=api.auth(api.admin_key))
    return bool(shown.json()["revoked_at"] is None)


async def test_every_page_carries_the_strict_policy_and_no_inline_script_or_style(
    api: Api, browser: Browser
) -> None:
    await browser.sign_in(api.admin_key)
    for path in [*PAGES, "/ui/login", "/ui/no-such-page", "/ui/audit/aud_missing"]:
        response = await browser.get(path)

        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "same-origin"
        assert "<script" not in response.text.lower(), path
        assert not re.search(r"\sstyle=|\son[a-z]+=", response.text), path


async def test_the_stylesheet_is_served_from_the_package(browser: Browser) -> None:
    response = await browser.get("/ui/static/haldir.css")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


async def test_a_form_post_without_its_csrf_token_is_refused_and_changes_nothing(
    api: Api, browser: Browser
) -> None:
    session_id = await _session(api)
    await browser.sign_in(api.admin_key)

    missing = await browser.post(f"/ui/sessions/{session_id}/revoke", {})
    forged = await browser.post(f"/ui/sessions/{session_id}/revoke", {"csrf": "x" * 43})

    assert (missing.status_code, forged.status_code) == (403, 403)
    assert "CSRF" in forged.text
    assert await _is_active(api, session_id)


async def test_a_csrf_token_of_another_browser_is_worthless(
    api: Api, browser: Browser, second_browser: Browser
) -> None:
    session_id = await _session(api)
    await browser.sign_in(api.admin_key)
    await second_browser.sign_in(api.admin_key)

    response = await browser.post(f"/ui/sessions/{session_id}/revoke", {"csrf": second_browser.csrf})

    assert response.status_code == 403
    assert await _is_active(api, session_id)


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "", "Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "", "Origin": "null"},
    ],
)
async def test_a_form_posted_from_another_site_is_refused_even_with_a_valid_token(
    api: Api, browser: Browser, headers: dict[str, str]
) -> None:
    session_id = await _session(api)
    await browser.sign_in(api.admin_key)
    sent = {name: value for name, value in headers.items() if value}
    if "Sec-Fetch-Site" not in sent:
        browser.client.headers.pop("Sec-Fetch-Site", None)

    response = await browser.client.post(
        f"/ui/sessions/{session_id}/revoke", data={"csrf": browser.csrf}, headers=sent
    )

    assert response.status_code == 403, response.text
    assert await _is_active(api, session_id)


async def test_a_same_origin_post_with_its_token_acts(api: Api, browser: Browser) -> None:
    session_id = await _session(api)
    await browser.sign_in(api.admin_key)

    response = await browser.client.post(
        f"/ui/sessions/{session_id}/revoke",
        data={"csrf": browser.csrf},
        headers={"Origin": "http://haldir.test"},
    )

    assert response.status_code == 303
    assert not await _is_active(api, session_id)


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/ui/audit", "audit:read"),
        ("/ui/spend", "audit:read"),
        ("/ui/approvals", "approvals:read"),
        ("/ui/webhooks", "webhooks:read"),
        ("/ui/upstreams", "proxy:read"),
    ],
)
async def test_a_page_outside_the_keys_scopes_answers_403_naming_the_missing_scope(
    api: Api, browser: Browser, path: str, scope: str
) -> None:
    await browser.sign_in(await api.key("sessions:read"))

    response = await browser.get(path)

    assert response.status_code == 403
    assert "Not allowed with this key" in response.text
    assert f"lacks scope &#39;{scope}&#39;" in response.text
    assert "sessions:read" in response.text


async def test_an_action_outside_the_keys_scopes_is_refused_and_changes_nothing(
    api: Api, browser: Browser
) -> None:
    session_id = await _session(api)
    await browser.sign_in(await api.key("sessions:read"))

    response = await browser.act(f"/ui/sessions/{session_id}/revoke")

    assert response.status_code == 403
    assert "sessions:write" in response.text
    assert await _is_active(api, session_id)


async def test_a_read_only_key_is_offered_only_its_pages_and_no_actions(api: Api, browser: Browser) -> None:
    await _session(api)
    await browser.sign_in(await api.key("sessions:read"))

    page = await browser.get("/ui/sessions")

    assert page.status_code == 200
    assert 'href="/ui/sessions"' in page.text
    assert 'href="/ui/audit"' not in page.text
    assert 'href="/ui/approvals"' not in page.text
    assert "/revoke" not in page.text


async def test_the_dashboard_is_not_part_of_the_api_document(api: Api) -> None:
    paths = api.app.openapi()["paths"]

    assert not [path for path in paths if path.startswith("/ui")]


async def test_an_unexpected_failure_answers_one_500_page_that_quotes_the_request_id(
    api: Api, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    await browser.sign_in(api.admin_key)

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(api.governor.sessions, "list_sessions", broken)
    response = await browser.get("/ui/sessions")

    assert response.status_code == 500
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-request-id"] in response.text
    assert "a bug" not in response.text


async def test_over_https_the_sign_in_cookie_is_secure(api: Api) -> None:
    transport = httpx.ASGITransport(app=api.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://haldir.test") as client:
        browser = Browser(client)
        response = await browser.sign_in(api.admin_key)

    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("haldir_ui="))
    assert "; secure" in cookie.lower()


async def test_the_dashboard_address_without_a_slash_leads_to_the_overview(
    api: Api, browser: Browser
) -> None:
    response = await browser.get("/ui")

    assert response.status_code in (301, 302, 303, 307, 308)
    assert response.headers["location"].endswith("/ui/")
