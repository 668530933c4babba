"""Sign-in: an API key becomes a sealed HttpOnly, SameSite=Strict cookie; every request authenticates it."""

from __future__ import annotations

import pytest

from haldir.core.keys import Principal
from haldir.web.signin import COOKIE, SIGNED_IN_FOR
from tests.conftest import Api
from tests.web.conftest import Browser, csrf_of

pytestmark = pytest.mark.anyio


@pytest.fixture
def store_url(sqlite_url: str) -> str:
    """Sign-in lives above the store: one backend is enough here."""
    return sqlite_url


async def test_a_page_without_a_sign_in_redirects_to_the_sign_in_form(browser: Browser) -> None:
    response = await browser.get("/ui/sessions")

    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"


async def test_signing_in_sets_an_httponly_samesite_strict_cookie_for_the_dashboard_only(
    api: Api, browser: Browser
) -> None:
    response = await browser.sign_in(api.admin_key)

    assert response.status_code == 303
    assert response.headers["location"] == "/ui/"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}="))
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "path=/ui" in cookie.lower()
    assert f"max-age={int(SIGNED_IN_FOR.total_seconds())}" in cookie.lower()
    assert "secure" not in attributes  # served over plain http here; over https it is Secure
    assert api.admin_key not in cookie
    assert api.admin_key[4:20] not in cookie


async def test_a_signed_in_browser_sees_the_pages_its_key_allows(api: Api, browser: Browser) -> None:
    await browser.sign_in(api.admin_key)

    response = await browser.get("/ui/sessions")

    assert response.status_code == 200
    assert api.admin_key[:12] in response.text  # the key's prefix names who is signed in
    assert "acme" in response.text


async def test_a_wrong_key_is_refused_with_401_and_sets_no_session_cookie(browser: Browser) -> None:
    response = await browser.sign_in("hld_" + "x" * 48)

    assert response.status_code == 401
    assert "invalid API key" in response.text
    assert not any(c.startswith(f"{COOKIE}=") for c in response.headers.get_list("set-cookie"))


async def test_a_sign_in_without_the_forms_csrf_token_is_refused(api: Api, browser: Browser) -> None:
    await browser.get("/ui/login")

    response = await browser.post("/ui/login", {"api_key": api.admin_key, "csrf": "forged"})

    assert response.status_code == 403
    assert COOKIE not in response.headers.get("set-cookie", "")


async def test_a_tampered_cookie_signs_the_browser_out(api: Api, browser: Browser) -> None:
    await browser.sign_in(api.admin_key)
    sealed = browser.client.cookies[COOKIE]
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    browser.client.cookies.set(COOKIE, flipped, domain="haldir.test", path="/ui")

    response = await browser.get("/ui/sessions")

    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"


async def test_the_sign_in_expires_after_eight_hours(api: Api, browser: Browser) -> None:
    await browser.sign_in(api.admin_key)
    api.clock.advance(SIGNED_IN_FOR.total_seconds() - 1)
    still = await browser.get("/ui/sessions")
    api.clock.advance(1)

    expired = await browser.get("/ui/sessions")

    assert still.status_code == 200
    assert expired.status_code == 303
    assert expired.headers["location"] == "/ui/login"


async def test_revoking_the_key_signs_the_browser_out_on_its_next_request(api: Api, browser: Browser) -> None:
    key = await api.key("*")
    await browser.sign_in(key)
    assert (await browser.get("/ui/sessions")).status_code == 200

    await api.governor.keys.revoke_key(Principal.operator("acme"), key[:12])
    response = await browser.get("/ui/sessions")

    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"


async def test_signing_out_clears_the_cookie(api: Api, browser: Browser) -> None:
    await browser.sign_in(api.admin_key)

    response = await browser.act("/ui/logout")
    after = await browser.get("/ui/sessions")

    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"
    assert f'{COOKIE}=""' in response.headers["set-cookie"]
    assert after.status_code == 303


async def test_the_sign_in_form_puts_the_key_in_a_password_field_and_never_echoes_it(
    browser: Browser,
) -> None:
    form = await browser.get("/ui/login")
    key = "hld_" + "y" * 48

    refused = await browser.post("/ui/login", {"api_key": key, "csrf": csrf_of(form.text)})

    assert 'type="password"' in form.text
    assert key not in refused.text
