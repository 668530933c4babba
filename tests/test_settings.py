"""Settings come from HALDIR_* variables, read when asked, never at import."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from haldir.settings import Settings


def test_custom_scopes_are_read_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALDIR_CUSTOM_SCOPES", "stripe, github,")
    assert Settings().custom_scopes == ("stripe", "github")


def test_malformed_custom_scope_names_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALDIR_CUSTOM_SCOPES", "Stripe")
    with pytest.raises(ValidationError, match="lowercase"):
        Settings()


def test_the_default_store_is_sqlite_in_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HALDIR_DATABASE_URL", raising=False)
    monkeypatch.setenv("HALDIR_DATA_DIR", str(tmp_path))
    assert Settings().store_url == f"sqlite:///{tmp_path.resolve() / 'haldir.db'}"


def test_a_database_url_selects_that_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALDIR_DATABASE_URL", "postgresql://db.internal/haldir")
    assert Settings().store_url == "postgresql://db.internal/haldir"


def test_importing_haldir_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import os

    reads: list[str] = []
    original = os.environ.get

    def spy(key: str, default: object = None) -> object:
        reads.append(key)
        return original(key, default)  # type: ignore[arg-type]

    monkeypatch.setattr(os.environ, "get", spy)
    import haldir.http.app

    importlib.reload(haldir.http.app)
    assert [key for key in reads if key.startswith("HALDIR_")] == []


def test_only_the_operators_tenant_may_run_command_upstreams_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HALDIR_STDIO_TENANTS", raising=False)
    monkeypatch.delenv("HALDIR_STDIO_COMMANDS", raising=False)
    assert Settings().stdio_tenants == ("default",)
    assert Settings().stdio_commands == ()


def test_stdio_tenants_and_commands_are_read_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALDIR_STDIO_TENANTS", "default, acme,")
    monkeypatch.setenv("HALDIR_STDIO_COMMANDS", "npx, /usr/local/bin/uvx")
    assert Settings().stdio_tenants == ("default", "acme")
    assert Settings().stdio_commands == ("npx", "/usr/local/bin/uvx")


def test_an_empty_stdio_tenant_list_allows_no_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALDIR_STDIO_TENANTS", "")
    assert Settings().stdio_tenants == ()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("HALDIR_STDIO_TENANTS", "default,Acme Corp", "tenant ids"),
        ("HALDIR_STDIO_COMMANDS", "npx,bin/uvx", "absolute path in normal form"),
        ("HALDIR_STDIO_COMMANDS", "/usr/local/bin/../bin/uvx", "absolute path in normal form"),
    ],
)
def test_malformed_stdio_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_a_webhook_lease_no_longer_than_the_timeout_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALDIR_WEBHOOK_TIMEOUT_SECONDS", "10")
    monkeypatch.setenv("HALDIR_WEBHOOK_LEASE_SECONDS", "10")
    with pytest.raises(ValidationError, match="must be longer than webhook_timeout_seconds"):
        Settings()
    monkeypatch.setenv("HALDIR_WEBHOOK_LEASE_SECONDS", "11")
    assert Settings().webhook_lease_seconds == 11
