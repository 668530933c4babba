"""End to end: `haldir login|logout|overview|status|ready|audit tail` as real processes against a real
server, and `--json` on every client command parsed as JSON."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from haldir import HaldirClient
from tests.conftest import ScratchDatabase
from tests.e2e.server import HALDIR, Server, environment, free_port, haldir, serve

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str], str]]:
    """A server with a little of everything, the environment of a client with no key or URL set (and a
    config dir of its own), and the admin key."""
    workdir = tmp_path_factory.mktemp("operator-cli")
    env = environment(workdir)
    assert haldir("migrate", "up", env=env).returncode == 0
    with serve(env, workdir) as running:
        admin = running.printed_keys()[0]
        with HaldirClient(api_key=admin, base_url=running.url) as client:
            session = client.create_session("my-bot", scopes=["read", "spend"], spend_limit=100, ttl=3600)
            for n in range(5):
                client.log_action(session["session_id"], tool="search", action=f"q{n}", cost_usd="0.10")
            client.store_secret("stripe_key", "sk_test_123")
        yield running, {**env, "XDG_CONFIG_HOME": str(workdir / "config")}, admin


def _logged_in(server: tuple[Server, dict[str, str], str], tmp_path: Path) -> dict[str, str]:
    running, env, admin = server
    env = {**env, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    login = subprocess.run(
        [HALDIR, "login", "--url", running.url, "--api-key-stdin"],
        input=admin + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert login.returncode == 0, login.stderr
    return env


def test_login_saves_the_key_for_this_user_only_and_client_commands_then_need_no_environment(
    server: tuple[Server, dict[str, str], str], tmp_path: Path
) -> None:
    env = _logged_in(server, tmp_path)
    saved = tmp_path / "config" / "haldir" / "credentials.json"

    overview = haldir("overview", "--json", env=env)
    logout = haldir("logout", env=env)
    after = haldir("overview", "--json", env=env)

    assert overview.returncode == 0, overview.stderr
    assert json.loads(overview.stdout)["tenant_id"] == "default"
    assert logout.returncode == 0
    assert not saved.exists()
    assert after.returncode == 3
    error = json.loads(after.stderr)  # one JSON line on stderr, because --json was asked for
    assert (error["code"], error["exit_code"]) == ("unauthenticated", 3)
    assert "haldir login" in error["error"]


def test_the_saved_credentials_file_is_mode_0600(
    server: tuple[Server, dict[str, str], str], tmp_path: Path
) -> None:
    _logged_in(server, tmp_path)

    saved = tmp_path / "config" / "haldir" / "credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.parent.stat().st_mode) == 0o700


def test_the_environment_wins_over_the_saved_login(
    server: tuple[Server, dict[str, str], str], tmp_path: Path
) -> None:
    env = _logged_in(server, tmp_path)

    wrong = haldir("overview", env={**env, "HALDIR_API_KEY": "hld_" + "x" * 48})

    assert wrong.returncode == 3
    assert wrong.stderr.count("\n") == 1  # errors are one line


def test_login_with_a_bad_key_saves_nothing(
    server: tuple[Server, dict[str, str], str], tmp_path: Path
) -> None:
    running, env, _ = server
    env = {**env, "XDG_CONFIG_HOME": str(tmp_path / "config")}

    refused = subprocess.run(
        [HALDIR, "login", "--url", running.url, "--api-key-stdin"],
        input="hld_" + "y" * 48 + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert refused.returncode == 3
    assert not (tmp_path / "config" / "haldir" / "credentials.json").exists()


def test_overview_draws_the_tenant_panel(server: tuple[Server, dict[str, str], str], tmp_path: Path) -> None:
    env = _logged_in(server, tmp_path)

    shown = haldir("overview", env=env)

    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    for line in ("Haldir tenant overview", "Status", "● ok", "Actions", "Spend", "$ 0.50 this month"):
        assert line in text, text
    assert "1 secrets" in text
    assert "chain ✓" in text


def test_overview_shows_use_against_the_quota_an_operator_set(
    server: tuple[Server, dict[str, str], str], tmp_path: Path
) -> None:
    env = _logged_in(server, tmp_path)
    quota = haldir(
        "tenants", "set-quota", "default", "--actions-per-month", "50000", "--agents", "10", env=env
    )
    assert quota.returncode == 0, quota.stderr

    shown = haldir("overview", env=env)  # the running server sees the new quota at its next request

    assert shown.returncode == 0, shown.stderr
    assert re.search(r"Actions\s+\d+ / 50,000\s+░+\s+0\.\d%", shown.stdout), shown.stdout
    assert re.search(r"active  ·  \d+/10 agents", shown.stdout), shown.stdout
    cleared = haldir("tenants", "set-quota", "default", "--actions-per-month", "0", "--agents", "0", env=env)
    assert cleared.returncode == 0, cleared.stderr


def test_overview_watch_redraws_in_a_terminal_and_exits_cleanly_on_ctrl_c(
    server: tuple[Server, dict[str, str], str], tmp_path: Path
) -> None:
    env = _logged_in(server, tmp_path)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [HALDIR, "overview", "--watch", "--interval", "0.3"],
        env={**env, "TERM": "xterm", "COLUMNS": "100"},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while seen.count(b"Haldir tenant overview") < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1)
            if ready:
                seen += os.read(controller, 65536)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)

    assert seen.count(b"Haldir tenant overview") >= 2, seen
    assert b"\x1b[" in seen  # redrawn in place with cursor movement, not appended as plain text
    assert code == 0
    assert b"Traceback" not in seen


def test_status_lights_every_component_and_exits_0_when_green(
    server: tuple[Server, dict[str, str], str], tmp_path: Path
) -> None:
    env = _logged_in(server, tmp_path)

    shown = haldir("status", env=env)
    as_json = haldir("status", "--json", env=env)

    assert shown.returncode == 0, shown.stdout + shown.stderr
    for name in ("api", "store", "migrations", "ledger", "signer", "webhooks", "upstreams"):
        assert name in shown.stdout
    found = json.loads(as_json.stdout)
    assert found["status"] == "green"
    assert as_json.returncode == 0


def test_status_of_an_unreachable_server_is_red_and_exits_2(tmp_path: Path) -> None:
    env = {
        **environment(tmp_path),
        "HALDIR_URL": f"http://127.0.0.1:{free_port()}",
        "HALDIR_API_KEY": "hld_x",
    }

    found = haldir("status", "--json", env=env)

    assert found.returncode == 2, found.stderr
    body = json.loads(found.stdout)
    assert body["status"] == "red"
    assert [(c["name"], c["status"]) for c in body["components"]] == [("api", "red")]


def test_ready_is_silent_and_exits_0_when_ready_and_1_when_not(
    server: tuple[Server, dict[str, str], str], tmp_path: Path
) -> None:
    running, env, _ = server
    up = {**env, "HALDIR_URL": running.url}
    down = {**env, "HALDIR_URL": f"http://127.0.0.1:{free_port()}"}

    ready, ready_json, unreachable = (
        haldir("ready", env=up),
        haldir("ready", "--json", env=up),
        haldir("ready", env=down),
    )

    assert (ready.returncode, ready.stdout, ready.stderr) == (0, "", "")
    assert json.loads(ready_json.stdout)["ready"] is True
    assert (unreachable.returncode, unreachable.stdout) == (1, "")


@pytest.mark.postgres
def test_ready_exits_1_once_the_store_is_gone(tmp_path: Path, scratch_postgres: ScratchDatabase) -> None:
    env = environment(tmp_path, database_url=scratch_postgres.url)
    assert haldir("migrate", "up", env=env).returncode == 0
    with serve(env, tmp_path) as running:
        client = {**env, "HALDIR_URL": running.url}
        assert haldir("ready", env=client).returncode == 0
        scratch_postgres.drop()
        gone = haldir("ready", "--json", env=client)

    assert gone.returncode == 1, gone.stdout
    answer = json.loads(gone.stdout)
    assert (answer["ready"], answer["status_code"]) == (False, 503), answer


def test_audit_tail_shows_the_last_entries_and_filters_by_agent(
    server: tuple[Server, dict[str, str], str], tmp_path: Path
) -> None:
    env = _logged_in(server, tmp_path)

    last = haldir("audit", "tail", "--agent", "my-bot", "-n", "3", "--json", env=env)
    table = haldir("audit", "tail", "--agent", "my-bot", env=env)
    nobody = haldir("audit", "tail", "--agent", "nobody", "--json", env=env)

    entries = [json.loads(line) for line in last.stdout.splitlines()]
    assert [e["action"] for e in entries] == ["q2", "q3", "q4"]  # the last three, oldest first
    assert all(e["agent_id"] == "my-bot" for e in entries)
    assert "q4" in table.stdout
    assert "search" in table.stdout
    assert (nobody.returncode, nobody.stdout) == (0, "")


def test_audit_tail_follow_prints_new_entries_as_they_are_appended(
    server: tuple[Server, dict[str, str], str], tmp_path: Path
) -> None:
    running, _, admin = server
    env = _logged_in(server, tmp_path)
    with subprocess.Popen(
        [HALDIR, "audit", "tail", "--follow", "--interval", "0.2", "-n", "1", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            first = json.loads(process.stdout.readline())
            with HaldirClient(api_key=admin, base_url=running.url) as client:
                session = client.create_session("follower", scopes=["read"], ttl=600)
                for n in range(3):
                    client.log_action(session["session_id"], tool="t", action=f"new{n}")
            followed = [json.loads(process.stdout.readline()) for _ in range(3)]
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()

    assert [e["action"] for e in followed] == ["new0", "new1", "new2"]
    assert [e["leaf_index"] for e in followed] == [first["leaf_index"] + n for n in (1, 2, 3)]
    assert code == 0


def test_every_client_command_answers_json_with_json(
    server: tuple[Server, dict[str, str], str], tmp_path: Path
) -> None:
    env = _logged_in(server, tmp_path)
    export = tmp_path / "audit.jsonl"
    commands = [
        ["overview"],
        ["status"],
        ["ready"],
        ["audit", "tail"],
        ["audit", "export", "--out", str(export)],
        ["audit", "verify"],
        ["approvals", "pending"],
        ["webhooks", "list"],
        ["webhooks", "deliveries"],
        ["migrate", "status"],
        ["keys", "list"],
        ["vault", "status"],
        ["vault", "generate-key"],
    ]
    for command in commands:
        done = haldir(*command, "--json", env=env)
        assert done.returncode == 0, (command, done.stderr)
        for line in done.stdout.splitlines():
            json.loads(line)
        assert done.stdout.strip(), command
    vkey = httpx.get(f"{server[0].url}/v1/audit/log-key", headers={"Authorization": f"Bearer {server[2]}"})
    offline = haldir(
        "audit", "verify", "--offline", str(export), "--key", vkey.json()["vkey"], "--json", env=env
    )
    assert json.loads(offline.stdout)["ok"] is True
