"""End to end: `haldir audit export` from a real server, `haldir audit verify --offline` with none."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from haldir import HaldirClient
from haldir.core.export import CSV_COLUMNS
from tests.e2e.server import Server, environment, free_port, haldir, serve

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """A server with five logged actions, and the environment of a client command that reaches it."""
    workdir = tmp_path_factory.mktemp("audit-cli")
    env = environment(workdir)
    assert haldir("migrate", "up", env=env).returncode == 0
    with serve(env, workdir) as server:
        key = server.printed_keys()[0]
        with HaldirClient(api_key=key, base_url=server.url) as client:
            session = client.create_session(agent_id="bot", scopes=["execute"], spend_limit="1000")
            for i in range(5):
                client.log_action(
                    session_id=session["session_id"],
                    tool="stripe",
                    action="charge",
                    cost_usd="29.99",
                    details={"charge": f"ch_{i}", "formula": "=1+1"},
                )
            vkey = str(client.log_key()["vkey"])
        yield server, {**env, "HALDIR_URL": server.url, "HALDIR_API_KEY": key, "VKEY": vkey}


def test_a_jsonl_export_verifies_offline_and_any_tampered_line_is_named(
    logged: tuple[Server, dict[str, str]], tmp_path: Path
) -> None:
    _, env = logged
    out = tmp_path / "audit.jsonl"
    exported = haldir("audit", "export", "--format", "jsonl", "--out", str(out), env=env)
    assert exported.returncode == 0, exported.stderr
    assert "wrote 5 entries" in exported.stderr
    lines = out.read_text().splitlines(keepends=True)
    assert len(lines) == 6
    assert [json.loads(line)["leaf_index"] for line in lines[:5]] == [0, 1, 2, 3, 4]
    assert "checkpoint" in json.loads(lines[5])

    # Offline means offline: no URL of a live server, no API key.
    env = {**environment(tmp_path), "HALDIR_URL": f"http://127.0.0.1:{free_port()}", "VKEY": env["VKEY"]}
    verified = haldir("audit", "verify", "--offline", str(out), "--key", env["VKEY"], env=env)
    assert verified.returncode == 0, verified.stderr
    assert "ok: 5 entries, checkpoint verified" in verified.stdout
    pinned = haldir(
        "audit", "verify", "--offline", str(out), "--key", env["VKEY"], "--origin", "haldir.local/x", env=env
    )
    assert pinned.returncode == 9
    assert "origin" in pinned.stderr

    victim = json.loads(lines[2])["record"]["entry_id"]
    out.write_text("".join([*lines[:2], lines[2].replace("29.99", "19.99"), *lines[3:]]))
    tampered = haldir("audit", "verify", "--offline", str(out), "--key", env["VKEY"], env=env)
    assert tampered.returncode == 9
    assert f"line 3 ({victim})" in tampered.stderr
    out.write_text("".join(lines[:4] + lines[5:]))
    truncated = haldir("audit", "verify", "--offline", str(out), "--key", env["VKEY"], env=env)
    assert truncated.returncode == 9
    assert "covers 5 entries, the export holds 4" in truncated.stderr


def test_a_csv_export_has_a_header_and_a_row_per_entry(
    logged: tuple[Server, dict[str, str]], tmp_path: Path
) -> None:
    _, env = logged
    on_server = haldir("audit", "verify", env=env)
    assert on_server.returncode == 0, on_server.stderr
    assert "ok: 5 entries, verified by the server" in on_server.stdout
    out = tmp_path / "audit.csv"
    exported = haldir("audit", "export", "--format", "csv", "--out", str(out), env=env)
    assert exported.returncode == 0, exported.stderr
    with out.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    body = [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]
    assert [row["leaf_index"] for row in body] == ["0", "1", "2", "3", "4"]
    assert {row["cost_usd"] for row in body} == {"29.99"}
    assert json.loads(body[0]["details"]) == {"charge": "ch_0", "formula": "=1+1"}

    later = tmp_path / "later.csv"
    window = ["--since", "2999-01-01T00:00:00Z"]
    assert haldir("audit", "export", "-f", "csv", "-o", str(later), *window, env=env).returncode == 0
    assert later.read_text().splitlines() == [",".join(CSV_COLUMNS)]
    refused = haldir("audit", "export", "-f", "jsonl", "-o", str(later), *window, env=env)
    assert refused.returncode == 2
    assert "--format csv only" in refused.stderr


def test_client_commands_say_what_is_missing(tmp_path: Path) -> None:
    env = environment(tmp_path)
    out = str(tmp_path / "x.jsonl")
    no_key = haldir("audit", "export", "--out", out, env=env)
    assert no_key.returncode == 3
    assert "HALDIR_API_KEY" in no_key.stderr
    nobody = {**env, "HALDIR_URL": f"http://127.0.0.1:{free_port()}", "HALDIR_API_KEY": "hld_x"}
    unreachable = haldir("audit", "export", "--out", out, env=nobody)
    assert unreachable.returncode == 7
    assert "cannot reach the Haldir server" in unreachable.stderr
    assert not Path(out).exists()
    nowhere = haldir("audit", "export", "--out", str(tmp_path / "no" / "such.jsonl"), env=nobody)
    assert nowhere.returncode == 2
    assert "cannot write" in nowhere.stderr
    bad_key = haldir("audit", "verify", "--offline", __file__, "--key", "nope", env=env)
    assert bad_key.returncode == 2
    assert "not a verifier key" in bad_key.stderr


def test_an_export_of_a_tampered_store_fails_and_leaves_no_file(tmp_path: Path) -> None:
    env = environment(tmp_path)
    assert haldir("migrate", "up", env=env).returncode == 0
    with serve(env, tmp_path) as server:
        key = server.printed_keys()[0]
        with HaldirClient(api_key=key, base_url=server.url) as client:
            session = client.create_session(agent_id="bot", scopes=["execute"], spend_limit="1000")
            entries = [
                client.log_action(session_id=session["session_id"], tool="t", action="a", cost_usd="5")
                for _ in range(3)
            ]
        with sqlite3.connect(tmp_path / "haldir.db") as db:
            db.execute(
                "UPDATE ledger_entries SET record = replace(record, '5.00', '0.01') WHERE entry_id = ?",
                (entries[1]["entry_id"],),
            )
        out = tmp_path / "audit.jsonl"
        client_env = {**env, "HALDIR_URL": server.url, "HALDIR_API_KEY": key}
        exported = haldir("audit", "export", "--out", str(out), env=client_env)
    assert exported.returncode == 9, exported.stderr
    assert f"line 2 ({entries[1]['entry_id']})" in exported.stderr
    assert list(tmp_path.glob("audit.jsonl*")) == []
