"""`haldir vault`: status, master key rotation in file and environment mode, and new keys."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import Result
from typer.testing import CliRunner

from haldir.cli.app import app
from haldir.core.keys import Principal
from haldir.core.vault import MasterKey, generate_master_key, parse_keyring, parse_master_key
from haldir.errors import ConfigurationError
from haldir.runtime import open_runtime
from haldir.settings import Settings
from haldir.vaultkey import KEY_FILE

runner = CliRunner()

ENV_ADVICE = (
    "a new key first in HALDIR_ENCRYPTION_KEY (haldir vault generate-key prints one), keep the old key "
    "after it, deploy that to every server, then run rotate-key"
)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A migrated SQLite store in the data dir, no master key configured."""
    monkeypatch.setenv("HALDIR_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HALDIR_DATABASE_URL", raising=False)
    monkeypatch.delenv("HALDIR_ENCRYPTION_KEY", raising=False)
    _ok("migrate", "up")
    return tmp_path


@pytest.fixture
def any_store(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The data dir, over a migrated SQLite or PostgreSQL store."""
    monkeypatch.setenv("HALDIR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HALDIR_DATABASE_URL", store_url)
    monkeypatch.delenv("HALDIR_ENCRYPTION_KEY", raising=False)
    return tmp_path


def _invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def _ok(*args: str) -> str:
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    return result.output


def _status() -> dict[str, Any]:
    found: dict[str, Any] = json.loads(_ok("vault", "status", "--json"))
    return found


def _data_keys() -> dict[int, int]:
    return {key["version"]: key["data_keys"] for key in _status()["master_keys"]}


def _file_keys(data_dir: Path) -> tuple[MasterKey, ...]:
    return parse_keyring((data_dir / KEY_FILE).read_text())


def _no_key_material(output: str, keys: tuple[MasterKey, ...] | list[MasterKey]) -> None:
    for key in keys:
        assert key.encode() not in output
        assert key.encode().rstrip("=") not in output


async def _seal(tenant: str, secrets: dict[str, str]) -> None:
    """Store secrets as a server would: the runtime with the Vault, keys generated on first start."""
    async with open_runtime(Settings(), vault=True) as runtime:
        for name, value in secrets.items():
            await runtime.governor.vault.store_secret(Principal.operator(tenant), name=name, value=value)


async def _release(tenant: str, names: list[str]) -> dict[str, str]:
    """Release secrets to a session with scope read, from a runtime opened now."""
    async with open_runtime(Settings(), vault=True) as runtime:
        governor = runtime.governor
        principal = Principal.operator(tenant)
        session = (await governor.sessions.create_session(principal, agent_id="agent", scopes=["read"])).value
        return {
            name: (await governor.vault.get_secret(principal, name, session_id=session.session_id)).value
            for name in names
        }


def seal(tenant: str, secrets: dict[str, str]) -> None:
    anyio.run(_seal, tenant, secrets)


def release(tenant: str, names: list[str]) -> dict[str, str]:
    return anyio.run(_release, tenant, names)


# status


def test_status_on_a_fresh_store_shows_no_master_key_and_creates_none(data_dir: Path) -> None:
    out = _ok("vault", "status")
    assert "no master key registered yet" in out
    assert "0 secret(s), 0 secret version(s)" in out
    assert _status() == {"key_source": None, "master_keys": [], "secrets": 0, "secret_versions": 0}
    assert not (data_dir / KEY_FILE).exists()


def test_status_after_first_start_shows_version_1_held_and_active(data_dir: Path) -> None:
    seal("acme", {"stripe": "sk_live_1", "github": "ghp_1"})
    (key,) = _file_keys(data_dir)
    found = _status()
    assert found["key_source"] == str(data_dir / KEY_FILE)
    assert found["master_keys"] == [
        {"version": 1, "check_value": key.check_value, "held": True, "data_keys": 1, "active": True}
    ]
    assert (found["secrets"], found["secret_versions"]) == (2, 2)
    out = _ok("vault", "status")
    assert key.check_value in out
    assert "active" in out
    assert "2 secret(s), 2 secret version(s)" in out
    _no_key_material(out, [key])


# rotate-key, file mode


def test_rotate_key_puts_a_new_key_first_and_rewraps_every_data_key(any_store: Path) -> None:
    seal("acme", {"stripe": "sk_live_acme"})
    seal("globex", {"stripe": "sk_live_globex", "github": "ghp_globex"})
    (old,) = _file_keys(any_store)

    out = _ok("vault", "rotate-key")

    new, kept = _file_keys(any_store)
    assert kept == old
    assert (any_store / KEY_FILE).stat().st_mode & 0o077 == 0
    assert "version 2" in out
    assert new.check_value in out
    assert "rewrapped 2 data key(s)" in out
    assert "0 data keys" in out
    _no_key_material(out, [new, old])
    found = _status()
    assert found["master_keys"] == [
        {"version": 1, "check_value": old.check_value, "held": True, "data_keys": 0, "active": False},
        {"version": 2, "check_value": new.check_value, "held": True, "data_keys": 2, "active": True},
    ]
    assert release("acme", ["stripe"]) == {"stripe": "sk_live_acme"}
    assert release("globex", ["stripe", "github"]) == {"stripe": "sk_live_globex", "github": "ghp_globex"}


def test_rotating_twice_makes_version_3_and_secrets_still_open(data_dir: Path) -> None:
    seal("acme", {"stripe": "sk_live_acme"})
    _ok("vault", "rotate-key")
    assert "version 3" in _ok("vault", "rotate-key")
    keys = _file_keys(data_dir)
    assert len(keys) == 3
    assert _data_keys() == {1: 0, 2: 0, 3: 1}
    assert _status()["master_keys"][2]["check_value"] == keys[0].check_value
    assert release("acme", ["stripe"]) == {"stripe": "sk_live_acme"}


def test_old_keys_can_leave_the_file_once_no_data_key_uses_them(data_dir: Path) -> None:
    seal("acme", {"stripe": "sk_live_acme"})
    _ok("vault", "rotate-key")
    new, _ = _file_keys(data_dir)
    (data_dir / KEY_FILE).write_text(f"{new.encode()}\n")
    assert release("acme", ["stripe"]) == {"stripe": "sk_live_acme"}
    held = [key["held"] for key in _status()["master_keys"]]
    assert held == [False, True]


def test_rotate_key_without_a_key_file_says_to_start_the_server_first(data_dir: Path) -> None:
    result = _invoke("vault", "rotate-key")
    assert result.exit_code == 8
    assert "no key file" in result.output
    assert "Start the server first" in result.output
    assert "Traceback" not in result.output
    # No key was generated: beside the store there are only its own files (change counter, writer locks).
    names = sorted(path.name for path in data_dir.iterdir())
    assert names[0] == "haldir.db"
    assert all(name.startswith("haldir.db-") for name in names[1:]), names


def test_rotate_key_refuses_a_key_file_that_does_not_open_the_store_and_leaves_it_alone(
    data_dir: Path,
) -> None:
    seal("acme", {"stripe": "sk_live_acme"})
    (old,) = _file_keys(data_dir)
    stranger = generate_master_key()
    (data_dir / KEY_FILE).write_text(f"{stranger.encode()}\n")
    result = _invoke("vault", "rotate-key")
    assert result.exit_code == 8
    assert old.check_value in result.output
    _no_key_material(result.output, [old, stranger])
    assert _file_keys(data_dir) == (stranger,)
    assert [key["version"] for key in _status()["master_keys"]] == [1]


def test_rotate_key_finishes_a_rotation_that_stopped_after_writing_the_key_file(data_dir: Path) -> None:
    seal("acme", {"stripe": "sk_live_acme"})
    (old,) = _file_keys(data_dir)
    written = generate_master_key()
    (data_dir / KEY_FILE).write_text(f"{written.encode()}\n{old.encode()}\n")
    (data_dir / f"{KEY_FILE}.new").write_text("left by a rotate-key that stopped\n")

    assert "rewrapped 1 data key(s)" in _ok("vault", "rotate-key")

    assert _file_keys(data_dir) == (written, old)
    assert _status()["master_keys"][1]["check_value"] == written.check_value
    assert release("acme", ["stripe"]) == {"stripe": "sk_live_acme"}
    # The next rotation is an ordinary one, past the temporary file the stopped one left behind.
    _ok("vault", "rotate-key")
    assert len(_file_keys(data_dir)) == 3


@pytest.fixture
def rotation_lock(data_dir: Path) -> Iterator[None]:
    descriptor = os.open(data_dir / f"{KEY_FILE}.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    yield
    os.close(descriptor)


def test_a_second_rotate_key_on_the_same_key_file_is_refused(data_dir: Path, rotation_lock: None) -> None:
    seal("acme", {"stripe": "sk_live_acme"})
    result = _invoke("vault", "rotate-key")
    assert result.exit_code == 6
    assert "another 'haldir vault rotate-key' is running" in result.output
    assert len(_file_keys(data_dir)) == 1


@pytest.mark.anyio
async def test_a_server_opened_before_rotation_keeps_serving_and_wraps_new_tenants_with_the_new_key(
    data_dir: Path,
) -> None:
    await _seal("acme", {"stripe": "sk_live_acme"})
    async with open_runtime(Settings(), vault=True) as server:
        governor = server.governor
        acme = Principal.operator("acme")
        session = (await governor.sessions.create_session(acme, agent_id="agent", scopes=["read"])).value

        result = await anyio.to_thread.run_sync(_invoke, "vault", "rotate-key")
        assert result.exit_code == 0, result.output

        # acme's data key was never unwrapped by this server: it now needs version 2, from the file.
        released = await governor.vault.get_secret(acme, "stripe", session_id=session.session_id)
        assert released.value == "sk_live_acme"
        globex = Principal.operator("globex")
        await governor.vault.store_secret(globex, name="stripe", value="sk_live_globex")
        wrapped = await server.store.vault.data_key("globex")
        assert wrapped is not None
        assert wrapped.master_version == 2
    assert await _release("globex", ["stripe"]) == {"stripe": "sk_live_globex"}
    assert await anyio.to_thread.run_sync(_data_keys) == {1: 0, 2: 2}


# rotate-key, environment mode


def test_rotate_key_with_the_same_single_environment_key_says_what_to_do(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_master_key()
    monkeypatch.setenv("HALDIR_ENCRYPTION_KEY", key.encode())
    seal("acme", {"stripe": "sk_live_acme"})
    result = _invoke("vault", "rotate-key")
    assert result.exit_code == 8
    assert ENV_ADVICE in " ".join(result.output.split())
    _no_key_material(result.output, [key])
    assert _data_keys() == {1: 1}
    assert not (data_dir / KEY_FILE).exists()


def test_rotate_key_with_a_new_environment_key_first_rewraps_under_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = generate_master_key(), generate_master_key()
    monkeypatch.setenv("HALDIR_ENCRYPTION_KEY", old.encode())
    seal("acme", {"stripe": "sk_live_acme"})
    seal("globex", {"stripe": "sk_live_globex"})
    monkeypatch.setenv("HALDIR_ENCRYPTION_KEY", f"{new.encode()},{old.encode()}")

    out = _ok("vault", "rotate-key")

    assert "version 2" in out
    assert new.check_value in out
    assert "rewrapped 2 data key(s)" in out
    _no_key_material(out, [old, new])
    assert _status()["master_keys"] == [
        {"version": 1, "check_value": old.check_value, "held": True, "data_keys": 0, "active": False},
        {"version": 2, "check_value": new.check_value, "held": True, "data_keys": 2, "active": True},
    ]
    assert release("acme", ["stripe"]) == {"stripe": "sk_live_acme"}
    # Nothing is wrapped under the old key any more: it may leave HALDIR_ENCRYPTION_KEY.
    monkeypatch.setenv("HALDIR_ENCRYPTION_KEY", new.encode())
    assert release("globex", ["stripe"]) == {"stripe": "sk_live_globex"}
    again = _invoke("vault", "rotate-key")
    assert again.exit_code == 8
    assert ENV_ADVICE in " ".join(again.output.split())
    assert not (data_dir / KEY_FILE).exists()


# keys that do not match the store


def test_a_different_environment_key_than_the_one_that_sealed_the_secrets_is_refused(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sealing, other = generate_master_key(), generate_master_key()
    monkeypatch.setenv("HALDIR_ENCRYPTION_KEY", sealing.encode())
    seal("acme", {"stripe": "sk_live_acme"})
    monkeypatch.setenv("HALDIR_ENCRYPTION_KEY", other.encode())

    with pytest.raises(ConfigurationError, match="HALDIR_ENCRYPTION_KEY") as refused:
        release("acme", ["stripe"])
    assert sealing.check_value in refused.value.message
    _no_key_material(refused.value.message, [sealing, other])

    result = _invoke("vault", "rotate-key")
    assert result.exit_code == 8
    assert "HALDIR_ENCRYPTION_KEY" in result.output
    _no_key_material(result.output, [sealing, other])
    assert [(key["held"], key["data_keys"]) for key in _status()["master_keys"]] == [(False, 1)]


def test_a_deleted_key_file_is_refused_not_replaced_while_secrets_exist(data_dir: Path) -> None:
    seal("acme", {"stripe": "sk_live_acme"})
    (key,) = _file_keys(data_dir)
    (data_dir / KEY_FILE).unlink()

    with pytest.raises(ConfigurationError, match="HALDIR_ENCRYPTION_KEY") as refused:
        release("acme", ["stripe"])
    assert str(data_dir / KEY_FILE) in refused.value.message
    assert key.check_value in refused.value.message
    assert not (data_dir / KEY_FILE).exists()

    result = _invoke("vault", "rotate-key")
    assert result.exit_code == 8
    assert "no key file" in result.output
    assert _status()["master_keys"][0]["held"] is False


def test_a_malformed_key_file_is_refused_without_echoing_its_keys(data_dir: Path) -> None:
    seal("acme", {"stripe": "sk_live_acme"})
    (key,) = _file_keys(data_dir)
    (data_dir / KEY_FILE).write_text(f"{key.encode()}\n{key.encode()[:20]}\n")
    for command in (["vault", "status"], ["vault", "rotate-key"]):
        result = _invoke(*command)
        assert result.exit_code == 8, (command, result.output)
        assert "haldir vault generate-key" in result.output
        _no_key_material(result.output, [key])
        assert key.encode()[:20] not in result.output


# generate-key


def test_generate_key_prints_one_new_master_key_and_nothing_else() -> None:
    first, second = _ok("vault", "generate-key"), _ok("vault", "generate-key")
    assert first.endswith("\n")
    assert first.count("\n") == 1
    assert parse_master_key(first).check_value != parse_master_key(second).check_value
    assert parse_keyring(f"{first.strip()},{second.strip()}")
