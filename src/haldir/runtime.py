"""Composition root shared by the server, the operator CLI and the tests: `wire` builds the governor's
services over a store; `open_runtime` opens the configured store and wires them from settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network

from haldir.clock import SystemClock
from haldir.core.checkpoints import Signer
from haldir.core.clock import Clock
from haldir.core.commands import CommandRule
from haldir.core.scopes import BUILTIN_SCOPES
from haldir.errors import ConfigurationError
from haldir.governor import DEFAULT_TENANT, Governor
from haldir.governor.approvals import Approvals, Timeouts
from haldir.governor.budgets import Budgets
from haldir.governor.evidence import Evidence
from haldir.governor.keyring import MasterKeyring
from haldir.governor.keys import Keys
from haldir.governor.ledger import Ledger
from haldir.governor.limits import Limits
from haldir.governor.proxy import Proxy
from haldir.governor.registry import Registry
from haldir.governor.retention import Lifetimes, Retention
from haldir.governor.rules import Rules
from haldir.governor.sessions import Sessions
from haldir.governor.usage import Usage
from haldir.governor.vault import Vault
from haldir.governor.webhooks import DEFAULT_SECRET_GRACE, Webhooks
from haldir.settings import Settings
from haldir.store.migrate import head_revision, require_latest_schema
from haldir.store.ports import Store
from haldir.store.sql import SqlStore
from haldir.vaultkey import key_file, load_master_keys


def wire(
    *,
    store: Store,
    clock: Clock,
    strict_scopes: bool = False,
    custom_scopes: frozenset[str] = frozenset(),
    max_ttl: int = 30 * 86400,
    log_signer: Signer | None = None,
    log_origin: str = "haldir.local",
    master_keys: MasterKeyring | None = None,
    outbound_allow: Sequence[IPv4Network | IPv6Network] = (),
    stdio_tenants: frozenset[str] = frozenset({DEFAULT_TENANT}),
    stdio_commands: Sequence[str] = (),
    approval_timeouts: Timeouts = Timeouts(),
    webhook_secret_grace: timedelta = DEFAULT_SECRET_GRACE,
    lifetimes: Lifetimes = Lifetimes(),
) -> Governor:
    """The governor's services over `store`, each given only the ports, settings and services it uses,
    built in dependency order. `strict_scopes` limits session scopes to the built-in and `custom_scopes`
    names (a typo guard); otherwise any well-formed name is a scope."""
    known_scopes = BUILTIN_SCOPES | custom_scopes if strict_scopes else None
    ledger = Ledger(ledger_store=store.ledger, clock=clock, log_signer=log_signer, log_origin=log_origin)
    changes = store.changes
    limits = Limits(limits_store=store.limits, changes=changes, ledger=ledger, clock=clock)
    sessions = Sessions(
        session_store=store,
        changes=changes,
        clock=clock,
        known_scopes=known_scopes,
        max_ttl=max_ttl,
        limits=limits,
    )
    vault = Vault(
        vault_store=store.vault,
        changes=changes,
        sessions=sessions,
        ledger=ledger,
        clock=clock,
        master_keys=master_keys,
        known_scopes=known_scopes,
    )
    registry = Registry(
        proxy_store=store.proxy,
        changes=changes,
        vault=vault,
        ledger=ledger,
        clock=clock,
        outbound_allow=outbound_allow,
        commands=CommandRule(frozenset(stdio_tenants), tuple(stdio_commands)),
    )
    approvals = Approvals(
        approval_store=store.approvals,
        sessions=sessions,
        ledger=ledger,
        changes=changes,
        clock=clock,
        timeouts=approval_timeouts,
    )
    return Governor(
        keys=Keys(key_store=store, changes=changes, clock=clock),
        approvals=approvals,
        sessions=sessions,
        ledger=ledger,
        rules=Rules(
            ledger_store=store.ledger, limits_store=store.limits, changes=changes, ledger=ledger, clock=clock
        ),
        limits=limits,
        budgets=Budgets(
            payment_store=store,
            sessions=sessions,
            approvals=approvals,
            ledger=ledger,
            clock=clock,
            authorization_ttl=lifetimes.payment_authorization,
        ),
        vault=vault,
        registry=registry,
        proxy=Proxy(
            registry=registry,
            sessions=sessions,
            approvals=approvals,
            vault=vault,
            ledger=ledger,
            payment_store=store,
            proxy_store=store.proxy,
            clock=clock,
            limits=limits,
        ),
        webhooks=Webhooks(
            webhook_store=store.webhooks,
            vault=vault,
            clock=clock,
            outbound_allow=outbound_allow,
            secret_grace=webhook_secret_grace,
        ),
        evidence=Evidence(
            evidence_store=store.evidence,
            key_store=store,
            approval_store=store.approvals,
            webhook_store=store.webhooks,
            ledger=ledger,
            clock=clock,
            log_signer=log_signer,
        ),
        usage=Usage(
            usage_store=store.usage,
            health=store,
            ledger=ledger,
            limits=limits,
            clock=clock,
            schema_head=head_revision(),
        ),
        retention=Retention(
            retention_store=store.retention,
            payment_store=store,
            sessions=sessions,
            ledger=ledger,
            clock=clock,
            lifetimes=lifetimes,
        ),
        clock=clock,
    )


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
    store = SqlStore.open(
        settings.store_url, pool_size=pool_size or settings.db_pool_size, data_dir=settings.data_dir
    )
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
        governor = wire(
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
            approval_timeouts=Timeouts(
                pending=timedelta(seconds=settings.approval_pending_seconds),
                use=timedelta(seconds=settings.approval_use_seconds),
            ),
            webhook_secret_grace=timedelta(seconds=settings.webhook_secret_grace_seconds),
            lifetimes=Lifetimes(
                idempotency_key=timedelta(seconds=settings.idempotency_ttl_seconds),
                payment_authorization=timedelta(seconds=settings.payment_authorization_ttl_seconds),
            ),
        )
        if master_keys is not None:
            await governor.vault.verify_vault_keys()
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
