"""A real server and its Vault master key: generated once on first start, and a restart with a wrong or
missing key refuses to start rather than serve secrets it cannot open."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx

from haldir.core.vault import generate_master_key
from tests.e2e.server import environment, haldir, serve


def _store_and_release(url: str, key: str) -> str:
    auth = {"Authorization": f"Bearer {key}"}
    stored = httpx.post(f"{url}/v1/secrets", json={"name": "token", "value": "s3cr3t-value"}, headers=auth)
    assert stored.status_code in (200, 201), stored.text
    session = httpx.post(f"{url}/v1/sessions", json={"agent_id": "a", "scopes": ["read"]}, headers=auth)
    released = httpx.get(
        f"{url}/v1/secrets/token", headers={**auth, "X-Session-ID": session.json()["session_id"]}
    )
    assert released.status_code == 200, released.text
    return str(released.json()["value"])


def test_the_first_start_generates_a_private_master_key_and_says_so(tmp_path: Path) -> None:
    env = environment(tmp_path)
    assert haldir("migrate", "up", env=env).returncode == 0
    with serve(env, tmp_path) as server:
        key_file = tmp_path / "vault-master.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert "Generated the Vault's master key" in server.stdout.read_text()
        assert _store_and_release(server.url, server.printed_keys()[0]) == "s3cr3t-value"
    with serve(env, tmp_path) as server:  # a restart reads the same key and opens the same secrets
        assert "master key" not in server.stdout.read_text()


def test_a_restart_with_a_wrong_or_missing_key_refuses_to_start_and_says_what_to_do(tmp_path: Path) -> None:
    right = generate_master_key().encode()
    env = {**environment(tmp_path), "HALDIR_ENCRYPTION_KEY": right}
    assert haldir("migrate", "up", env=env).returncode == 0
    with serve(env, tmp_path) as server:
        api_key = server.printed_keys()[0]
        assert _store_and_release(server.url, api_key) == "s3cr3t-value"

    wrong = haldir(
        "serve", "--port", "1", env={**env, "HALDIR_ENCRYPTION_KEY": generate_master_key().encode()}
    )
    assert wrong.returncode == 8
    assert "HALDIR_ENCRYPTION_KEY" in wrong.stderr
    assert right not in wrong.stderr + wrong.stdout

    missing = haldir("serve", "--port", "1", env=environment(tmp_path))
    assert missing.returncode == 8
    assert "no key is configured" in missing.stderr
    assert not (tmp_path / "vault-master.key").exists()  # no stray key was generated over existing secrets

    with serve(env, tmp_path) as server:
        auth = {"Authorization": f"Bearer {api_key}"}
        session = httpx.post(
            f"{server.url}/v1/sessions", json={"agent_id": "a", "scopes": ["read"]}, headers=auth
        )
        released = httpx.get(
            f"{server.url}/v1/secrets/token", headers={**auth, "X-Session-ID": session.json()["session_id"]}
        )
        assert released.json()["value"] == "s3cr3t-value"
