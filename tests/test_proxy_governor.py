"""The proxy's governance on both stores: the upstream registry, tool pins and approval, policies, and
the governed call, with every refusal in the ledger and every charge reconciled with it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import pytest

from haldir.core.keys import Principal
from haldir.core.ledger import EntryFilter, canonical_bytes
from haldir.core.tools import OpenCall
from haldir.errors import (
    ArgumentRejected,
    BudgetExceeded,
    Conflict,
    InsufficientScope,
    InvalidRequest,
    NotAllowed,
    NotFound,
    OutboundRefused,
    OutsideTimeWindow,
    RateLimited,
    ScopeDenied,
    ToolDefinitionChanged,
    ToolDenied,
)
from haldir.governor import Governor
from haldir.governor.proxy import Admission
from haldir.store.sql import SqlStore
from tests.support import FakeClock

pytestmark = pytest.mark.anyio

ACME = Principal.operator("acme")
URL = "https://93.184.216.34/mcp"  # a public address: no DNS lookup in tests
SECRET = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
GRACE = timedelta(minutes=5)  # how long an admitted call may go without an outcome before a sweep


@pytest.fixture(autouse=True)
async def _tenants(governor: Governor) -> None:
    for tenant in ("acme", "globex"):
        await governor.keys.create_key(Principal.operator(tenant), name="setup", scopes=["*"])


def _tool(name: str, description: str = "does a thing") -> dict[str, Any]:
    return {"name": name, "description": description, "inputSchema": {"type": "object"}}


async def _proxy(governor: Governor, *tools: str, upstream: str = "web") -> None:
    await governor.registry.register_upstream(ACME, name=upstream, url=URL)
    await governor.registry.record_tools("acme", upstream, [_tool(name) for name in tools or ("search",)])


async def _session(governor: Governor, *scopes: str, limit: str = "10.00", agent: str = "agent-7") -> str:
    created = await governor.sessions.create_session(
        ACME, agent_id=agent, scopes=list(scopes or ["execute"]), spend_limit=Decimal(limit)
    )
    return created.value.session_id


async def _admit(governor: Governor, session_id: str, tool: str = "search", **arguments: Any) -> Admission:
    return await governor.proxy.admit_call(ACME, session_id=session_id, tool=tool, arguments=arguments)


async def _records(governor: Governor, **where: Any) -> list[dict[str, Any]]:
    page = await governor.ledger.list_entries(ACME, where=EntryFilter(**where), limit=200, order="asc")
    return [entry.record for entry in page.entries]


async def _open_calls(store: SqlStore) -> list[OpenCall]:
    """Every admitted call whose outcome is not recorded yet, of every tenant."""
    return await store.proxy.stale_calls(admitted_before=datetime(3000, 1, 1, tzinfo=UTC), limit=100)


async def _reconciles(governor: Governor, session_id: str) -> Decimal:
    spent = Decimal((await governor.sessions.get_session(ACME, session_id)).spent_micros) / 1_000_000
    charged = sum(
        (Decimal(r["charged_usd"]) for r in await _records(governor, session_id=session_id)), Decimal(0)
    )
    assert charged == spent
    return spent


# upstreams


async def test_an_upstream_is_registered_listed_and_deleted_with_ledger_entries(governor: Governor) -> None:
    upstream = await governor.registry.register_upstream(
        ACME, name="web", url=URL + "?token=abc", headers={"Authorization": "Bearer {{secret:web_token}}"}
    )
    assert (upstream.name, upstream.transport, upstream.headers) == (
        "web",
        "http",
        {"Authorization": "Bearer {{secret:web_token}}"},
    )
    assert await governor.registry.list_upstreams(ACME) == [upstream]
    assert await governor.registry.get_upstream(ACME, "web") == upstream
    await governor.registry.delete_upstream(ACME, "web")
    with pytest.raises(NotFound):
        await governor.registry.get_upstream(ACME, "web")
    registered, deleted = await _records(governor, tool="proxy")
    assert (registered["action"], deleted["action"]) == ("proxy.upstream.register", "proxy.upstream.delete")
    # no path or query: they may hold credentials
    assert registered["details"]["url"] == "https://93.184.216.34:443"
    assert registered["details"]["header_names"] == ["Authorization"]
    assert registered["details"]["secrets"] == ["web_token"]
    assert "Bearer" not in str(registered)


async def test_registering_a_name_again_is_a_conflict(governor: Governor) -> None:
    await governor.registry.register_upstream(ACME, name="web", url=URL)
    with pytest.raises(Conflict, match="delete it first"):
        await governor.registry.register_upstream(ACME, name="web", url=URL)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "Web", "url": URL}, "upstream name"),
        ({"name": "a__b", "url": URL}, "upstream name"),
        ({"name": "web"}, "exactly one"),
        ({"name": "web", "url": URL, "command": "x"}, "exactly one"),
        ({"name": "web", "url": URL, "args": ["x"]}, "stdio"),
        ({"name": "web", "url": URL, "headers": {"bad header": "x"}}, "headers"),
        ({"name": "web", "url": "https://93.184.216.34/{{secret:t}}"}, "secret references"),
        ({"name": "web", "command": "srv", "args": ["--key={{secret:t}}"]}, "secret references"),
        ({"name": "web", "command": "srv", "headers": {"A": "b"}}, "HTTP upstream"),
    ],
)
async def test_a_malformed_upstream_is_refused(
    governor: Governor, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await governor.registry.register_upstream(ACME, **config)


async def test_an_upstream_url_to_a_private_or_metadata_address_is_refused(governor: Governor) -> None:
    for url in ("http://127.0.0.1:8080/mcp", "http://169.254.169.254/", "file:///etc/passwd"):
        with pytest.raises(OutboundRefused):
            await governor.registry.register_upstream(ACME, name="web", url=url)
    assert await governor.registry.list_upstreams(ACME) == []


async def test_a_stdio_upstream_needs_admin_write_because_it_runs_a_command(governor: Governor) -> None:
    writer = Principal("acme", "hld_writer", frozenset({"proxy:write"}))
    with pytest.raises(InsufficientScope, match="admin:write"):
        await governor.registry.register_upstream(writer, name="local", command="mcp-server-time")
    upstream = await governor.registry.register_upstream(
        ACME, name="local", command="mcp-server-time", args=["--tz", "UTC"], env={"TOKEN": "{{secret:t}}"}
    )
    assert (upstream.transport, upstream.args, upstream.env) == (
        "stdio",
        ("--tz", "UTC"),
        {"TOKEN": "{{secret:t}}"},
    )


async def test_connecting_substitutes_secrets_and_records_each_release(governor: Governor) -> None:
    await governor.vault.store_secret(ACME, name="web_token", value=SECRET, scope_required="admin")
    await governor.registry.register_upstream(
        ACME, name="web", url=URL, headers={"Authorization": "Bearer {{secret:web_token}}", "X-Plain": "1"}
    )
    resolved = await governor.registry.upstream_for_connect("acme", "web")
    assert resolved.headers == {"Authorization": f"Bearer {SECRET}", "X-Plain": "1"}
    assert resolved.injected == {"web_token": SECRET}
    assert SECRET not in repr(resolved)
    assert resolved.fingerprint == await governor.registry.upstream_fingerprint("acme", "web")
    (release,) = [r for r in await _records(governor, tool="vault") if r["action"] == "secret.release"]
    assert (release["details"]["actor"], release["details"]["upstream"], release["session_id"]) == (
        "proxy",
        "web",
        None,
    )
    assert SECRET not in str(await _records(governor))
    await governor.vault.store_secret(ACME, name="web_token", value="rotated", scope_required="admin")
    assert await governor.registry.upstream_fingerprint("acme", "web") != resolved.fingerprint


async def test_connecting_with_a_missing_secret_says_which(governor: Governor) -> None:
    await governor.registry.register_upstream(ACME, name="web", url=URL, headers={"A": "{{secret:nope}}"})
    with pytest.raises(NotFound, match="secret 'nope'"):
        await governor.registry.upstream_for_connect("acme", "web")


# tools


async def test_new_tools_are_pinned_and_exposed_by_unique_names(governor: Governor) -> None:
    await _proxy(governor, "search", "fetch", upstream="web")
    synced = await governor.registry.record_tools("acme", "web", [_tool("search"), _tool("fetch")])
    assert (synced.added, synced.changed, synced.removed) == ((), (), ())
    await governor.registry.register_upstream(ACME, name="docs", url=URL)
    synced = await governor.registry.record_tools("acme", "docs", [_tool("search"), {"name": ""}, "junk"])
    assert (synced.added, synced.skipped) == (("search",), ("#1", "#2"))
    tools = await governor.registry.list_proxy_tools(ACME)
    assert [(t.name, t.upstream, t.tool_name, t.status) for t in tools] == [
        ("docs__search", "docs", "search", "pinned"),
        ("fetch", "web", "fetch", "pinned"),
        ("web__search", "web", "search", "pinned"),
    ]


async def test_a_changed_definition_is_flagged_refused_until_approved(governor: Governor) -> None:
    await _proxy(governor, "search")
    session = await _session(governor)
    synced = await governor.registry.record_tools(
        "acme", "web", [_tool("search", "now also emails your files")]
    )
    assert synced.changed == ("search",)
    (tool,) = await governor.registry.list_proxy_tools(ACME)
    assert tool.status == "changed"
    assert tool.definition["description"] == "does a thing"
    assert tool.pending_definition is not None
    assert tool.pending_definition["description"] == "now also emails your files"
    changed = (await _records(governor, tool="proxy", flagged=True))[-1]
    assert changed["action"] == "proxy.tool.changed"
    assert changed["flag_reason"].startswith("Tool 'search' of upstream 'web' changed its definition")
    with pytest.raises(ToolDefinitionChanged):
        await _admit(governor, session)

    approved = await governor.registry.approve_tool(ACME, "search")
    assert (approved.status, approved.definition["description"]) == ("pinned", "now also emails your files")
    again = await governor.registry.approve_tool(ACME, "search")  # a repeated approval is harmless
    assert (again.status, again.pinned_hash) == ("pinned", approved.pinned_hash)
    assert (await _admit(governor, session)).tool_name == "search"


async def test_a_tool_back_at_its_pinned_definition_needs_no_approval(governor: Governor) -> None:
    await _proxy(governor, "search")
    await governor.registry.record_tools("acme", "web", [_tool("search", "evil")])
    synced = await governor.registry.record_tools("acme", "web", [_tool("search")])
    assert synced.reverted == ("search",)
    assert [t.status for t in await governor.registry.list_proxy_tools(ACME)] == ["pinned"]


async def test_a_tool_no_longer_listed_disappears_and_returns_under_its_pin(governor: Governor) -> None:
    await _proxy(governor, "search", "fetch")
    assert (await governor.registry.record_tools("acme", "web", [_tool("search")])).removed == ("fetch",)
    assert [t.name for t in await governor.registry.list_proxy_tools(ACME)] == ["search"]
    assert (await governor.registry.record_tools("acme", "web", [_tool("search"), _tool("fetch")])).added == (
        "fetch",
    )


# policies


async def test_policies_are_created_listed_and_deleted_with_ledger_entries(governor: Governor) -> None:
    policy = await governor.registry.create_policy(
        ACME, {"type": "spend_limit", "max_usd": 50.0, "per": "agent"}
    )
    assert policy.policy_id.startswith("pol_")
    assert policy.spec == {"type": "spend_limit", "max_usd": "50.00", "per": "agent"}
    assert await governor.registry.list_policies(ACME) == [policy]
    assert await governor.registry.delete_policy(ACME, policy.policy_id) == policy
    with pytest.raises(NotFound):
        await governor.registry.delete_policy(ACME, policy.policy_id)
    actions = [r["action"] for r in await _records(governor, tool="proxy")]
    assert actions == ["proxy.policy.create", "proxy.policy.delete"]


async def test_reading_needs_proxy_read_and_changing_proxy_write(governor: Governor) -> None:
    reader = Principal("acme", "hld_reader", frozenset({"proxy:read"}))
    assert await governor.registry.list_policies(reader) == []
    with pytest.raises(InsufficientScope):
        await governor.registry.create_policy(reader, {"type": "deny", "tools": ["x"]})
    with pytest.raises(InsufficientScope):
        await governor.proxy.admit_call(reader, session_id="ses_x", tool="search", arguments={})


# the governed call


async def test_without_policies_a_session_holding_execute_may_call_any_tool(governor: Governor) -> None:
    await _proxy(governor, "search")
    session = await _session(governor)
    admission = await _admit(governor, session, q="cats")
    assert (admission.upstream, admission.tool_name, admission.arguments) == ("web", "search", {"q": "cats"})
    assert (admission.cost_micros, admission.policy_ids, admission.reserved) == (0, (), ())
    entry = await governor.proxy.finish_call(
        ACME, admission, result={"content": []}, error=None, latency_ms=12.5
    )
    record = entry.record
    assert (record["tool"], record["action"], record["status"], record["charged_usd"]) == (
        "search",
        "tools/call",
        "ok",
        "0.00",
    )
    assert record["details"]["latency_ms"] == 12.5
    assert len(record["details"]["arguments_sha256"]) == 64


async def test_a_session_needs_execute_or_the_tools_own_scope(governor: Governor) -> None:
    await _proxy(governor, "search", "fetch")
    narrow = await _session(governor, "execute:search")
    await _admit(governor, narrow)
    with pytest.raises(NotAllowed, match="lacks scope 'execute:fetch'"):
        await _admit(governor, narrow, "fetch")


async def test_a_denied_call_is_one_flagged_entry_naming_the_policy(governor: Governor) -> None:
    await _proxy(governor, "delete_database")
    policy = await governor.registry.create_policy(ACME, {"type": "deny", "tools": ["delete_database"]})
    session = await _session(governor)
    with pytest.raises(ToolDenied) as denied:
        await _admit(governor, session, "delete_database")
    assert denied.value.details == {
        "flag_reason": "Tool 'delete_database' is on the deny list",
        "policy_id": policy.policy_id,
    }
    (record,) = await _records(governor, session_id=session)
    assert (record["status"], record["flagged"], record["flag_reason"]) == (
        "denied",
        True,
        "Tool 'delete_database' is on the deny list",
    )
    assert record["details"]["policy_id"] == policy.policy_id


async def test_allow_list_arguments_and_unknown_tools_are_refused_and_recorded(governor: Governor) -> None:
    await _proxy(governor, "search", "read_file")
    await governor.registry.create_policy(ACME, {"type": "allow", "tools": ["read_file"]})
    await governor.registry.create_policy(
        ACME, {"type": "arguments", "tool": "read_file", "rules": [{"argument": "path", "pattern": "^/tmp/"}]}
    )
    session = await _session(governor)
    with pytest.raises(NotAllowed, match="not on the allow list"):
        await _admit(governor, session, "search")
    with pytest.raises(ArgumentRejected, match="does not match pattern"):
        await _admit(governor, session, "read_file", path="/etc/passwd")
    with pytest.raises(NotFound):
        await _admit(governor, session, "nope")
    await _admit(governor, session, "read_file", path="/tmp/x")
    statuses = [
        (r["status"], r["flagged"], r["details"].get("phase"))
        for r in await _records(governor, session_id=session)
    ]
    assert statuses == [("denied", True, None)] * 3 + [("ok", False, "admit")]


async def test_a_time_window_follows_the_injected_clock(governor: Governor, clock: FakeClock) -> None:
    await _proxy(governor, "search")
    await governor.registry.create_policy(
        ACME,
        {
            "type": "time_window",
            "allowed_hours": {"start": "22:00", "end": "02:00"},
            "timezone": "Europe/Berlin",
            "days": ["sun"],
        },
    )
    created = await governor.sessions.create_session(
        ACME, agent_id="night-owl", scopes=["execute"], ttl=86400
    )
    session = created.value.session_id
    clock.moment = datetime(2026, 4, 5, 19, 59, tzinfo=UTC)  # Sunday 21:59 in Berlin (UTC+2)
    with pytest.raises(OutsideTimeWindow):
        await _admit(governor, session)
    clock.moment = datetime(2026, 4, 5, 23, 30, tzinfo=UTC)  # Monday 01:30 in Berlin: Sunday's window
    await _admit(governor, session)


async def test_a_rate_limit_refuses_with_retry_after_until_its_window_ends(
    governor: Governor, clock: FakeClock
) -> None:
    await _proxy(governor, "search")
    policy = await governor.registry.create_policy(
        ACME, {"type": "rate_limit", "max_calls": 2, "window_seconds": 60}
    )
    clock.moment = datetime(2026, 4, 5, 19, 0, 15, tzinfo=UTC)
    session, other = await _session(governor), await _session(governor)
    await _admit(governor, session)
    await _admit(governor, session)
    with pytest.raises(RateLimited) as limited:
        await _admit(governor, session)
    assert limited.value.details["retry_after"] == 45
    assert limited.value.details["policy_id"] == policy.policy_id
    await _admit(governor, other)  # per session by default
    clock.advance(45)
    await _admit(governor, session)


async def test_a_tool_cost_is_reserved_with_its_entry_and_kept_on_success(governor: Governor) -> None:
    await _proxy(governor, "search")
    cost = await governor.registry.create_policy(
        ACME, {"type": "tool_cost", "tool": "search", "cost_usd": 0.25}
    )
    session = await _session(governor, "execute", limit="1.00")
    admission = await _admit(governor, session)
    assert (admission.cost_micros, admission.policy_ids) == (250_000, (cost.policy_id,))
    await governor.proxy.finish_call(ACME, admission, result={"content": []}, error=None, latency_ms=1)
    assert await _reconciles(governor, session) == Decimal("0.25")
    admit, finish = await _records(governor, session_id=session)
    assert (admit["details"]["phase"], admit["status"], admit["charged_usd"], admit["cost_usd"]) == (
        "admit",
        "ok",
        "0.25",
        "0.25",
    )
    assert admit["details"]["policy_ids"] == [cost.policy_id]
    assert (finish["details"]["phase"], finish["charged_usd"], finish["cost_usd"]) == (
        "finish",
        "0.00",
        "0.25",
    )
    assert admit["details"]["call_id"] == finish["details"]["call_id"] == admission.call_id


async def test_a_failed_call_releases_its_cost_and_its_spend_limit_counters(governor: Governor) -> None:
    await _proxy(governor, "search")
    await governor.registry.create_policy(ACME, {"type": "tool_cost", "tool": "search", "cost_usd": "0.40"})
    await governor.registry.create_policy(ACME, {"type": "spend_limit", "max_usd": "0.50", "per": "agent"})
    session = await _session(governor)
    for outcome in (
        {"result": None, "error": "upstream timed out"},
        {"result": {"isError": True}, "error": None},
    ):
        admission = await _admit(governor, session)
        entry = await governor.proxy.finish_call(ACME, admission, latency_ms=3, **outcome)
        assert (entry.record["status"], entry.record["charged_usd"]) == ("error", "-0.40")
    await _admit(governor, session)  # the agent's limit has room again
    assert await _reconciles(governor, session) == Decimal("0.4")


async def test_the_budget_and_each_kind_of_spend_limit_refuse_what_does_not_fit(governor: Governor) -> None:
    await _proxy(governor, "search")
    await governor.registry.create_policy(ACME, {"type": "tool_cost", "tool": "search", "cost_usd": "1"})
    poor = await _session(governor, limit="0.50")
    with pytest.raises(BudgetExceeded, match="budget left"):
        await _admit(governor, poor)
    per_session = await governor.registry.create_policy(
        ACME, {"type": "spend_limit", "max_usd": "1", "per": "session"}
    )
    capped = await _session(governor)
    await _admit(governor, capped)
    with pytest.raises(BudgetExceeded) as refused:
        await _admit(governor, capped)
    assert refused.value.details["policy_id"] == per_session.policy_id
    per_tenant = await governor.registry.create_policy(
        ACME, {"type": "spend_limit", "max_usd": "2", "per": "tenant"}
    )
    await _admit(governor, await _session(governor, agent="a1"))
    await _admit(governor, await _session(governor, agent="a2"))
    with pytest.raises(BudgetExceeded) as refused:
        await _admit(governor, await _session(governor, agent="a3"))
    assert refused.value.details["policy_id"] == per_tenant.policy_id
    for session in (poor, capped):
        assert (await _records(governor, session_id=session))[-1]["status"] == "denied"


async def test_a_refused_charge_rolls_back_the_rate_counter_taken_before_it(governor: Governor) -> None:
    await _proxy(governor, "search")
    await governor.registry.create_policy(
        ACME, {"type": "rate_limit", "max_calls": 1, "window_seconds": 3600}
    )
    cost = await governor.registry.create_policy(
        ACME, {"type": "tool_cost", "tool": "search", "cost_usd": "1"}
    )
    session = await _session(governor, limit="0.50")
    with pytest.raises(BudgetExceeded):
        await _admit(governor, session)
    await governor.registry.delete_policy(ACME, cost.policy_id)
    await _admit(governor, session)  # the refused attempt did not use up the one call


async def test_argument_secrets_are_released_under_the_session_scope_and_scrubbed(governor: Governor) -> None:
    await _proxy(governor, "charge")
    await governor.vault.store_secret(ACME, name="stripe_key", value=SECRET, scope_required="stripe")
    denied_session = await _session(governor)
    with pytest.raises(ScopeDenied, match="stripe"):
        await _admit(governor, denied_session, "charge", key="{{secret:stripe_key}}")
    session = await _session(governor, "execute", "stripe")
    admission = await _admit(governor, session, "charge", key="{{secret:stripe_key}}", note="x")
    assert admission.arguments == {"key": SECRET, "note": "x"}
    assert SECRET not in repr(admission)
    entry = await governor.proxy.finish_call(
        ACME,
        admission,
        result={"content": [{"type": "text", "text": f"used {SECRET}"}]},
        error=None,
        latency_ms=2,
    )
    as_sent = hashlib.sha256(canonical_bytes({"key": "{{secret:stripe_key}}", "note": "x"})).hexdigest()
    assert entry.record["details"]["arguments_sha256"] == as_sent  # the reference, not the value
    assert SECRET not in str(await _records(governor))
    releases = [r for r in await _records(governor, tool="vault") if r["action"] == "secret.release"]
    assert [(r["session_id"], r["details"]["actor"], r["details"]["call_id"]) for r in releases] == [
        (session, "proxy", admission.call_id)
    ]


async def test_an_expired_session_admits_nothing(governor: Governor, clock: FakeClock) -> None:
    await _proxy(governor, "search")
    session = await _session(governor)
    clock.advance(7200)
    with pytest.raises(ScopeDenied, match="expired"):
        await _admit(governor, session)


# the admission and the outcome


async def test_an_admitted_free_call_is_recorded_and_open_when_admit_call_returns(
    governor: Governor, store: SqlStore, clock: FakeClock
) -> None:
    await _proxy(governor, "search")
    session = await _session(governor)
    admission = await _admit(governor, session, q="cats")
    assert admission.call_id.startswith("call_")
    (admit,) = await _records(governor, session_id=session)
    assert (admit["tool"], admit["action"], admit["status"], admit["flagged"]) == (
        "search",
        "tools/call",
        "ok",
        False,
    )
    assert (admit["charged_usd"], admit["cost_usd"]) == ("0.00", "0.00")
    details = admit["details"]
    assert (details["phase"], details["call_id"], details["policy_ids"]) == ("admit", admission.call_id, [])
    assert details["arguments_sha256"] == hashlib.sha256(canonical_bytes({"q": "cats"})).hexdigest()
    assert await _open_calls(store) == [
        OpenCall("acme", admission.call_id, session, "agent-7", "search", 0, clock.now())
    ]

    finish = await governor.proxy.finish_call(
        ACME, admission, result={"content": []}, error=None, latency_ms=4
    )
    assert (finish.record["details"]["phase"], finish.record["details"]["call_id"]) == (
        "finish",
        admission.call_id,
    )
    assert finish.record["details"]["arguments_sha256"] == details["arguments_sha256"]
    assert await _open_calls(store) == []
    assert [r["details"]["phase"] for r in await _records(governor, session_id=session)] == [
        "admit",
        "finish",
    ]


async def test_a_sweep_records_outcome_unknown_for_calls_never_finished_and_keeps_their_cost(
    governor: Governor, store: SqlStore, clock: FakeClock
) -> None:
    await _proxy(governor, "search", "fetch")
    await governor.registry.create_policy(ACME, {"type": "tool_cost", "tool": "search", "cost_usd": "0.25"})
    session = await _session(governor, limit="1.00")
    paid, free = await _admit(governor, session), await _admit(governor, session, "fetch")
    clock.advance(240)
    recent = await _admit(governor, session, "fetch")
    spent = (await governor.sessions.get_session(ACME, session)).spent_micros
    assert spent == 250_000
    clock.advance(60)  # `paid` and `free` are exactly GRACE old: not stale yet
    assert await governor.proxy.close_stale_calls(older_than=GRACE) == 0
    clock.advance(1)
    assert await governor.proxy.close_stale_calls(older_than=GRACE) == 2

    records = await _records(governor, session_id=session)
    assert [r["details"]["phase"] for r in records] == ["admit"] * 3 + ["finish"] * 2
    unknown = {r["details"]["call_id"]: r for r in records[3:]}
    assert sorted(unknown) == sorted([paid.call_id, free.call_id])
    for admission, cost in ((paid, "0.25"), (free, "0.00")):
        record = unknown[admission.call_id]
        assert (record["tool"], record["action"], record["status"], record["flagged"]) == (
            admission.tool.exposed,
            "tools/call",
            "error",
            True,
        )
        assert record["flag_reason"].startswith(f"outcome unknown: call {admission.call_id}")
        assert record["details"] == {"phase": "finish", "call_id": admission.call_id, "outcome": "unknown"}
        assert (record["cost_usd"], record["charged_usd"]) == (cost, "0.00")  # the call may have run
    assert (await governor.sessions.get_session(ACME, session)).spent_micros == spent
    assert await _reconciles(governor, session) == Decimal("0.25")
    assert [call.call_id for call in await _open_calls(store)] == [recent.call_id]

    assert await governor.proxy.close_stale_calls(older_than=GRACE) == 0
    assert len(await _records(governor, session_id=session)) == len(records)


async def test_an_outcome_arriving_after_the_sweep_is_recorded_without_undoing_the_sweeps_settlement(
    governor: Governor, clock: FakeClock
) -> None:
    await _proxy(governor, "search")
    await governor.registry.create_policy(ACME, {"type": "tool_cost", "tool": "search", "cost_usd": "0.25"})
    session = await _session(governor, limit="1.00")
    admission = await _admit(governor, session)
    clock.advance(GRACE.total_seconds() + 1)
    assert await governor.proxy.close_stale_calls(older_than=GRACE) == 1

    late = await governor.proxy.finish_call(ACME, admission, result=None, error="timed out", latency_ms=1.0)

    assert late.record["details"]["after_sweep"] is True
    assert (late.record["status"], late.record["charged_usd"]) == ("error", "0.00")  # the cost stays kept
    assert await _reconciles(governor, session) == Decimal("0.25")


async def test_a_calls_admit_and_finish_entries_carry_one_digest_of_the_arguments_as_sent(
    governor: Governor,
) -> None:
    await _proxy(governor, "search")
    await governor.vault.store_secret(ACME, name="token", value=SECRET, scope_required="execute")
    session = await _session(governor)
    admission = await _admit(governor, session, q="{{secret:token}}")

    finished = await governor.proxy.finish_call(
        ACME, admission, result={"content": []}, error=None, latency_ms=1.0
    )

    admitted = next(r for r in await _records(governor, session_id=session) if r["action"] == "tools/call")
    expected = hashlib.sha256(canonical_bytes({"q": "{{secret:token}}"})).hexdigest()
    assert (
        admitted["details"]["arguments_sha256"] == finished.record["details"]["arguments_sha256"] == expected
    )


async def test_concurrent_sweeps_record_each_open_call_once(
    governor: Governor, store: SqlStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _proxy(governor, "search")
    session = await _session(governor)
    admitted = sorted([(await _admit(governor, session)).call_id for _ in range(5)])
    clock.advance(GRACE.total_seconds() + 1)
    sweepers = 4
    listed: list[list[OpenCall]] = []
    all_listed = anyio.Event()
    stale_calls = store.proxy.stale_calls

    async def listed_by_all(**query: Any) -> list[OpenCall]:
        """Every sweeper has the open calls before any closes one: they all race for each call."""
        calls = await stale_calls(**query)
        listed.append(calls)
        if len(listed) == sweepers:
            all_listed.set()
        await all_listed.wait()
        return calls

    monkeypatch.setattr(store.proxy, "stale_calls", listed_by_all)
    closed: list[int] = []

    async def sweep() -> None:
        closed.append(await governor.proxy.close_stale_calls(older_than=GRACE))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(sweepers):
                tg.start_soon(sweep)
    assert [len(calls) for calls in listed] == [5] * sweepers
    assert sum(closed) == 5
    finished = [r for r in await _records(governor, session_id=session) if r["details"]["phase"] == "finish"]
    assert sorted(r["details"]["call_id"] for r in finished) == admitted
    assert {r["details"]["outcome"] for r in finished} == {"unknown"}
    assert await _open_calls(store) == []
