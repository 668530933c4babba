"""End to end: webhook deliveries from real `haldir serve` processes survive a kill -9 mid-delivery, and
replicas on one PostgreSQL database deliver each event once."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import environment, haldir, serve
from tests.webhooks.receiver import receiver

pytestmark = pytest.mark.e2e


def _env(tmp_path: Path, database_url: str | None = None) -> dict[str, str]:
    env = environment(tmp_path, database_url)
    env.update(
        HALDIR_OUTBOUND_ALLOW="127.0.0.0/8",
        HALDIR_WEBHOOK_TIMEOUT_SECONDS="2",
        HALDIR_WEBHOOK_LEASE_SECONDS="3",  # how long a dead server's delivery waits to be sent again
        HALDIR_WEBHOOK_POLL_SECONDS="0.2",
    )
    return env


def test_a_delivery_in_flight_when_the_server_is_killed_arrives_after_restart(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert haldir("migrate", "up", env=env).returncode == 0
    with receiver() as listener:
        listener.hold = threading.Event()  # the first request is held open until the server is dead
        with serve(env, tmp_path) as server:
            [key] = server.printed_keys()
            auth = {"Authorization": f"Bearer {key}"}
            created = httpx.post(
                f"{server.url}/v1/webhooks", json={"url": listener.url, "events": ["*"]}, headers=auth
            ).json()
            queued = httpx.post(f"{server.url}/v1/webhooks/{created['webhook_id']}/test", headers=auth)
            assert queued.status_code == 202, queued.text
            [first] = listener.wait_for(1)
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(timeout=15)
        listener.hold = None
        with serve(env, tmp_path) as again:
            arrived = listener.wait_for(2)
            assert arrived[1].message_id == first.message_id  # deduplicable by webhook-id
            arrived[1].verify(str(created["secret"]))
            deliveries = httpx.get(f"{again.url}/v1/webhooks/deliveries", headers=auth).json()["deliveries"]
            [delivery] = deliveries
            assert delivery["event_id"] == first.message_id
            assert delivery["status"] in ("delivered", "pending")  # the second attempt may still be recording


@pytest.mark.postgres
def test_two_replicas_on_postgres_deliver_each_test_event_once(postgres_url: str, tmp_path: Path) -> None:
    env = _env(tmp_path, postgres_url)
    with receiver() as listener, serve(env, tmp_path) as first, serve(env, tmp_path) as second:
        [key] = first.printed_keys() + second.printed_keys()
        auth = {"Authorization": f"Bearer {key}"}
        created = httpx.post(
            f"{first.url}/v1/webhooks", json={"url": listener.url, "events": ["*"]}, headers=auth
        ).json()
        count = 40
        for n in range(count):  # half through each replica
            url = (first if n % 2 else second).url
            queued = httpx.post(f"{url}/v1/webhooks/{created['webhook_id']}/test", headers=auth)
            assert queued.status_code == 202, queued.text
        arrived = listener.wait_for(count)
        assert set(Counter(got.message_id for got in arrived).values()) == {1}
        for got in arrived:
            got.verify(str(created["secret"]))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # polling real servers until every outcome is recorded
            listed = httpx.get(
                f"{first.url}/v1/webhooks/deliveries?status=delivered&limit=100", headers=auth
            ).json()["deliveries"]
            if len(listed) == count:
                break
            time.sleep(0.1)
        assert len(listed) == count
        assert all(delivery["attempts"] == 1 for delivery in listed)
        assert len(listener.received) == count  # nothing sent twice
