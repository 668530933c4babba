"""Operator commands on the configured store: migrate and keys, through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from haldir.cli.app import app
from haldir.store.migrate import head_revision

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HALDIR_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HALDIR_DATABASE_URL", raising=False)
    return tmp_path


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_migrate_status_reports_pending_until_up_is_run(data_dir: Path) -> None:
    pending = runner.invoke(app, ["migrate", "status"])
    assert pending.exit_code == 1
    assert "pending" in pending.output
    assert head_revision() in _ok("migrate", "up")
    assert "up to date" in _ok("migrate", "status")
    assert "up to date" in _ok("migrate", "status")
    assert (data_dir / "haldir.db").stat().st_mode & 0o077 == 0


def test_keys_refuse_to_run_on_an_unmigrated_store(data_dir: Path) -> None:
    result = runner.invoke(app, ["keys", "list"])
    assert result.exit_code == 7
    assert "haldir migrate up" in result.output


def test_keys_create_json_prints_the_documented_fields(data_dir: Path) -> None:
    _ok("migrate", "up")
    out = _ok(
        "keys",
        "create",
        "--tenant",
        "acme",
        "--name",
        "ci",
        "--scopes",
        "sessions:write,audit:read",
        "--json",
    )
    created = json.loads(out)
    assert set(created) == {"key", "prefix", "tenant_id", "name", "scopes"}
    assert created["tenant_id"] == "acme"
    assert created["name"] == "ci"
    assert created["scopes"] == ["audit:read", "sessions:write"]
    assert created["key"].startswith(created["prefix"])

    listed = json.loads(_ok("keys", "list", "--tenant", "acme", "--json"))
    assert [k["prefix"] for k in listed] == [created["prefix"]]
    assert created["key"] not in json.dumps(listed)
    assert json.loads(_ok("keys", "list", "--json")) == []


def test_repeated_scope_options_are_combined(data_dir: Path) -> None:
    _ok("migrate", "up")
    created = json.loads(_ok("keys", "create", "-s", "sessions:read", "-s", "vault:read", "--json"))
    assert created["scopes"] == ["sessions:read", "vault:read"]


def test_keys_revoke_finds_the_tenant_by_prefix(data_dir: Path) -> None:
    _ok("migrate", "up")
    created = json.loads(_ok("keys", "create", "--tenant", "acme", "--json"))
    assert "revoked" in _ok("keys", "revoke", created["prefix"])
    listed = json.loads(_ok("keys", "list", "--tenant", "acme", "--json"))
    assert listed[0]["revoked_at"] is not None


def test_errors_are_one_line_with_the_error_class_exit_code(data_dir: Path) -> None:
    _ok("migrate", "up")
    missing = runner.invoke(app, ["keys", "revoke", "hld_missing1"])
    assert missing.exit_code == 5
    assert "no API key 'hld_missing1'" in missing.output
    assert "Traceback" not in missing.output
    bad = runner.invoke(app, ["keys", "create", "--scopes", "root", "--json"])
    assert bad.exit_code == 2
    assert "unknown API key scopes" in bad.output
    tenant = runner.invoke(app, ["keys", "create", "--tenant", "Bad Tenant!"])
    assert tenant.exit_code == 2


def test_an_unsupported_database_url_is_a_configuration_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HALDIR_DATABASE_URL", "mysql://localhost/db")
    result = runner.invoke(app, ["migrate", "status"])
    assert result.exit_code == 8
    assert "unsupported database URL" in result.output


def test_an_unreachable_store_is_one_line_and_exit_code_7(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HALDIR_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nothing")
    for command in (["migrate", "up"], ["migrate", "status"], ["keys", "list"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 7, (command, result.output)
        assert "the store did not answer" in result.output
        assert "Traceback" not in result.output


def test_tenants_set_quota_show_and_list(data_dir: Path) -> None:
    _ok("migrate", "up")
    out = _ok("tenants", "set-quota", "acme", "--actions-per-month", "50,000", "--agents", "10", "--json")
    assert json.loads(out) == {
        "tenant_id": "acme",
        "actions_per_month": 50_000,
        "agents": 10,
        "requests_per_second": None,
        "actions_this_month": 1,  # the quota change is recorded in the tenant's ledger
        "agents_active": 0,
    }
    _ok("tenants", "set-quota", "acme", "--agents", "none", "--requests-per-second", "20")
    shown = _ok("tenants", "show", "acme")
    assert "2 / 50,000" in shown
    assert "0 / unlimited" in shown
    assert "requests / second   20" in shown
    listed = json.loads(_ok("tenants", "list", "--json"))
    assert [
        (t["tenant_id"], t["actions_per_month"], t["agents"], t["requests_per_second"]) for t in listed
    ] == [("acme", 50_000, None, 20)]
    assert "acme" in _ok("tenants", "list")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agents", "ten"], "agents must be a whole number, 0 or 'none'"),
        (["--agents", "-3"], "agents must be a whole number from 1"),
        ([], "give at least one of"),
    ],
)
def test_tenants_set_quota_refuses_bad_values(data_dir: Path, args: list[str], message: str) -> None:
    _ok("migrate", "up")
    result = runner.invoke(app, ["tenants", "set-quota", "acme", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
