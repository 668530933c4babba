"""`haldir vault`: the Vault's master keys on the configured store: status, rotation and new keys."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from haldir.cli.operator import open_governor, run
from haldir.cli.output import AsJson
from haldir.core.keys import Principal
from haldir.core.vault import MasterKey, generate_master_key
from haldir.errors import ConfigurationError, Conflict
from haldir.governor import DEFAULT_TENANT, Governor
from haldir.governor.keyring import MasterKeyring
from haldir.governor.vault import Rotation, VaultStatus
from haldir.runtime import open_runtime
from haldir.settings import Settings
from haldir.vaultkey import key_file, load_master_keys, write_key_file

app = typer.Typer(
    help="The Vault's master keys: status and rotation (operator commands on the configured store).",
    no_args_is_help=True,
)
console = Console(highlight=False, soft_wrap=True)  # lines a script can grep, unbroken


_ENV = "HALDIR_ENCRYPTION_KEY"
_POOL = 2
_OPERATOR = Principal.operator(DEFAULT_TENANT)  # master keys belong to the deployment, not to a tenant


@app.command("status")
def status(as_json: AsJson = False) -> None:
    """Show the master key versions, which of them this config holds, and what each still wraps."""
    settings = Settings()
    keyring, _ = load_master_keys(settings, generate=False)

    async def work() -> VaultStatus:
        async with open_governor(settings) as gov:  # without the Vault: status must work with a wrong key
            return await gov.vault.vault_status(_OPERATOR)

    found = _held_by(run(work), keyring)
    newest = max((key.version for key in found.master_keys), default=None)
    if as_json:
        print(json.dumps(_status_json(found, newest)))
        return
    source = found.key_source or f"none ({_ENV} is unset and {key_file(settings)} does not exist)"
    console.print(f"master keys from: {escape(source)}")
    if not found.master_keys:
        console.print("no master key registered yet: the server registers one when it first starts")
    else:
        table = Table("version", "check value", "held", "data keys", "active")
        for key in found.master_keys:
            held = "yes" if key.held else "[red]no[/]" if key.data_keys else "no"
            active = "active" if key.version == newest else ""
            table.add_row(str(key.version), key.check_value, held, str(key.data_keys), active)
        console.print(table)
    console.print(f"{found.secrets} secret(s), {found.secret_versions} secret version(s)")


@app.command("rotate-key")
def rotate_key(as_json: AsJson = False) -> None:
    """Make a new master key the newest version and rewrap every data key with it; servers keep serving.

    With HALDIR_ENCRYPTION_KEY unset, a new key is generated into the data dir's key file. With it set,
    the new key must already be its first entry, followed by the old key(s), on every server.
    """
    settings = Settings()
    if settings.encryption_key is None:
        path = key_file(settings)
        _require_key_file(settings)
        with _exclusive(path):
            rotation = run(lambda: _rotate_file(settings, path))
        source = str(path)
        where = "from the key file"
    else:
        rotation = run(lambda: _rotate_env(settings))
        source = _ENV
        where = f"from {_ENV} on every server"
    if as_json:
        print(json.dumps({**dataclasses.asdict(rotation), "old_keys_in": source}))
        return
    console.print(
        f"master key version {rotation.version} (check value {rotation.check_value}) is now active; "
        f"rewrapped {rotation.rewrapped} data key(s)"
    )
    console.print(
        f"The old key(s) stay in {escape(source)}. Remove an old key {where} only once 'haldir vault status' "
        "shows 0 data keys on its version."
    )


@app.command("generate-key")
def generate_key(as_json: AsJson = False) -> None:
    """Print a new random master key (base64 of 32 bytes) for HALDIR_ENCRYPTION_KEY."""
    key = generate_master_key().encode()
    print(json.dumps({"key": key}) if as_json else key)


async def _rotate_file(settings: Settings, path: Path) -> Rotation:
    """Rotate to a new key in the key file.

    Steps:
      1. the key file must exist and open the store as it is, so a new key never joins a bad keyring;
      2. put a new key first in the file (atomic replace), keeping every old key after it, before the
         store knows the new version: a running server that meets it reads the file again and finds it;
      3. register the new key as the newest version and rewrap every data key with it.
    """
    # Step 1.
    keyring = _require_key_file(settings)
    async with _vault(settings) as gov:
        registered = {key.check_value for key in (await gov.vault.vault_status(_OPERATOR)).master_keys}
    # Step 2. A newest key the store does not know yet is one an interrupted rotate-key wrote: finish it.
    if keyring.newest.check_value in registered:
        keys: list[MasterKey] = [generate_master_key(), *keyring.keys]
        _drop_stale_temp_file(path)
        write_key_file(path, keys)
    # Step 3. The runtime reads the keys again: the new one is the file's first.
    async with _vault(settings) as gov:
        return await gov.vault.rotate_master_key(_OPERATOR)


async def _rotate_env(settings: Settings) -> Rotation:
    async with _vault(settings) as gov:
        found = await gov.vault.vault_status(_OPERATOR)
        keyring, _ = load_master_keys(settings, generate=False)
        assert keyring is not None  # HALDIR_ENCRYPTION_KEY is set
        newest = max(found.master_keys, key=lambda key: key.version)
        behind = sum(key.data_keys for key in found.master_keys if key.version != newest.version)
        if newest.check_value == keyring.newest.check_value and not behind:
            raise ConfigurationError(
                f"the first key of {_ENV} (check value {newest.check_value}) is already the active "
                f"version {newest.version} and wraps every data key: nothing to rotate. Put a new key "
                f"first in {_ENV} (haldir vault generate-key prints one), keep the old key after it, "
                "deploy that to every server, then run rotate-key"
            )
        return await gov.vault.rotate_master_key(_OPERATOR)


def _require_key_file(settings: Settings) -> MasterKeyring:
    keyring, _ = load_master_keys(settings, generate=False)
    if keyring is None:
        raise ConfigurationError(
            f"no key file at {key_file(settings)} and {_ENV} is unset: nothing to rotate. Start the server "
            "first (it generates the key file), or set HALDIR_ENCRYPTION_KEY"
        )
    return keyring


@asynccontextmanager
async def _vault(settings: Settings) -> AsyncIterator[Governor]:
    async with open_runtime(settings, pool_size=_POOL, vault=True) as runtime:
        yield runtime.governor


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One rotate-key at a time on a key file: two would each write their own key and drop the other's."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path.with_name(path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"another 'haldir vault rotate-key' is running on {path}; wait for it") from None
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _drop_stale_temp_file(path: Path) -> None:
    # Under the lock, a temporary file next to the key file is left by a rotate-key that stopped before
    # replacing the file; the store never saw its key, so it holds nothing worth keeping.
    path.with_name(path.name + ".new").unlink(missing_ok=True)


def _held_by(found: VaultStatus, keyring: MasterKeyring | None) -> VaultStatus:
    """`found` as seen by the configured keys, which the store was opened without."""
    return dataclasses.replace(
        found,
        key_source=None if keyring is None else keyring.source,
        master_keys=[
            dataclasses.replace(key, held=keyring is not None and keyring.find(key.check_value) is not None)
            for key in found.master_keys
        ],
    )


def _status_json(found: VaultStatus, newest: int | None) -> dict[str, object]:
    return {
        "key_source": found.key_source,
        "master_keys": [
            {
                "version": key.version,
                "check_value": key.check_value,
                "held": key.held,
                "data_keys": key.data_keys,
                "active": key.version == newest,
            }
            for key in found.master_keys
        ],
        "secrets": found.secrets,
        "secret_versions": found.secret_versions,
    }
