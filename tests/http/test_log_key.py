"""The log signing key: generated once and private (also when workers start together), or configured; pinned
so no replica signs with another."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from haldir.core.checkpoints import generate_signer
from haldir.errors import ConfigurationError
from haldir.http.app import create_app
from haldir.logkey import KEY_FILE, load_log_signer
from haldir.settings import Settings
from haldir.vaultkey import KEY_FILE as VAULT_KEY_FILE
from haldir.vaultkey import load_master_keys

pytestmark = pytest.mark.anyio


def test_a_generated_key_is_written_once_with_owner_only_permissions(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first, created = load_log_signer(settings)
    again, created_again = load_log_signer(settings)
    assert (created, created_again) == (True, False)
    assert first.vkey == again.vkey
    key_file = tmp_path / "data" / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().startswith("PRIVATE+KEY+haldir.local+")


def test_a_configured_key_is_used_and_must_be_named_for_the_origin(tmp_path: Path) -> None:
    signer = generate_signer("logs.example.com")
    settings = Settings(
        data_dir=tmp_path, log_origin="logs.example.com", log_signing_key=SecretStr(signer.skey)
    )
    assert load_log_signer(settings)[0].vkey == signer.vkey
    assert not (tmp_path / KEY_FILE).exists()
    with pytest.raises(ConfigurationError, match="HALDIR_LOG_ORIGIN"):
        load_log_signer(Settings(data_dir=tmp_path, log_signing_key=SecretStr(signer.skey)))
    with pytest.raises(ConfigurationError, match="not a signing key"):
        load_log_signer(Settings(data_dir=tmp_path, log_signing_key=SecretStr("hld_not_a_key")))


async def test_a_server_with_another_log_key_refuses_to_start(tmp_path: Path, store_url: str) -> None:
    first = Settings(data_dir=tmp_path / "a", database_url=store_url)
    app = create_app(first)
    async with app.router.lifespan_context(app):
        ours = load_log_signer(first)[0].vkey
        pinned = await app.state.store.ledger.record_log_key("another+00000000+AA==", at=datetime.now(UTC))
        assert pinned == ours  # the first server pinned its key, and a later one cannot replace it
    other = Settings(data_dir=tmp_path / "b", database_url=store_url)  # a replica that generated its own
    replica = create_app(other)
    with pytest.raises(ConfigurationError, match="HALDIR_LOG_SIGNING_KEY"):
        async with replica.router.lifespan_context(replica):
            pass
    same = Settings(
        data_dir=tmp_path / "c",
        database_url=store_url,
        log_signing_key=SecretStr((tmp_path / "a" / KEY_FILE).read_text().strip()),
        encryption_key=SecretStr((tmp_path / "a" / "vault-master.key").read_text().strip()),
    )
    twin = create_app(same)
    async with twin.router.lifespan_context(twin):
        assert twin.state.governor is not None


def test_workers_starting_together_on_a_new_data_dir_all_load_the_one_key_generated(tmp_path: Path) -> None:
    """`haldir serve --workers N` on a first start: every worker's lifespan loads both keys at once."""
    rounds, workers = 20, 8
    for round_ in range(rounds):
        settings = Settings(data_dir=tmp_path / f"data-{round_}")
        start = threading.Barrier(workers)

        def load(settings: Settings = settings, start: threading.Barrier = start) -> tuple[str, bool, bool]:
            start.wait()
            signer, made_signer = load_log_signer(settings)
            keyring, made_keyring = load_master_keys(settings)
            assert keyring is not None
            return signer.vkey + keyring.newest.encode(), made_signer, made_keyring

        with ThreadPoolExecutor(workers) as pool:
            loaded = list(pool.map(lambda _: load(), range(workers)))
        assert len({keys for keys, _, _ in loaded}) == 1  # one signer and one master key, for all
        assert sum(made for _, made, _ in loaded) == 1
        assert sum(made for _, _, made in loaded) == 1
        files = sorted(path.name for path in settings.data_dir.iterdir())
        assert files == sorted([KEY_FILE, VAULT_KEY_FILE])  # no temporary file left behind
        assert {(settings.data_dir / name).stat().st_mode & 0o777 for name in files} == {0o600}
