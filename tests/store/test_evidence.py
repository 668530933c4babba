"""The compliance evidence pack's numbers are the store's, on both backends: a tenant's activity inside the
period counts, what came before or after it does not, another tenant's never; and the manifest check ties a
pack to the ledger as it grows."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from haldir.core.checkpoints import Signer, generate_signer
from haldir.core.evidence import render_json, verify_evidence
from haldir.core.evidence_markdown import render_markdown
from haldir.core.keys import Principal
from haldir.core.webhooks import Attempt
from haldir.errors import BudgetExceeded, InsufficientScope, InvalidRequest, ScopeDenied
from haldir.governor import Governor
from haldir.governor.keyring import MasterKeyring
from haldir.runtime import wire
from haldir.store.schema import ledger_entries
from haldir.store.sql import SqlStore
from tests.support import FakeClock

pytestmark = pytest.mark.anyio

HOOK = "https://1.1.1.1:9/hooks/secret-token?sig=abc"
ADMIN = Principal("acme", "hld_AdminKey", frozenset({"*"}))
DECIDER = Principal("acme", "hld_Decider1", frozenset({"*"}))


@pytest.fixture
def signer() -> Signer:
    return generate_signer("haldir.test")


@pytest.fixture
async def gov(store: SqlStore, clock: FakeClock, keyring: MasterKeyring, signer: Signer) -> Governor:
    built = wire(store=store, clock=clock, master_keys=keyring, log_signer=signer, log_origin="haldir.test")
    await built.vault.verify_vault_keys()
    return built


async def _activity(gov: Governor, principal: Principal, *, big: bool) -> None:
    """Some of everything, for a tenant: a key, a capped session that pays and logs, a refusal."""
    await gov.keys.create_key(principal, name="ci", scopes=["audit:read"])
    session = (
        await gov.sessions.create_session(
            principal, agent_id="bot", scopes=["spend"], spend_limit=Decimal(50)
        )
    ).value
    await gov.budgets.authorize_payment(principal, session_id=session.session_id, amount="10")
    await gov.budgets.log_action(
        principal, session_id=session.session_id, tool="t", action="a", cost_usd="60" if big else "1"
    )


async def _deliver(store: SqlStore, clock: FakeClock, outcomes: list[tuple[int | None, bool]]) -> None:
    """Claim the due deliveries and record one attempt each: (status code, whether a retry is due)."""
    now = clock.now()
    claimed = await store.webhooks.claim(now=now, until=now + timedelta(minutes=1), limit=10)
    assert len(claimed) == len(outcomes)
    for claim, (code, retry) in zip(claimed, outcomes, strict=True):
        attempt = Attempt(
            1, now, code, 5, None if code else "refused", now + timedelta(minutes=5) if retry else None
        )
        assert await store.webhooks.record_attempt(claim, attempt, retries=0, disabled_reason=lambda _: "x")


async def test_the_pack_counts_what_the_store_holds_in_the_period_and_nothing_else(
    gov: Governor, store: SqlStore, clock: FakeClock, signer: Signer
) -> None:
    other = Principal("other", "hld_OtherKey", frozenset({"*"}))
    old = (await gov.keys.create_key(ADMIN, name="old", scopes=["admin:read"])).value.key
    await _activity(gov, ADMIN, big=False)  # before the period
    await _activity(gov, other, big=True)
    clock.advance(3600)
    since = clock.now()

    # In the period.
    await gov.keys.revoke_key(ADMIN, old.prefix)
    await gov.keys.create_key(ADMIN, name="deployer", scopes=["proxy:write", "sessions:write"])
    capped = (
        await gov.sessions.create_session(ADMIN, agent_id="buyer", scopes=["spend"], spend_limit=Decimal(20))
    ).value
    await gov.sessions.create_session(ADMIN, agent_id="reader", scopes=["read"])
    uncapped = (await gov.sessions.create_session(ADMIN, agent_id="idle", scopes=["read"])).value
    pid = capped.session_id
    captured = (await gov.budgets.authorize_payment(ADMIN, session_id=pid, amount="10")).value.payment
    await gov.budgets.capture_payment(ADMIN, captured.payment_id, amount="7.25")
    voided = (await gov.budgets.authorize_payment(ADMIN, session_id=pid, amount="5")).value.payment
    await gov.budgets.void_payment(ADMIN, voided.payment_id)
    await gov.budgets.authorize_payment(ADMIN, session_id=pid, amount="3.10")
    with pytest.raises(BudgetExceeded):
        await gov.budgets.authorize_payment(ADMIN, session_id=pid, amount="100")
    with pytest.raises(ScopeDenied):  # denied, but not by the budget
        await gov.budgets.authorize_payment(ADMIN, session_id=uncapped.session_id, amount="1")
    await gov.budgets.log_action(
        ADMIN, session_id=pid, tool="shop", action="buy", cost_usd="15"
    )  # over budget
    await gov.approvals.create_rule(ADMIN, {"type": "tool", "tool": "wire_*"})
    lapsing = await gov.approvals.request_approval(ADMIN, session_id=pid, tool="lapse")
    clock.advance(16 * 60)  # past the 15 minutes a request waits for a decision
    approved = await gov.approvals.request_approval(ADMIN, session_id=pid, tool="a")
    denied = await gov.approvals.request_approval(ADMIN, session_id=pid, tool="b")
    await gov.approvals.request_approval(ADMIN, session_id=pid, tool="c")
    await gov.approvals.approve(DECIDER, approved.approval_id)
    await gov.approvals.deny(DECIDER, denied.approval_id)
    hook = (await gov.webhooks.create_webhook(ADMIN, url=HOOK, events=["*"])).webhook
    for _ in range(3):
        await gov.webhooks.test_webhook(ADMIN, hook.webhook_id)
    await _deliver(store, clock, [(200, False), (500, False), (None, True)])
    clock.advance(60)
    until = clock.now()

    # After the period: none of it counts, though it is in the log the pack's checkpoint signs.
    clock.advance(60)
    await _activity(gov, ADMIN, big=True)
    await gov.webhooks.test_webhook(ADMIN, hook.webhook_id)
    generated = clock.now()

    pack = await gov.evidence.compliance_evidence(ADMIN, since=since, until=until)
    facts = {section["id"]: section["facts"] for section in pack["sections"]}

    identity = facts["identity"]
    assert (identity["tenant_id"], identity["log_origin"]) == ("acme", "haldir.test/acme")
    assert identity["generated_at"] == _ts(generated)
    assert (identity["period_since"], identity["period_until"]) == (_ts(since), _ts(until))

    keys = await store.list_keys("acme")
    access = facts["access_control"]
    assert [key["prefix"] for key in access["keys"]] == [key.prefix for key in keys]
    assert access["keys_total"] == len(keys) == 4  # old, ci, deployer, and ci again after the period
    assert (access["keys_revoked"], access["keys_revoked_in_period"], access["keys_created_in_period"]) == (
        1,
        1,
        1,
    )
    assert "key_hash" not in json.dumps(access)

    spend = facts["spend_governance"]
    assert spend["sessions_created_in_period"] == 3
    assert (spend["sessions_with_spend_cap"], spend["spend_caps_usd"]) == (1, "20.00")
    stored = await store.get_session("acme", pid)
    assert stored is not None
    assert spend["spent_by_capped_sessions_usd"] == f"{Decimal(stored.spent_micros) / 10**6:.2f}"
    assert (spend["payments_captured"], spend["payments_captured_usd"]) == (1, "7.25")
    assert (spend["payments_voided"], spend["payments_voided_usd"]) == (1, "5.00")
    assert (spend["payments_authorized"], spend["payments_authorized_usd"]) == (1, "3.10")
    assert spend["budget_refusals_in_period"] == 1
    in_period = await gov.ledger.spend(ADMIN, since=since, until=until)
    assert spend["charged_in_period_usd"] == f"{in_period.total:.2f}"

    audit = facts["audit_trail"]
    rows = await _ledger_rows(store, "acme")
    inside = [row for row in rows if since <= row["created_at"] < until]
    assert audit["entries_in_period"] == len(inside)
    assert (audit["first_leaf_in_period"], audit["last_leaf_in_period"]) == (
        inside[0]["leaf_index"],
        inside[-1]["leaf_index"],
    )
    assert audit["flagged_in_period"] == sum(row["flagged"] for row in inside) == 1  # the cost over budget
    assert audit["denied_in_period"] == sum(row["status"] == "denied" for row in inside) == 2
    assert audit["entries_total"] == len(rows) == await store.ledger.size("acme")
    assert (audit["integrity_verified"], audit["integrity_problem"]) == (True, None)

    approvals = facts["human_approvals"]
    assert approvals["requested_in_period"] == 4
    assert (
        approvals["pending"],
        approvals["approved_unused"],
        approvals["denied"],
        approvals["expired"],
    ) == (1, 1, 1, 1)
    assert [rule["tool"] for rule in approvals["rules"]] == ["wire_*"]
    assert lapsing.status == "pending"  # as stored: the pack counts it expired, as the API would show it

    alerting = facts["outbound_alerting"]
    assert (alerting["webhooks_total"], alerting["webhooks_enabled"]) == (1, 1)
    assert alerting["webhooks"][0]["endpoint"] == "https://1.1.1.1:9"  # never the path or query
    assert (
        alerting["deliveries_in_period"],
        alerting["delivered"],
        alerting["failed"],
        alerting["pending"],
    ) == (3, 1, 1, 1)
    assert (alerting["attempts_in_period"], alerting["delivery_success_percent"]) == (3, "50.00")

    encryption = facts["encryption"]
    assert encryption["secret_cipher"] == "AES-256-GCM"
    assert [key["version"] for key in encryption["master_keys"]] == sorted(await store.vault.master_keys())

    verified = verify_evidence(render_json(pack), signer.verifier)
    assert verified.checkpoint.tree_size == audit["entries_total"]
    assert verify_evidence(render_markdown(pack), signer.verifier).digest == verified.digest


async def test_vault_keys_and_secrets_are_the_tenant_s_with_their_rotation_dates(
    gov: Governor, store: SqlStore, clock: FakeClock
) -> None:
    await gov.vault.store_secret(ADMIN, name="stripe", value="sk_1", scope_required="read")
    clock.advance(10)
    await gov.vault.store_secret(ADMIN, name="stripe", value="sk_2", scope_required="read")
    await gov.vault.store_secret(
        Principal("other", None, frozenset({"*"})), name="x", value="y", scope_required="read"
    )
    clock.advance(10)
    pack = await gov.evidence.compliance_evidence(ADMIN)
    encryption = pack["sections"][2]["facts"]
    assert (encryption["secrets"], encryption["secret_versions"]) == (1, 2)
    data_key = await store.vault.data_key("acme")
    assert data_key is not None
    assert encryption["current_data_key_version"] == data_key.version
    assert encryption["data_keys"] == [
        {
            "version": data_key.version,
            "master_version": data_key.master_version,
            "created_at": _ts(data_key.created_at),
        }
    ]
    assert encryption["secret_versions_on_older_data_keys"] == 0


async def test_the_manifest_check_ties_a_pack_to_the_ledger_as_it_grows(
    gov: Governor, clock: FakeClock
) -> None:
    await _activity(gov, ADMIN, big=False)
    clock.advance(1)
    pack = json.loads(render_json(await gov.evidence.compliance_evidence(ADMIN)))
    reader = Principal("acme", "hld_Auditor1", frozenset({"audit:read"}))
    first = await gov.evidence.check_evidence_manifest(reader, pack)
    assert (first.valid, first.signed_by_log_key, first.consistent, first.problem) == (True, True, True, None)
    assert first.digest == pack["signature"]["digest"]

    await _activity(gov, ADMIN, big=True)
    later = await gov.evidence.check_evidence_manifest(reader, pack)
    assert (later.valid, later.consistent) == (True, True)
    assert later.tree_size > (later.pack_tree_size or 0)
    assert later.proof

    pack["sections"][4]["facts"]["budget_refusals_in_period"] += 1
    tampered = await gov.evidence.check_evidence_manifest(reader, pack)
    assert (tampered.valid, tampered.signed_by_log_key, tampered.consistent) == (False, False, None)
    assert tampered.problem
    assert "section 5 (Spend governance, CC5.2), field budget_refusals_in_period" in tampered.problem


async def test_another_tenant_cannot_tie_a_pack_to_its_own_ledger(gov: Governor, clock: FakeClock) -> None:
    await _activity(gov, ADMIN, big=False)
    clock.advance(1)
    pack = await gov.evidence.compliance_evidence(ADMIN)
    other = Principal("other", "hld_OtherKey", frozenset({"*"}))
    await gov.keys.create_key(other, name="auditor", scopes=["audit:read"])
    found = await gov.evidence.check_evidence_manifest(other, pack)
    assert (found.valid, found.signed_by_log_key, found.consistent) == (False, True, None)
    assert found.problem == "the pack is of log haldir.test/acme, not of this tenant's (haldir.test/other)"


async def test_a_pack_needs_admin_read_and_a_period_that_has_happened(
    gov: Governor, clock: FakeClock
) -> None:
    with pytest.raises(InsufficientScope):
        await gov.evidence.compliance_evidence(replace(ADMIN, scopes=frozenset({"audit:read"})))
    with pytest.raises(InvalidRequest, match="until is after now"):
        await gov.evidence.compliance_evidence(ADMIN, until=clock.now() + timedelta(days=1))
    with pytest.raises(InvalidRequest, match="must not be after until"):
        await gov.evidence.compliance_evidence(
            ADMIN, since=clock.now(), until=clock.now() - timedelta(seconds=1)
        )


async def test_a_tampered_ledger_is_reported_in_the_pack_not_hidden(
    gov: Governor, store: SqlStore, clock: FakeClock
) -> None:
    await _activity(gov, ADMIN, big=False)
    clock.advance(1)
    async with store.write_transaction() as conn:
        await conn.execute(
            sa.update(ledger_entries)
            .where(ledger_entries.c.tenant_id == "acme", ledger_entries.c.leaf_index == 1)
            .values(record=sa.func.replace(ledger_entries.c.record, '"bot"', '"b0t"'))
        )
    audit = (await gov.evidence.compliance_evidence(ADMIN))["sections"][3]["facts"]
    assert audit["integrity_verified"] is False
    assert audit["integrity_problem"].startswith("leaf 1 (aud_")


async def _ledger_rows(store: SqlStore, tenant_id: str) -> list[dict[str, Any]]:
    async with store.read_connection() as conn:
        rows = await conn.execute(
            sa.select(ledger_entries)
            .where(ledger_entries.c.tenant_id == tenant_id)
            .order_by(ledger_entries.c.leaf_index)
        )
        return [dict(row._mapping) for row in rows]


def _ts(moment: datetime) -> str:
    from haldir.core.ledger import timestamp_text

    return timestamp_text(moment)
