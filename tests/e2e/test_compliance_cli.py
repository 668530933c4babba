"""End to end: `haldir compliance evidence` from a real server, as the product description prints it, and
`haldir compliance verify` with the log's public key and no server at all."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from haldir import HaldirClient
from tests.e2e.server import HALDIR, environment, free_port, haldir, serve

pytestmark = pytest.mark.e2e


def test_the_seed_command_writes_a_pack_that_verifies_with_the_log_key_alone(tmp_path: Path) -> None:
    env = environment(tmp_path)
    assert haldir("migrate", "up", env=env).returncode == 0
    with serve(env, tmp_path) as server:
        key = server.printed_keys()[0]
        with HaldirClient(api_key=key, base_url=server.url) as client:
            session = client.create_session(agent_id="bot", scopes=["spend"], spend_limit="50")
            client.authorize_payment(session["session_id"], "12.50")
            client.log_action(session["session_id"], tool="stripe", action="charge", cost_usd="47.30")
            vkey = str(client.log_key()["vkey"])
        client_env = {**env, "HALDIR_URL": server.url, "HALDIR_API_KEY": key}
        printed = subprocess.run(
            [HALDIR, "compliance", "evidence", "--since", "2026-01-01", "--out", "evidence-q1-2026.md"],
            env=client_env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert printed.returncode == 0, printed.stderr
        as_json = haldir(
            "compliance", "evidence", "--out", str(tmp_path / "pack.json"), "--json", env=client_env
        )
        assert as_json.returncode == 0, as_json.stderr
        assert json.loads(as_json.stdout)["tenant_id"] == "default"
        online = haldir("compliance", "verify", str(tmp_path / "pack.json"), "--json", env=client_env)
        assert online.returncode == 0, online.stderr
        assert json.loads(online.stdout)["mode"] == "server"

    pack = tmp_path / "evidence-q1-2026.md"
    assert "| Spent by capped sessions (USD) | 47.30 |" in pack.read_text()
    # Offline means offline: the server is stopped, and nothing answers at HALDIR_URL.
    offline_env = {**environment(tmp_path / "elsewhere"), "HALDIR_URL": f"http://127.0.0.1:{free_port()}"}
    verified = haldir("compliance", "verify", str(pack), "--key", vkey, "--json", env=offline_env)
    assert verified.returncode == 0, verified.stderr
    result = json.loads(verified.stdout)
    assert (result["ok"], result["since"], result["tree_size"]) == (True, "2026-01-01T00:00:00Z", 2)

    pack.write_text(
        pack.read_text().replace(
            "| Payments authorized (USD) | 12.50 |", "| Payments authorized (USD) | 2.50 |"
        )
    )
    tampered = haldir("compliance", "verify", str(pack), "--key", vkey, env=offline_env)
    assert tampered.returncode == 9
    assert tampered.stderr.count("\n") == 1
    assert tampered.stderr.startswith("error: section 5 (Spend governance, CC5.2), line ")
