"""`haldir backup` and `haldir restore` in-process: the round trip, and every refusal clean and complete
(nothing is put in place when a check fails)."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import stat
import tarfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import Result
from typer.testing import CliRunner

from haldir.backup import DATABASE, MANIFEST
from haldir.cli.app import app
from haldir.core.checkpoints import generate_signer
from haldir.core.keys import Principal
from haldir.core.vault import generate_master_key
from haldir.logkey import load_log_signer
from haldir.runtime import open_runtime
from haldir.settings import Settings

runner = CliRunner()


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir with a migrated SQLite store, its key files, secrets and a signed checkpoint in two
    tenants' ledgers."""
    data_dir = tmp_path / "live"
    monkeypatch.setenv("HALDIR_DATA_DIR", str(data_dir))
    for name in ("HALDIR_DATABASE_URL", "HALDIR_ENCRYPTION_KEY", "HALDIR_LOG_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    _ok("migrate", "up")

    async def fill() -> None:
        settings = Settings()
        signer, _ = load_log_signer(settings)
        async with open_runtime(settings, vault=True, log_signer=signer) as runtime:
            for tenant in ("acme", "globex"):
                for version in range(3):
                    await runtime.governor.vault.store_secret(
                        Principal.operator(tenant), name="stripe", value=f"sk_{tenant}_{version}"
                    )
            await runtime.governor.ledger.checkpoint(Principal.operator("acme"))

    anyio.run(fill)
    return data_dir


def _invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, list(args), env=env)


def _ok(*args: str) -> dict[str, Any]:
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if "--json" in args else {}


def _backup(tmp_path: Path, *, keys: bool = True) -> dict[str, Any]:
    extra = ["--keys-out", str(tmp_path / "keys.tar")] if keys else []
    return _ok("backup", "--out", str(tmp_path / "backup.tar"), *extra, "--json")


def _error(result: Result, code: str, exit_code: int) -> str:
    assert result.exit_code == exit_code, result.output
    error = json.loads(result.stderr)
    assert (error["code"], error["exit_code"]) == (code, exit_code)
    assert "Traceback" not in result.output
    return str(error["error"])


def test_a_backup_restores_into_a_new_data_dir_with_the_same_ledgers_and_keys(
    live: Path, tmp_path: Path
) -> None:
    taken = _backup(tmp_path)
    target = tmp_path / "restored"

    restored = _ok(
        "restore",
        str(tmp_path / "backup.tar"),
        "--data-dir",
        str(target),
        "--keys",
        str(tmp_path / "keys.tar"),
        "--json",
    )

    assert [(ledger["tenant_id"], ledger["tree_size"]) for ledger in taken["ledgers"]] == [
        ("acme", 3),
        ("globex", 3),
    ]
    assert restored["ledgers"] == taken["ledgers"]
    assert (restored["verified"], restored["vault"], restored["missing_master_key_versions"]) == (
        True,
        "opens",
        [],
    )
    assert sorted(taken["keys"]) == restored["keys"] == ["log-signing.key", "vault-master.key"]
    for name in ("vault-master.key", "log-signing.key"):
        assert (target / name).read_bytes() == (live / name).read_bytes()
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((target / DATABASE).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "backup.tar").stat().st_mode) == 0o600
    with tarfile.open(tmp_path / "backup.tar") as tar:
        assert tar.getnames() == [MANIFEST, DATABASE]  # no key beside the ciphertext
    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["haldir.db", "log-signing.key", "vault-master.key"]
    )


def test_without_the_keys_the_restore_verifies_and_says_the_vault_stays_sealed(
    live: Path, tmp_path: Path
) -> None:
    _backup(tmp_path, keys=False)

    restored = _ok("restore", str(tmp_path / "backup.tar"), "--data-dir", str(tmp_path / "r"), "--json")

    assert (restored["vault"], restored["missing_master_key_versions"]) == ("sealed", [1])
    assert any("--keys" in note for note in restored["notes"])


def test_an_existing_store_is_replaced_only_with_force(live: Path, tmp_path: Path) -> None:
    _backup(tmp_path)
    before = (live / DATABASE).read_bytes()

    refused = _invoke("restore", str(tmp_path / "backup.tar"), "--json")

    assert "--force" in _error(refused, "conflict", 6)
    assert (live / DATABASE).read_bytes() == before
    forced = _ok("restore", str(tmp_path / "backup.tar"), "--force", "--json")
    assert forced["verified"] is True


def test_a_damaged_backup_is_refused_and_nothing_is_restored(live: Path, tmp_path: Path) -> None:
    _backup(tmp_path)
    raw = bytearray((tmp_path / "backup.tar").read_bytes())
    raw[-20_000] ^= 0xFF  # inside the database member
    (tmp_path / "damaged.tar").write_bytes(bytes(raw))

    refused = _invoke("restore", str(tmp_path / "damaged.tar"), "--data-dir", str(tmp_path / "r"), "--json")

    assert "damaged" in _error(refused, "invalid_request", 2)
    assert list((tmp_path / "r").iterdir()) == []


def test_an_edited_ledger_in_a_consistent_backup_fails_verification(live: Path, tmp_path: Path) -> None:
    _backup(tmp_path)
    with tarfile.open(tmp_path / "backup.tar") as tar:
        manifest = json.load(tar.extractfile(MANIFEST))  # type: ignore[arg-type]
        (tmp_path / "copy.db").write_bytes(tar.extractfile(DATABASE).read())  # type: ignore[union-attr]
    with sqlite3.connect(tmp_path / "copy.db") as conn:
        conn.execute(
            "UPDATE ledger_entries SET record = replace(record, 'stripe', 'strife') WHERE leaf_index = 1"
        )
    data = (tmp_path / "copy.db").read_bytes()
    manifest["database"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    with tarfile.open(tmp_path / "edited.tar", "w") as tar:
        for name, payload in ((MANIFEST, json.dumps(manifest).encode()), (DATABASE, data)):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

    refused = _invoke("restore", str(tmp_path / "edited.tar"), "--data-dir", str(tmp_path / "r"), "--json")

    assert "leaf 1" in _error(refused, "ledger_tampered", 9)
    assert list((tmp_path / "r").iterdir()) == []


def test_keys_of_another_deployment_are_refused(
    live: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _backup(tmp_path)
    other = tmp_path / "other"
    monkeypatch.setenv("HALDIR_DATA_DIR", str(other))
    _ok("migrate", "up")
    anyio.run(_start_vault)
    _ok(
        "backup",
        "--out",
        str(tmp_path / "other.tar"),
        "--keys-out",
        str(tmp_path / "other-keys.tar"),
        "--json",
    )

    refused = _invoke(
        "restore",
        str(tmp_path / "backup.tar"),
        "--data-dir",
        str(tmp_path / "r"),
        "--keys",
        str(tmp_path / "other-keys.tar"),
        "--json",
    )

    assert "another deployment" in _error(refused, "configuration_error", 8)
    assert list((tmp_path / "r").iterdir()) == []


async def _start_vault() -> None:
    settings = Settings()
    async with open_runtime(settings, vault=True, log_signer=load_log_signer(settings)[0]):
        pass


def test_a_file_that_is_not_a_backup_is_refused_cleanly(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")

    refused = _invoke("restore", str(tmp_path / "notes.txt"), "--data-dir", str(tmp_path / "r"), "--json")

    assert "is not a Haldir backup (haldir backup --out)" in _error(refused, "invalid_request", 2)


def test_postgresql_is_backed_up_with_pg_dump_and_the_command_says_so(tmp_path: Path) -> None:
    env = {"HALDIR_DATABASE_URL": "postgresql://db.invalid/haldir", "HALDIR_DATA_DIR": str(tmp_path)}

    refused = _invoke("backup", "--out", str(tmp_path / "b.tar"), "--json", env=env)
    restore = _invoke("restore", str(tmp_path / "b.tar"), "--json", env=env)

    assert "pg_dump" in _error(refused, "configuration_error", 8)
    assert restore.exit_code == 2  # no such file: click refuses before anything runs


def test_the_keys_never_go_into_the_backup_file_itself(live: Path, tmp_path: Path) -> None:
    refused = _invoke(
        "backup", "--out", str(tmp_path / "b.tar"), "--keys-out", str(tmp_path / "b.tar"), "--json"
    )

    assert "apart" in _error(refused, "invalid_request", 2)


def test_a_restore_beside_another_deployments_signing_key_says_the_server_will_refuse(
    live: Path, tmp_path: Path
) -> None:
    _backup(tmp_path, keys=False)
    target = tmp_path / "r"
    target.mkdir()
    (target / "log-signing.key").write_text(generate_signer("haldir.local").skey + "\n")

    restored = _ok("restore", str(tmp_path / "backup.tar"), "--data-dir", str(target), "--json")

    assert any("refuses to start" in note for note in restored["notes"])


def test_a_store_that_was_never_migrated_is_not_backed_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HALDIR_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HALDIR_DATABASE_URL", raising=False)
    sqlite3.connect(tmp_path / DATABASE).close()

    refused = _invoke("backup", "--out", str(tmp_path / "b.tar"), "--json")

    assert "haldir migrate up" in _error(refused, "configuration_error", 8)
    assert not (tmp_path / "b.tar").exists()


def test_a_key_file_in_the_way_stops_the_restore_before_anything_is_placed(
    live: Path, tmp_path: Path
) -> None:
    _backup(tmp_path)
    target = tmp_path / "r"
    target.mkdir()
    (target / "vault-master.key").write_text(generate_master_key().encode() + "\n")

    refused = _invoke(
        "restore",
        str(tmp_path / "backup.tar"),
        "--data-dir",
        str(target),
        "--keys",
        str(tmp_path / "keys.tar"),
        "--json",
    )

    assert "--force" in _error(refused, "conflict", 6)
    assert sorted(p.name for p in target.iterdir()) == ["vault-master.key"]
