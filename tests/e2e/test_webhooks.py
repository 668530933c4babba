"""End to end: webhook deliveries from real `haldir serve` processes survive a kill -9 mid-delivery, and
replicas on one PostgreSQL database deliver each event once."""

from __future__ import annotations

import json
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


def test_the_webhooks_cli_adds_tests_lists_and_redelivers(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert haldir("migrate", "up", env=env).returncode == 0
    with receiver() as listener, serve(env, tmp_path) as server:
        [key] = server.printed_keys()
        client_env = {**env, "HALDIR_URL": server.url, "HALDIR_API_KEY": key}
        added = haldir(
            "webhooks",
            "add",
            listener.url,
            "--events",
            "webhook.test,session.revoked",
            "--json",
            env=client_env,
        )
        assert added.returncode == 0, added.stderr
        created = json.loads(added.stdout)
        assert created["secret"].startswith("whsec_")
        listed = haldir("webhooks", "list", "--json", env=client_env)
        assert [hook["webhook_id"] for hook in json.loads(listed.stdout)] == [created["webhook_id"]]
        assert "whsec_" not in listed.stdout
        tested = haldir("webhooks", "test", created["webhook_id"], "--json", env=client_env)
        assert tested.returncode == 0, tested.stderr
        delivery_id = json.loads(tested.stdout)["delivery_id"]
        [got] = listener.wait_for(1)
        got.verify(created["secret"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the real server records the attempt after the answer
            shown = haldir("webhooks", "deliveries", "--json", env=client_env)
            attempts = json.loads(shown.stdout)
            if attempts:
                break
            time.sleep(0.1)
        assert [(a["delivery_id"], a["attempt"], a["status_code"]) for a in attempts] == [
            (delivery_id, 1, 204)
        ]
        again = haldir("webhooks", "redeliver", delivery_id, env=client_env)
        assert again.returncode == 0, again.stderr
        assert listener.wait_for(2)[1].message_id == got.message_id
        table = haldir("webhooks", "deliveries", env=client_env)
        assert table.returncode == 0
        assert delivery_id in table.stdout
        missing = haldir("webhooks", "redeliver", "whd_nothing", env=client_env)
        assert missing.returncode == 5
        assert "no delivery" in missing.stderr
        unauthenticated = haldir("webhooks", "list", env={**client_env, "HALDIR_API_KEY": ""})
        assert unauthenticated.returncode == 3
        assert "HALDIR_API_KEY" in unauthenticated.stderr
