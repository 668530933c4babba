"""Approvals decided and used from several OS processes at once, on both stores: one decision wins, and
an approved request runs exactly once."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from haldir.core.keys import Principal
from haldir.errors import ApprovalRequired
from haldir.governor import Governor
from tests.store.processes import run_workers
from tests.support import FakeClock

pytestmark = pytest.mark.anyio

ACME = Principal.operator("acme")


@pytest.fixture(autouse=True)
def _now(clock: FakeClock) -> None:
    """The workers run on the system clock: the test's approvals are made at the same time."""
    clock.moment = datetime.now(UTC)


async def _held(governor: Governor, amount: str) -> tuple[str, str]:
    """A session and its payment of `amount`, held by a spend_over rule: the session and approval ids."""
    await governor.keys.create_key(ACME, name="setup", scopes=["*"])
    if not await governor.approvals.list_rules(ACME):
        await governor.approvals.create_rule(ACME, {"type": "spend_over", "threshold": 100})
    session = (
        await governor.sessions.create_session(
            ACME, agent_id="buyer", scopes=["spend"], spend_limit=Decimal(1000)
        )
    ).value
    with pytest.raises(ApprovalRequired) as held:
        await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount=amount)
    return session.session_id, str(held.value.details["approval_id"])


async def test_deciders_in_several_processes_make_exactly_one_decision(
    governor: Governor, store_url: str, tmp_path: Path
) -> None:
    _, approval_id = await _held(governor, "150")

    commands = [["tests.store.approval_worker", store_url, "acme", "decide", approval_id, "6"]] * 3
    results = [json.loads(line) for line in await run_workers(commands, tmp_path)]

    assert sum(result.get("ok", 0) for result in results) == 1, results
    assert sum(result.get("conflict", 0) for result in results) == 17, results
    decided = await governor.approvals.get_approval(ACME, approval_id)
    assert decided.status in ("approved", "denied")


async def test_retries_of_an_approved_payment_in_several_processes_run_it_exactly_once(
    governor: Governor, store_url: str, tmp_path: Path
) -> None:
    session_id, approval_id = await _held(governor, "150")
    approver = await governor.keys.create_key(ACME, name="approver", scopes=["approvals:write"])
    decider = Principal(
        tenant_id="acme", key_prefix=approver.value.key.prefix, scopes=frozenset({"approvals:write"})
    )
    await governor.approvals.approve(decider, approval_id)

    commands = [["tests.store.approval_worker", store_url, "acme", "retry", session_id, "150", "6"]] * 3
    results = [json.loads(line) for line in await run_workers(commands, tmp_path)]

    assert sum(result.get("ok", 0) for result in results) == 1
    assert sum(result.get("approval_required", 0) for result in results) == 17
    session = await governor.sessions.get_session(ACME, session_id)
    assert session.spent_micros == 150_000_000
    assert (await governor.approvals.get_approval(ACME, approval_id)).status == "consumed"
    assert (await governor.ledger.verify_log(ACME)).ok
