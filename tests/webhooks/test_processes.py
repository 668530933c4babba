"""Several delivery workers in separate OS processes on one store: every delivery is attempted by one of
them at a time, none is lost, and none is sent twice (the receiver answers 200 to each, at once)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from haldir.core.keys import Principal
from haldir.governor.keyring import MasterKeyring
from tests.store.processes import run_workers
from tests.webhooks.conftest import Hooks
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.anyio

PROCESSES = 3
SESSIONS = 60  # each revoked: one event, fanned out to both webhooks


async def test_workers_in_several_processes_deliver_every_event_once(
    hooks: Hooks, listener: Receiver, store_url: str, keyring: MasterKeyring, tmp_path: Path
) -> None:
    acme = Principal.operator("acme")
    for path in ("a", "b"):
        await hooks.governor.webhooks.create_webhook(
            acme, url=f"{listener.url}/{path}", events=["session.revoked"]
        )
    for _ in range(SESSIONS):
        session = await hooks.governor.sessions.create_session(acme, agent_id="bot", scopes=["read"])
        await hooks.governor.sessions.revoke_session(acme, session.value.session_id)
    listener.delay = 0.005  # a receiver that takes a moment, so that the workers' claims overlap

    master_key = keyring.newest.encode()
    module = "tests.webhooks.delivery_worker"
    outputs = await run_workers([[module, store_url, master_key] for _ in range(PROCESSES)], tmp_path)

    attempted = [json.loads(line)["attempted"] for line in outputs]
    sent = Counter((got.path, got.message_id) for got in listener.received)
    assert sum(attempted) == 2 * SESSIONS
    assert len(listener.received) == 2 * SESSIONS
    assert set(sent.values()) == {1}  # nothing twice
    assert len({got.message_id for got in listener.received}) == SESSIONS
    page = await hooks.governor.webhooks.list_deliveries(acme, status="delivered", limit=200)
    assert len(page.items) == 2 * SESSIONS
    assert all(delivery.attempts == 1 for delivery in page.items)
