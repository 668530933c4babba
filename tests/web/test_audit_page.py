"""The audit trail in the dashboard: filters, and an entry's inclusion proof checked against the latest
signed checkpoint, on both stores."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Api
from tests.web.conftest import Browser

pytestmark = pytest.mark.anyio


async def _logged(api: Api, *, agent_id: str, tool: str, action: str = "charge", status: str = "ok") -> Any:
    headers = api.auth(api.admin_key)
    session = await api.client.post(
        "/v1/sessions", json={"agent_id": agent_id, "scopes": ["read"]}, headers=headers
    )
    entry = await api.client.post(
        "/v1/audit",
        json={"session_id": session.json()["session_id"], "tool": tool, "action": action, "status": status},
        headers=headers,
    )
    assert entry.status_code == 201, entry.text
    return entry.json()


def _entry_ids(html: str) -> list[str]:
    return re.findall(r'href="/ui/audit/(aud_[A-Za-z0-9]+)"', html)


async def test_the_audit_trail_lists_entries_newest_first_and_filters_them(
    api: Api, browser: Browser
) -> None:
    first = await _logged(api, agent_id="alpha", tool="stripe")
    second = await _logged(api, agent_id="beta", tool="github", status="denied")
    third = await _logged(api, agent_id="alpha", tool="github")
    await browser.sign_in(api.admin_key)

    everything = await browser.get("/ui/audit")
    by_agent = await browser.get("/ui/audit", agent_id="alpha")
    by_tool = await browser.get("/ui/audit", tool="github", status="denied")

    assert _entry_ids(everything.text) == [third["entry_id"], second["entry_id"], first["entry_id"]]
    assert _entry_ids(by_agent.text) == [third["entry_id"], first["entry_id"]]
    assert _entry_ids(by_tool.text) == [second["entry_id"]]
    assert 'value="alpha"' in by_agent.text  # the filter form keeps what was asked


async def test_an_entry_shows_its_inclusion_proof_verified_against_the_signed_checkpoint(
    api: Api, browser: Browser
) -> None:
    entries = [await _logged(api, agent_id="a", tool=f"tool{n}") for n in range(5)]
    await browser.sign_in(api.admin_key)

    shown = await browser.get(f"/ui/audit/{entries[1]['entry_id']}")

    assert shown.status_code == 200
    assert "✓" in shown.text
    assert "✗" not in shown.text
    size = (await api.client.get("/v1/audit/tree-head", headers=api.auth(api.admin_key))).json()["tree_size"]
    assert size >= 5
    assert f"Included in the signed checkpoint of size {size}" in shown.text
    assert entries[1]["entry_hash"] in shown.text


async def test_an_entry_whose_stored_record_was_altered_fails_its_proof(api: Api, browser: Browser) -> None:
    entries = [await _logged(api, agent_id="a", tool="stripe") for _ in range(3)]
    await api.client.get("/v1/audit/tree-head", headers=api.auth(api.admin_key))  # a checkpoint before
    victim = entries[1]["entry_id"]
    async with api.app.state.store.engines.write.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE ledger_entries SET record = replace(record, 'charge', 'refund') WHERE entry_id = :id"
            ),
            {"id": victim},
        )
    await browser.sign_in(api.admin_key)

    shown = await browser.get(f"/ui/audit/{victim}")
    untouched = await browser.get(f"/ui/audit/{entries[0]['entry_id']}")

    assert shown.status_code == 200
    assert "✗" in shown.text
    assert "Not proven included" in shown.text
    assert "different root" in shown.text
    assert "✓" in untouched.text
