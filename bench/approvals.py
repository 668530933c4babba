"""What an approval-rule check adds to a request no rule holds: in-process, over a real SQLite store.

Every payment authorization and governed call asks `Approvals.holding` whether a rule holds it. The
tenant's rules come from memory (invalidated by the change counter, as policies are), so the check is the
rule matching alone. This times it with 0, 10 and 100 rules none of which hold the request, and, for
scale, a whole `authorize_payment` (which pays a durable commit) with and without 100 rules.

Run `python bench/approvals.py`; results in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from common import machine
from haldir.clock import SystemClock
from haldir.core.approvals import PAYMENT, Subject
from haldir.core.keys import Principal
from haldir.governor import Governor
from haldir.runtime import wire
from haldir.store.migrate import upgrade
from haldir.store.sql import SqlStore

TENANT = Principal.operator("bench")


async def _rules(governor: Governor, count: int) -> None:
    for old in await governor.approvals.list_rules(TENANT):
        await governor.approvals.delete_rule(TENANT, old.rule_id)
    for number in range(count):  # none holds the request: other agents, other tools, high thresholds
        spec = [
            {"type": "spend_over", "threshold": 1_000_000},
            {"type": "tool", "tool": f"send_{number}_*"},
            {"type": "agent", "agent_id": f"other-{number}"},
        ][number % 3]
        await governor.approvals.create_rule(TENANT, spec)


async def _check_us(governor: Governor, rounds: int) -> float:
    subject = Subject(PAYMENT, "ses_bench", "buyer", "payments", None, 1_000_000)
    await governor.approvals.holding(subject, tenant_id="bench")  # load the cache
    start = time.perf_counter()
    for _ in range(rounds):
        held = await governor.approvals.holding(subject, tenant_id="bench")
    elapsed = time.perf_counter() - start
    assert held == []
    return elapsed / rounds * 1e6


async def _authorize_us(governor: Governor, session_id: str, rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        await governor.budgets.authorize_payment(TENANT, session_id=session_id, amount="0.01")
    return (time.perf_counter() - start) / rounds * 1e6


async def main(rounds: int, payments: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        store = SqlStore.open(url)
        try:
            await upgrade(store)
            governor = wire(store=store, clock=SystemClock())
            await governor.keys.create_key(TENANT, name="bench", scopes=["*"])
            session = (
                await governor.sessions.create_session(
                    TENANT, agent_id="buyer", scopes=["spend"], spend_limit=Decimal(1_000_000)
                )
            ).value
            print("| rules (none holding) | check µs/request | authorize_payment µs/request |")
            print("|---:|---:|---:|")
            for count in (0, 10, 100):
                await _rules(governor, count)
                check = await _check_us(governor, rounds)
                authorize = await _authorize_us(governor, session.session_id, payments)
                print(f"| {count} | {check:.2f} | {authorize:.0f} |")
        finally:
            await store.close()
    print()
    print(machine(os.getloadavg()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100_000, help="Rule checks timed per row.")
    parser.add_argument("--payments", type=int, default=500, help="Authorizations timed per row.")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.payments))
