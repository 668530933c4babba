"""Composition root shared by the server and the operator CLI: settings in, a store and a governor out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from haldir.clock import SystemClock
from haldir.core.checkpoints import Signer
from haldir.core.clock import Clock
from haldir.errors import ConfigurationError
from haldir.governor import Governor
from haldir.governor.keyring import MasterKeyring
from haldir.settings import Settings
from haldir.store.migrate import require_latest_schema
from haldir.store.sql import SqlStore
from haldir.vaultkey import key_file, load_master_keys


@dataclass(frozen=True)
class Runtime:
    store: SqlStore
    governor: Governor
    generated_master_key: str | None = None  # where a new master key was written on this start


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    pool_size: int | None = None,
    log_signer: Signer | None = None,
    vault: bool = False,
) -> AsyncIterator[Runtime]:
    """Open the configured store, refuse an out-of-date schema, and wire a governor over it.

    With a `log_signer`, refuse it unless it is the key this deployment's logs are signed with: the
    first signer to start pins its public key in the store. With `vault`, load the Vault's master keys
    (generated into the data dir only while the store has none registered) and refuse them unless they
    open every data key in the store.
    """
    clock = clock or SystemClock()
    store = SqlStore.open(settings.store_url, pool_size=pool_size or settings.db_pool_size)
    try:
        await require_latest_schema(store)
        if log_signer is not None:
            pinned = await store.ledger.record_log_key(log_signer.vkey, at=clock.now())
            if pinned != log_signer.vkey:
                raise ConfigurationError(
                    f"this deployment's logs are signed with {pinned}, but the configured log key is "
                    f"{log_signer.vkey}: set HALDIR_LOG_SIGNING_KEY to the matching private key"
                )
        master_keys, generated = await _master_keys(settings, store) if vault else (None, False)
        governor = Governor(
            store=store,
            clock=clock,
            strict_scopes=settings.strict_scopes,
            custom_scopes=frozenset(settings.custom_scopes),
            max_ttl=settings.session_max_ttl,
            log_signer=log_signer,
            log_origin=settings.log_origin,
            master_keys=master_keys,
            outbound_allow=settings.outbound_allow,
            stdio_tenants=frozenset(settings.stdio_tenants),
            stdio_commands=settings.stdio_commands,
        )
        if master_keys is not None:
            await governor.verify_vault_keys()
        yield Runtime(store, governor, master_keys.source if generated and master_keys else None)
    finally:
        await store.close()


async def _master_keys(settings: Settings, store: SqlStore) -> tuple[MasterKeyring, bool]:
    registered = await store.vault.master_keys()
    keyring, generated = load_master_keys(settings, generate=not registered)
    if keyring is None:
        raise ConfigurationError(
            f"this deployment's secrets are sealed under master key(s) {sorted(registered.values())} (check "
            f"values), but no key is configured: set HALDIR_ENCRYPTION_KEY, or restore {key_file(settings)}"
        )
    return keyring, generated
