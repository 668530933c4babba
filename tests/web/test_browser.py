"""The dashboard in a real browser: headless Chromium (Playwright, the system's Chromium) against a real
`haldir serve` with a real MCP server. Signs in, sees the overview, approves a held call and sees the agent's
retry succeed, revokes a session, approves a changed tool; markup in agent ids and tool names renders as
text and runs nothing. Every page is screenshotted into the module's tmp dir (`screenshots/`)."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, expect, sync_playwright

from haldir.core.keys import Principal
from haldir.governor import DEFAULT_TENANT
from haldir.runtime import open_runtime
from haldir.settings import Settings
from tests.e2e.server import environment, haldir, serve
from tests.mcp_servers import time_server_params
from tests.proxy.conftest import drifting_tools_params
from tests.proxy.test_gateway import CONVERT
from tests.support import FakeClock

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 15_000
AGENT_PAYLOAD = '<img src=x onerror="window.__pwned=1">'
TOOL_PAYLOAD = "<script>window.__pwned=2</script>"
HISTORY_DAYS = 14
AGENTS = ("invoice-bot", "research-agent", "support-triage")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Chromium is missing: run `make test`, which installs the Debian package `chromium`")
    return found


@dataclass
class Live:
    url: str
    admin: str  # the operator's key: the dashboard signs in with it
    agent: httpx.Client  # the agent's own key: it asks, calls and retries
    shots: Path
    problems: list[str] = field(default_factory=list)  # dialogs and CSP reports seen by the browser

    def shot(self, page: Page, name: str, *, full_page: bool = True) -> Path:
        path = self.shots / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path


async def _history(data_dir: Path) -> str:
    """The default tenant with its admin key (answered), and two weeks of three agents' spending, recorded
    with a clock set in the past so the spend chart has days to draw (the server then uses the wall clock)."""
    start = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0) - timedelta(
        days=HISTORY_DAYS
    )
    clock = FakeClock(start)
    settings = Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'haldir.db'}")
    operator = Principal.operator(DEFAULT_TENANT)
    async with open_runtime(settings, clock=clock) as runtime:
        gov = runtime.governor
        admin = await gov.keys.bootstrap(DEFAULT_TENANT)
        assert admin is not None
        for day in range(HISTORY_DAYS):
            for rank, agent in enumerate(AGENTS):
                made = await gov.sessions.create_session(
                    operator, agent_id=agent, scopes=["spend"], spend_limit="500"
                )
                for call in range(1 + (day + rank) % 3):
                    amount = f"{(day * 7 + rank * 13 + call * 5) % 23 + rank * 4 + 1}.{(day * 37) % 100:02d}"
                    await gov.budgets.log_action(
                        operator,
                        session_id=made.value.session_id,
                        tool="stripe",
                        action="charge",
                        cost_usd=amount,
                    )
            clock.advance(86400)
    return admin.value


def _rest(client: httpx.Client, method: str, path: str, body: Any = None) -> Any:
    response = client.request(method, path, json=body)
    assert response.status_code < 300, response.text
    return response.json()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    workdir = tmp_path_factory.mktemp("dashboard")
    env = environment(workdir) | {"HALDIR_OUTBOUND_ALLOW": "127.0.0.0/8"}
    migrated = haldir("migrate", "up", env=env)
    assert migrated.returncode == 0, migrated.stderr
    # On a thread of its own: Playwright's sync API may already run an event loop on this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        admin = pool.submit(asyncio.run, _history(workdir)).result()
    with serve(env, workdir) as server:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=30
        ) as rest:
            scopes = ["sessions:write", "proxy:write", "audit:write", "approvals:read"]
            agent_key = _rest(rest, "POST", "/v1/keys", {"name": "agent", "scopes": scopes})["key"]
            for name, params in (("time", time_server_params()), ("drifting", drifting_tools_params())):
                _rest(
                    rest,
                    "POST",
                    "/v1/proxy/upstreams",
                    {"name": name, "command": params.command, "args": list(params.args)},
                )
            _rest(rest, "POST", "/v1/approvals/rules", {"type": "tool", "tool": "convert_*"})
            hook = _rest(rest, "POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/hooks", "events": ["*"]})
            _rest(rest, "POST", f"/v1/webhooks/{hook['webhook_id']}/test")
        shots = workdir / "screenshots"
        shots.mkdir()
        headers = {"Authorization": f"Bearer {agent_key}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as agent:
            yield Live(server.url, admin, agent, shots)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium())
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser: Browser, live: Live) -> Iterator[Page]:
    """One signed-out tab for the module; the first test signs it in."""
    context = browser.new_context(base_url=live.url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()

    def dialog(shown: Dialog) -> None:
        live.problems.append(f"dialog: {shown.message}")
        shown.dismiss()

    def console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or message.type == "error":
            live.problems.append(f"console: {message.text} ({message.location.get('url')})")

    opened.on("dialog", dialog)
    opened.on("console", console)
    yield opened
    context.close()


def _signed_in(page: Page, live: Live) -> Page:
    page.goto("/ui/")
    if page.url.endswith("/ui/login"):
        page.get_by_label("API key").fill(live.admin)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Tenant overview")).to_be_visible()
    return page


def _session(live: Live, agent_id: str, *scopes: str) -> str:
    return str(
        _rest(live.agent, "POST", "/v1/sessions", {"agent_id": agent_id, "scopes": list(scopes)})[
            "session_id"
        ]
    )


def _convert(live: Live, session_id: str) -> httpx.Response:
    return live.agent.post(
        "/v1/proxy/call", json={"session_id": session_id, "tool": "convert_time", "arguments": CONVERT}
    )


def test_an_operator_signs_in_with_an_api_key_and_sees_the_overview(page: Page, live: Live) -> None:
    page.goto("/ui/")
    expect(page).to_have_url(f"{live.url}/ui/login")
    live.shot(page, "login")

    _signed_in(page, live)

    expect(page.locator(".card", has_text="Spend this month")).to_be_visible()
    expect(page.locator(".card", has_text="Audit")).to_contain_text("chain ✓")
    cookie = next(c for c in page.context.cookies() if c["name"] == "haldir_ui")
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/ui")
    assert page.evaluate("document.cookie") == ""  # no script of the page can read the sealed key
    live.shot(page, "overview")


def test_approving_a_held_call_in_the_browser_lets_the_agents_retry_succeed(page: Page, live: Live) -> None:
    session_id = _session(live, "invoice-bot", "execute")
    held = _convert(live, session_id)
    assert held.status_code == 202, held.text
    approval_id = held.json()["approval_id"]
    _signed_in(page, live)

    page.get_by_role("link", name="Approvals").click()
    row = page.locator("tr", has=page.get_by_role("link", name=approval_id))
    expect(row).to_contain_text("convert_time")
    live.shot(page, "approvals")
    row.get_by_role("button", name="Approve").click()

    expect(page.locator("h1")).to_contain_text("approved")
    live.shot(page, "approval")
    retried = _convert(live, session_id)
    assert retried.status_code == 200, retried.text
    assert not retried.json().get("isError")
    assert "Europe/Paris" in retried.text


def test_denying_with_a_note_in_the_browser_refuses_the_agents_retry(page: Page, live: Live) -> None:
    session_id = _session(live, "research-agent", "execute")
    approval_id = _convert(live, session_id).json()["approval_id"]
    _signed_in(page, live)

    page.goto(f"/ui/approvals/{approval_id}")
    page.get_by_placeholder("note (why denied)").fill("not during the freeze")
    page.get_by_role("button", name="Deny").click()

    expect(page.locator("h1")).to_contain_text("denied")
    expect(page.locator("dl.facts")).to_contain_text("not during the freeze")
    retried = _convert(live, session_id)
    assert retried.status_code == 403, retried.text
    assert retried.json()["code"] == "approval_denied"


def test_revoking_a_session_in_the_browser_refuses_the_agent(page: Page, live: Live) -> None:
    session_id = _session(live, "support-triage", "execute")
    _signed_in(page, live)

    page.get_by_role("link", name="Sessions").click()
    live.shot(page, "sessions")
    page.locator("tr", has=page.get_by_role("link", name=session_id)).get_by_role(
        "button", name="Revoke"
    ).click()

    expect(page.locator("dl.facts")).to_contain_text("revoked")
    refused = live.agent.post(
        "/v1/proxy/call",
        json={"session_id": session_id, "tool": "get_current_time", "arguments": {"timezone": "UTC"}},
    )
    assert refused.status_code in (401, 403), refused.text


def test_approving_a_changed_tool_in_the_browser_lets_calls_through_again(page: Page, live: Live) -> None:
    session_id = _session(live, "invoice-bot", "execute")
    drifted = live.agent.post(
        "/v1/proxy/call", json={"session_id": session_id, "tool": "drift", "arguments": {}}
    )
    assert drifted.status_code == 200, drifted.text
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {live.admin}"}) as rest:
        assert _rest(rest, "POST", "/v1/proxy/upstreams/drifting/refresh")["changed"] == ["greet"]
    refused = live.agent.post(
        "/v1/proxy/call", json={"session_id": session_id, "tool": "greet", "arguments": {"name": "ann"}}
    )
    assert refused.status_code == 409, refused.text
    _signed_in(page, live)

    page.get_by_role("link", name="Upstreams").click()
    row = page.locator("tr", has=page.get_by_text("greet", exact=True))
    row.get_by_text("What changed").click()
    expect(row).to_contain_text("greets, revision 2")
    live.shot(page, "upstreams")
    row.get_by_role("button", name="Approve change").click()

    expect(page.locator("tr", has=page.get_by_text("greet", exact=True))).to_contain_text("pinned")
    works = live.agent.post(
        "/v1/proxy/call", json={"session_id": session_id, "tool": "greet", "arguments": {"name": "ann"}}
    )
    assert works.status_code == 200, works.text


def test_redelivering_a_delivery_in_the_browser_queues_it_again(page: Page, live: Live) -> None:
    _signed_in(page, live)
    page.get_by_role("link", name="Webhooks").click()
    row = page.locator("tr", has_text="webhook.test")
    delivery_id = row.locator("code").first.inner_text()

    row.get_by_role("button", name="Redeliver").click()

    expect(page).to_have_url(re.compile(r"/ui/webhooks\?webhook_id=whk_"))
    expect(page.locator("main")).to_contain_text(delivery_id)
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {live.admin}"}) as rest:
        deliveries = _rest(rest, "GET", "/v1/webhooks/deliveries")["deliveries"]
    redelivered = next(d for d in deliveries if d["delivery_id"] == delivery_id)
    assert redelivered["status"] == "pending"
    assert redelivered["attempts"] >= 1


def test_every_page_renders_and_is_screenshotted(page: Page, live: Live) -> None:
    _signed_in(page, live)
    pages = {"overview": "/ui/", "audit": "/ui/audit", "spend": "/ui/spend", "webhooks": "/ui/webhooks"}

    for name, path in pages.items():
        response = page.goto(path)
        assert response is not None
        assert response.status == 200, path
        live.shot(page, name, full_page=name != "audit")  # the trail is a long page: its first screen
    page.goto("/ui/audit")
    page.locator("table a[href^='/ui/audit/aud_']").first.click()
    expect(page.locator(".proof")).to_contain_text("✓ Included in the signed checkpoint of size")
    live.shot(page, "audit-entry")
    page.goto("/ui/spend")
    assert page.locator(".chart svg").count() == 2
    assert page.locator(".chart svg rect.bar").count() >= 30 + len(AGENTS)

    assert {*pages, "audit-entry"} <= {path.stem for path in live.shots.glob("*.png")}
    assert all(path.stat().st_size > 10_000 for path in live.shots.glob("*.png"))
    assert live.problems == []


def test_markup_in_agent_ids_and_tool_names_renders_as_text_and_runs_nothing(page: Page, live: Live) -> None:
    session_id = _session(live, AGENT_PAYLOAD, "read")
    entry = _rest(
        live.agent, "POST", "/v1/audit", {"session_id": session_id, "tool": TOOL_PAYLOAD, "action": "x"}
    )
    _signed_in(page, live)

    for path in ("/ui/sessions", f"/ui/sessions/{session_id}", "/ui/audit", f"/ui/audit/{entry['entry_id']}"):
        page.goto(path)
        main = page.locator("main")
        expect(main).to_contain_text(AGENT_PAYLOAD if "sessions" in path else TOOL_PAYLOAD)
        assert main.locator("img, script").count() == 0, path
        assert page.evaluate("window.__pwned") is None, path
    live.shot(page, "escaped")
    assert live.problems == []
