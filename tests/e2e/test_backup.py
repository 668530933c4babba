"""Backup and restore end to end: `haldir backup` while a real server writes, `haldir restore` into a new
data dir, and a server on the restored dir answers with the same ledger, secrets and budgets."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from haldir.core.merkle import verify_consistency
from tests.e2e.server import environment, haldir, serve

pytestmark = pytest.mark.e2e


def _write_until(
    url: str, auth: dict[str, str], session_id: str, stop: threading.Event, acked: list[str]
) -> None:
    with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
        while not stop.is_set():
            made = client.post("/v1/audit", json={"session_id": session_id, "tool": "t", "action": "a"})
            assert made.status_code == 201, made.text
            acked.append(made.json()["entry_id"])
            time.sleep(0.02)  # a steady writer, not one that starves the backup command of CPU


def test_a_backup_taken_while_serving_restores_into_a_new_data_dir_that_verifies_and_opens(
    tmp_path: Path,
) -> None:
    live, restored = tmp_path / "live", tmp_path / "restored"
    env = environment(live)
    assert haldir("migrate", "up", env=env).returncode == 0
    with serve(env, live) as server:
        auth = {"Authorization": f"Bearer {server.printed_keys()[0]}"}
        client = httpx.Client(base_url=server.url, headers=auth, timeout=30)
        assert client.post("/v1/secrets", json={"name": "token", "value": "s3cr3t-value"}).status_code == 201
        made = client.post(
            "/v1/sessions", json={"agent_id": "a", "scopes": ["read", "spend"], "spend_limit": "10"}
        )
        session_id = made.json()["session_id"]
        paid = client.post("/v1/payments/authorize", json={"session_id": session_id, "amount": "2.50"})
        assert paid.status_code == 201, paid.text
        stop, acked = threading.Event(), []
        writer = threading.Thread(target=_write_until, args=(server.url, auth, session_id, stop, acked))
        writer.start()
        try:
            taken = haldir(
                "backup",
                "--out",
                str(tmp_path / "b.tar"),
                "--keys-out",
                str(tmp_path / "k.tar"),
                "--json",
                env=env,
            )
            written_during = len(acked)
        finally:
            stop.set()
            writer.join(timeout=60)
        assert taken.returncode == 0, taken.stderr
        assert written_during > 0  # the server was writing while the copy was taken
        backup = json.loads(taken.stdout)
        [ledger] = backup["ledgers"]
        size, root = ledger["tree_size"], ledger["root_hash"]
        later = client.get("/v1/audit/tree-head").json()  # the live log extends the backed-up one
        link = client.get("/v1/audit/consistency-proof", params={"first": size, "second": later["tree_size"]})
        verify_consistency(
            first=size,
            second=later["tree_size"],
            first_root=bytes.fromhex(root),
            second_root=bytes.fromhex(later["root_hash"]),
            proof=[bytes.fromhex(node) for node in link.json()["proof"]],
        )
        spent_then = client.get(f"/v1/sessions/{session_id}").json()["spent"]
        client.close()
    assert backup["keys"] == ["vault-master.key", "log-signing.key"]
    with (tmp_path / "b.tar").open("rb") as handle:
        assert b"s3cr3t-value" not in handle.read()

    env_restored = environment(restored)
    done = haldir(
        "restore",
        str(tmp_path / "b.tar"),
        "--data-dir",
        str(restored),
        "--keys",
        str(tmp_path / "k.tar"),
        "--json",
        env=env_restored,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["verified"], result["vault"], result["entries"]) == (True, "opens", size)

    with serve(env_restored, restored) as server:
        client = httpx.Client(base_url=server.url, headers=auth, timeout=30)
        assert client.get("/v1/audit/verify").json() == {"ok": True, "tree_size": size, "first_bad": None}
        head = client.get("/v1/audit/tree-head").json()
        assert (head["tree_size"], head["root_hash"]) == (size, root)
        released = client.get("/v1/secrets/token", headers={"X-Session-ID": session_id})
        assert released.json()["value"] == "s3cr3t-value"
        session = client.get(f"/v1/sessions/{session_id}").json()
        charged = client.get("/v1/audit/spend", params={"session_id": session_id}).json()["total_usd"]
        assert Decimal(session["spent"]) == Decimal(spent_then) == Decimal(charged) == Decimal("2.50")
        again = haldir(
            "restore", str(tmp_path / "b.tar"), "--data-dir", str(restored), "--force", env=env_restored
        )
        client.close()
    assert again.returncode == 6  # a serving store is never replaced, not even with --force
    assert "in use" in again.stderr
