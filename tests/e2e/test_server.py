"""End to end: real `haldir` processes, the way `make run` starts them."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import environment, haldir, serve

pytestmark = pytest.mark.e2e


def test_serve_refuses_an_unmigrated_store_and_says_what_to_do(tmp_path: Path) -> None:
    result = haldir("serve", "--port", "1", env=environment(tmp_path))
    assert result.returncode == 7
    assert "haldir migrate up" in result.stderr


def test_first_start_prints_a_working_admin_key_once(tmp_path: Path) -> None:
    env = environment(tmp_path)
    assert haldir("migrate", "up", env=env).returncode == 0
    with serve(env, tmp_path) as server:
        keys = server.printed_keys()
        assert len(set(keys)) == 1
        auth = {"Authorization": f"Bearer {keys[0]}"}
        created = httpx.post(
            f"{server.url}/v1/sessions", json={"agent_id": "a", "scopes": ["read"]}, headers=auth
        )
        assert created.status_code == 201, created.text
        check = httpx.post(
            f"{server.url}/v1/sessions/{created.json()['session_id']}/check",
            json={"scope": "read"},
            headers=auth,
        )
        assert check.json()["allowed"] is True
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(timeout=15) == 0

    with serve(env, tmp_path) as again:
        assert again.printed_keys() == []
        listed = httpx.get(f"{again.url}/v1/sessions", headers=auth)
        assert [s["session_id"] for s in listed.json()["sessions"]] == [created.json()["session_id"]]


@pytest.mark.postgres
def test_two_replicas_on_postgres_bootstrap_once_and_share_idempotency(
    postgres_url: str, tmp_path: Path
) -> None:
    env = environment(tmp_path, postgres_url)
    with serve(env, tmp_path) as first, serve(env, tmp_path) as second:
        printed = [server.printed_keys() for server in (first, second)]
        assert sorted(map(len, printed))[0] == 0, "exactly one replica creates and prints the bootstrap key"
        keys = sorted(set(printed[0] + printed[1]))
        assert len(keys) == 1
        headers = {"Authorization": f"Bearer {keys[0]}", "Idempotency-Key": "replicated-1"}
        body = {"agent_id": "agent-1", "scopes": ["read"], "spend_limit": "5"}

        def send(i: int) -> httpx.Response:
            url = (first if i % 2 else second).url
            return httpx.post(f"{url}/v1/sessions", json=body, headers=headers, timeout=30)

        with ThreadPoolExecutor(max_workers=25) as pool:
            responses = list(pool.map(send, range(50)))
        assert {r.status_code for r in responses} == {201}
        assert len({r.json()["session_id"] for r in responses}) == 1
        assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 49
        listed = httpx.get(f"{first.url}/v1/sessions", headers={"Authorization": f"Bearer {keys[0]}"})
        assert len(listed.json()["sessions"]) == 1


def test_metrics_of_every_worker_process_are_summed_in_one_scrape(tmp_path: Path) -> None:
    env = {**environment(tmp_path), "HALDIR_METRICS": "true", "HALDIR_WORKERS": "2"}
    assert haldir("migrate", "up", env=env).returncode == 0
    sent = 0
    with serve(env, tmp_path) as server:
        counting = tmp_path / "prometheus"
        # New connections until both workers have answered some (the kernel picks which accepts each;
        # on busy cores one worker may take them all: the sum must be right either way).
        while sent < 40 or (len(list(counting.glob("counter_*.db"))) < 2 and sent < 400):
            with httpx.Client(base_url=server.url) as one:
                assert one.get("/livez").status_code == 200
            sent += 1
        texts = [httpx.get(f"{server.url}/metrics").text for _ in range(4)]  # whichever worker answers

    assert 1 <= len(list(counting.glob("counter_*.db"))) <= 2
    for text in texts:
        livez = [line for line in text.splitlines() if 'route="/livez"' in line and "requests_total" in line]
        assert livez == [f'haldir_http_requests_total{{method="GET",route="/livez",status="200"}} {sent}.0']
