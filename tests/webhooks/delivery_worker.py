"""One webhook delivery worker in its own OS process, started by tests/webhooks/test_processes.py.

`python -m tests.webhooks.delivery_worker URL MASTER_KEY` opens the store, prints `ready`, waits for
`go`, then fans out and sends until no delivery is left pending, and prints how many it attempted.
"""

from __future__ import annotations

import sys
from ipaddress import ip_network

import anyio
import anyio.to_thread
import sqlalchemy as sa

from haldir.clock import SystemClock
from haldir.core.vault import parse_master_key
from haldir.governor.keyring import MasterKeyring
from haldir.logging import configure_logging
from haldir.runtime import wire
from haldir.store.schema import events, webhook_deliveries
from haldir.store.sql import SqlStore
from haldir.webhooks import DeliveryWorker, HttpSender
from tests.store.processes import report, started

RUN_LIMIT_S = 60.0
IDLE_S = 0.05  # waiting for the other process's leases to end: a real process, not a test's clock


async def _left(store: SqlStore) -> int:
    async with store.read_connection() as conn:
        pending = (
            await conn.execute(sa.select(sa.func.count()).where(webhook_deliveries.c.status == "pending"))
        ).scalar()
        unfanned = (
            await conn.execute(sa.select(sa.func.count()).where(events.c.delivered_at.is_(None)))
        ).scalar()
    return int(pending or 0) + int(unfanned or 0)


async def deliver_all(url: str, master_key: str) -> dict[str, int]:
    store = SqlStore.open(url, pool_size=4)
    allow = (ip_network("127.0.0.0/8"),)
    governor = wire(
        store=store,
        clock=SystemClock(),
        master_keys=MasterKeyring([parse_master_key(master_key)], source="the test keyring"),
        outbound_allow=allow,
    )
    sender = HttpSender(outbound_allow=allow)
    worker = DeliveryWorker(
        store=store.webhooks, webhooks=governor.webhooks, sender=sender, clock=SystemClock(), concurrency=16
    )
    attempted = 0
    try:
        async with started(store):
            with anyio.fail_after(RUN_LIMIT_S):
                while True:
                    done = await worker.step()
                    attempted += done
                    if done == 0:
                        if await _left(store) == 0:
                            break
                        await anyio.sleep(IDLE_S)
    finally:
        await sender.aclose()
    return {"attempted": attempted}


def main() -> None:
    url, master_key = sys.argv[1:]
    configure_logging(level="warning", json=True, stream=sys.stderr)  # stdout carries the result
    report(lambda: deliver_all(url, master_key))


if __name__ == "__main__":
    main()
