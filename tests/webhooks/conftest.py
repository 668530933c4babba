"""A governor whose webhooks may reach 127.0.0.1, a delivery worker driven by a fake clock that starts at
the real time (receivers check `webhook-timestamp` against their own clock), and real receivers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import ip_network

import pytest

from haldir.core.keys import Principal
from haldir.governor import Governor
from haldir.governor.keyring import MasterKeyring
from haldir.runtime import wire
from haldir.store.sql import SqlStore
from haldir.webhooks import DeliveryWorker, HttpSender
from tests.support import FakeClock
from tests.webhooks.receiver import Receiver, receiver

LOOPBACK = (ip_network("127.0.0.0/8"),)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@dataclass
class Hooks:
    store: SqlStore
    governor: Governor
    worker: DeliveryWorker
    clock: FakeClock
    jitter: list[float]

    def principal(self, tenant: str = "acme") -> Principal:
        return Principal.operator(tenant)


@pytest.fixture
async def hooks(store: SqlStore, clock: FakeClock, keyring: MasterKeyring) -> AsyncIterator[Hooks]:
    governor = wire(store=store, clock=clock, master_keys=keyring, outbound_allow=LOOPBACK)
    await governor.vault.verify_vault_keys()
    for tenant in ("acme", "globex"):  # a tenant exists once it has a key
        await governor.keys.create_key(Principal.operator(tenant), name="t", scopes=["*"])
    jitter = [0.5]  # the middle of the ± range: each wait is exactly its schedule's value
    sender = HttpSender(outbound_allow=LOOPBACK, timeout=5)
    worker = DeliveryWorker(
        store=store.webhooks,
        webhooks=governor.webhooks,
        sender=sender,
        clock=clock,
        outbox=store.outbox,
        jitter=lambda: jitter[0],
    )
    try:
        yield Hooks(store, governor, worker, clock, jitter)
    finally:
        await sender.aclose()


@pytest.fixture
def listener() -> Iterator[Receiver]:
    with receiver() as found:
        yield found
