"""The overview panel and the spend charts, on both stores: the same figures the API's counters give."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import Api
from tests.web.conftest import Browser

pytestmark = pytest.mark.anyio


async def _spent(api: Api, agent_id: str, *amounts: str) -> None:
    headers = api.auth(api.admin_key)
    made = await api.client.post(
        "/v1/sessions",
        json={"agent_id": agent_id, "scopes": ["spend"], "spend_limit": "100"},
        headers=headers,
    )
    for amount in amounts:
        logged = await api.client.post(
            "/v1/audit",
            json={
                "session_id": made.json()["session_id"],
                "tool": "stripe",
                "action": "charge",
                "cost_usd": amount,
            },
            headers=headers,
        )
        assert logged.status_code == 201, logged.text


async def _metrics(api: Api) -> Any:
    response = await api.client.get("/v1/metrics", headers=api.auth(api.admin_key))
    assert response.status_code == 200, response.text
    return response.json()


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


async def test_the_overview_shows_the_tenants_panel_as_the_api_counts_it(api: Api, browser: Browser) -> None:
    await _spent(api, "alpha", "2.50", "1.25")
    await _spent(api, "beta", "10")
    await browser.sign_in(api.admin_key)

    shown = _text((await browser.get("/ui/")).text)
    metrics = await _metrics(api)

    assert "● ok" in shown
    assert f"Actions this month {metrics['actions_this_month']}" in shown
    assert "Spend this month $ 13.75" in shown
    assert f"Sessions {metrics['sessions_active']} active {metrics['agents_active']} agents" in shown
    assert f"{metrics['audit_entries']} entries" in shown
    assert f"chain ✓ at checkpoint {metrics['checkpoint_size']}" in shown
    assert f"Approvals {metrics['approvals_pending']} pending" in shown


async def test_a_key_without_audit_read_lands_on_an_overview_that_names_the_missing_scope(
    api: Api, browser: Browser
) -> None:
    await browser.sign_in(await api.key("sessions:write"))

    landing = await browser.get("/ui/")

    assert landing.status_code == 200
    assert "lacks scope 'audit:read', which the overview needs" in landing.text
    assert 'href="/ui/sessions"' in landing.text


async def test_the_spend_page_draws_a_bar_per_day_and_per_agent(api: Api, browser: Browser) -> None:
    await _spent(api, "alpha", "2.50", "1.25")
    await _spent(api, "<b>beta</b>", "10")
    await browser.sign_in(api.admin_key)

    page = await browser.get("/ui/spend")

    assert page.status_code == 200
    charts = re.findall(r"<svg .*?</svg>", page.text, flags=re.DOTALL)
    assert len(charts) == 2
    by_day, by_agent = charts
    assert len(re.findall(r'<rect class="bar"', by_day)) == 30  # the default window: 30 days
    assert len(re.findall(r'<rect class="bar"', by_agent)) == 2
    assert "$ 13.75" in page.text
    assert "&lt;b&gt;beta&lt;/b&gt;: $ 10.00" in by_agent
    assert "<b>beta" not in page.text
    widths = [
        float(w) for w in re.findall(r'<rect class="bar" x="[^"]+" y="[^"]+" width="([^"]+)"', by_agent)
    ]
    assert widths[0] > widths[1] > 0
    assert abs(widths[1] / widths[0] - 3.75 / 10) < 0.01


@pytest.mark.parametrize(
    "params",
    [
        {"since": "2026-12-06", "until": "2026-01-01"},
        {"since": "2024-01-01", "until": "2026-01-01"},
        {"since": "yesterday"},
    ],
)
async def test_a_backwards_too_long_or_malformed_spend_window_answers_400(
    api: Api, browser: Browser, params: dict[str, str]
) -> None:
    await browser.sign_in(api.admin_key)

    response = await browser.get("/ui/spend", **params)

    assert response.status_code == 400
    assert '<p class="problem" role="alert">' in response.text
