"""The Vault: secrets sealed under per-tenant data keys, released only to sessions that hold their
scope, and master key rotation that rewraps data keys without opening a secret."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from haldir.cache import Cache
from haldir.core.clock import Clock
from haldir.core.idempotency import Outcome, claim
from haldir.core.keys import Principal
from haldir.core.ledger import EntryDraft
from haldir.core.pagination import MAX_PAGE, Page, Position, decode_cursor
from haldir.core.scopes import Scope, parse_scope
from haldir.core.secrets import VAULT_TOOL, SecretInfo, SecretVersion, WrappedDataKey, secret_name
from haldir.core.sessions import check_scope
from haldir.core.vault import DataKey, MasterKey, SealError, new_data_key, unwrap_data_key, wrap_data_key
from haldir.errors import (
    ConfigurationError,
    Conflict,
    InvalidRequest,
    NotFound,
    ScopeDenied,
    VaultSealed,
    VaultTampered,
)
from haldir.governor.keyring import MasterKeyring
from haldir.governor.ledger import Ledger
from haldir.governor.sessions import Sessions
from haldir.store.ports import ChangeFeed, VaultStore

MAX_VALUE_BYTES = 64 * 1024
CACHED_SECRETS = 10_000
_DATA_KEY_VERSION = 1  # one data key per tenant; master key rotation rewraps it


@dataclass(frozen=True, repr=False)
class ReleasedSecret:
    name: str
    version: int
    value: str
    scope_required: str

    def __repr__(self) -> str:  # the value never reaches a log line through a repr
        return f"ReleasedSecret({self.name!r}, v{self.version})"


@dataclass(frozen=True)
class MasterKeyStatus:
    version: int
    check_value: str
    held: bool
    data_keys: int


@dataclass(frozen=True)
class VaultStatus:
    key_source: str | None
    master_keys: list[MasterKeyStatus]
    secrets: int
    secret_versions: int


@dataclass(frozen=True)
class Rotation:
    version: int
    check_value: str
    rewrapped: int


class Vault:
    """Secrets and the master keys that seal them. Holds this process's unwrapped data keys."""

    def __init__(
        self,
        *,
        vault_store: VaultStore,
        changes: ChangeFeed,
        sessions: Sessions,
        ledger: Ledger,
        clock: Clock,
        master_keys: MasterKeyring | None,
        known_scopes: frozenset[str] | None,
    ) -> None:
        self._vault_store = vault_store
        self._changes = changes
        # Sealed versions by (tenant, name, version or None for the latest), until any secret changes.
        self._versions: Cache[tuple[str, str, int | None], SecretVersion] = Cache(
            changes.epoch, maxsize=CACHED_SECRETS
        )
        self._sessions = sessions
        self._ledger = ledger
        self._clock = clock
        self._keyring = master_keys
        self._known_scopes = known_scopes  # for `scope_required`, as for session scopes
        self._master_checks: dict[int, str] = {}  # master key version -> check value, as registered
        self._data_keys: dict[tuple[str, int], DataKey] = {}  # unwrapped, by (tenant, version)

    # secrets

    async def store_secret(
        self,
        principal: Principal,
        *,
        name: str,
        value: str,
        scope_required: str = "read",
        idempotency_key: str | None = None,
    ) -> Outcome[SecretVersion]:
        """Seal `value` as the next version of `name`; the ledger records an HMAC of it, never the value."""
        principal.require("vault:write")
        name = secret_name(name)
        required = str(parse_scope(scope_required, known=self._known_scopes))
        plaintext = _value_bytes(value)
        tenant_id = principal.tenant_id
        key = await self._tenant_key(tenant_id)
        digest = key.digest(plaintext)
        request = claim(
            idempotency_key,
            operation="secrets.store",
            payload={"name": name, "value_hmac": digest, "scope_required": required},
        )
        now = self._clock.now()

        def seal(version: int) -> SecretVersion:
            return SecretVersion(
                tenant_id=tenant_id,
                name=name,
                version=version,
                scope_required=required,
                data_key_version=key.version,
                sealed=key.seal(plaintext, name=name, secret_version=version),
                value_digest=digest,
                created_at=now,
            )

        def entry(secret: SecretVersion) -> EntryDraft:
            fields = _vault_fields("secret.store", secret, principal, status="ok")
            return self._ledger.entry(tenant_id, session_id=None, agent_id=None, **fields)

        for _ in range(20):  # a concurrent store of the same name took the number: seal for the next
            stored = await self._vault_store.insert_secret(
                tenant_id, name, created_at=now, seal=seal, entry=entry, idempotency=request
            )
            if stored is not None:
                if not stored.replayed:
                    await self._changes.announce()
                return stored
        raise Conflict(f"secret {name!r} is being stored by many requests at once; try again")

    async def get_secret(
        self, principal: Principal, name: str, *, session_id: str, version: int | None = None
    ) -> ReleasedSecret:
        """Release a secret's value to a session that is valid and holds the secret's `scope_required`.

        A refusal is recorded in the ledger (status denied) and raises `ScopeDenied` with nothing of
        the value; a release is durable in the ledger before the value is returned.
        """
        principal.require("vault:read")
        secret = await self._secret_version(principal, name, version)
        session = await self._sessions.require_session(principal, session_id)
        tenant_id = principal.tenant_id
        decision = check_scope(session, Scope.from_text(secret.scope_required), now=self._clock.now())
        if not decision.allowed:
            reason = decision.reason or "denied"
            await self._ledger.append(
                tenant_id,
                session_id=session.session_id,
                agent_id=session.agent_id,
                **_vault_fields("secret.release", secret, principal, status="denied", refused=reason),
            )
            raise ScopeDenied(reason)
        value = await self.open_unchecked(secret)
        entry = self._ledger.entry(
            tenant_id,
            session_id=session.session_id,
            agent_id=session.agent_id,
            **_vault_fields("secret.release", secret, principal, status="ok"),
        )
        await self.record_release(tenant_id, secret.name, entry=entry)
        return ReleasedSecret(secret.name, secret.version, value, secret.scope_required)

    async def secret_info(self, principal: Principal, name: str) -> SecretInfo:
        """A secret's metadata, never its value: what a key without a session gets."""
        principal.require("vault:read")
        found = await self._vault_store.secret_info(principal.tenant_id, secret_name(name))
        if found is None:
            raise NotFound(f"no secret {name!r} in this tenant")
        return found

    async def list_secrets(
        self, principal: Principal, *, limit: int = 50, cursor: str | None = None
    ) -> Page[SecretInfo]:
        """Secrets by name with their metadata, never their values."""
        principal.require("vault:read")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be from 1 to {MAX_PAGE}, got {limit}")
        position = decode_cursor(cursor)
        items = await self._vault_store.list_secrets(
            principal.tenant_id, limit=limit + 1, after=None if position is None else position.id
        )
        more = len(items) > limit
        items = items[:limit]
        return Page(items, Position(0, items[-1].name) if more else None)

    async def delete_secret(self, principal: Principal, name: str) -> int:
        """Delete every version of a secret; the number of versions deleted."""
        principal.require("vault:write")
        secret = await self._secret_version(principal, name, None)
        entry = self._ledger.entry(
            principal.tenant_id,
            session_id=None,
            agent_id=None,
            **_vault_fields("secret.delete", secret, principal, status="ok"),
        )
        deleted = await self._vault_store.delete_secret(principal.tenant_id, secret.name, entry=entry)
        if not deleted:
            raise NotFound(f"no secret {name!r} in this tenant")
        await self._changes.announce()
        return deleted

    async def _secret_version(self, principal: Principal, name: str, version: int | None) -> SecretVersion:
        name = secret_name(name)
        if version is not None and (isinstance(version, bool) or not 1 <= version <= 2**31 - 1):
            raise InvalidRequest(f"version must be a positive whole number, got {version!r}", field="version")
        found = await self._sealed(principal.tenant_id, name, version)
        if found is None:
            shown = name if version is None else f"{name} v{version}"
            raise NotFound(f"no secret {shown!r} in this tenant")
        return found

    async def _sealed(self, tenant_id: str, name: str, version: int | None) -> SecretVersion | None:
        return await self._versions.read_through(
            (tenant_id, name, version), lambda: self._vault_store.secret_version(tenant_id, name, version)
        )

    # for the proxy, which checks and records its releases itself

    async def latest_secret(self, tenant_id: str, name: str) -> SecretVersion | None:
        """The newest version of a secret, still sealed; None when the tenant has no such secret."""
        return await self._sealed(tenant_id, name, None)

    async def latest_version(self, tenant_id: str, name: str) -> int:
        """The newest version number of a secret, 0 when there is none; nothing is opened."""
        latest = await self._sealed(tenant_id, name, None)
        return 0 if latest is None else latest.version

    async def open_unchecked(self, secret: SecretVersion) -> str:
        """The value of a sealed secret version, with NO scope check and NO ledger entry: the caller
        checks who may have it and records the release (`record_release`) before handing it on."""
        key = await self._data_key(secret.tenant_id, secret.data_key_version)
        try:
            return key.open(secret.sealed, name=secret.name, secret_version=secret.version).decode()
        except (SealError, UnicodeDecodeError):
            raise VaultTampered(
                f"secret {secret.name!r} v{secret.version} does not open under its data key: the stored "
                "ciphertext was changed or moved"
            ) from None

    async def seal_internal(
        self, tenant_id: str, *, name: str, version: int, value: bytes
    ) -> tuple[int, bytes]:
        """Seal a value Haldir keeps for itself (a webhook's signing secret) under the tenant's data key:
        the data key version and the sealed bytes. `name` must not be a valid secret name (use a `/`),
        so nothing sealed here can pass for a stored secret; NO scope check and NO ledger entry."""
        key = await self._tenant_key(tenant_id)
        return key.version, key.seal(value, name=name, secret_version=version)

    async def open_internal(
        self, tenant_id: str, *, name: str, version: int, data_key_version: int, sealed: bytes
    ) -> bytes:
        """Open what `seal_internal` sealed; `VaultTampered` when it does not open."""
        key = await self._data_key(tenant_id, data_key_version)
        try:
            return key.open(sealed, name=name, secret_version=version)
        except SealError:
            raise VaultTampered(
                f"{name!r} v{version} of tenant {tenant_id!r} does not open under its data key"
            ) from None

    async def record_release(self, tenant_id: str, name: str, *, entry: EntryDraft) -> None:
        """Record a release of secret `name` (its last-released time) with its ledger entry, durably."""
        await self._vault_store.record_release(tenant_id, name, at=self._clock.now(), entry=entry)

    # keys

    async def verify_vault_keys(self) -> None:
        """Refuse to serve with master keys that cannot open this deployment's data keys.

        Steps:
          1. with no master key registered yet, register the newest configured key as version 1;
          2. the newest registered version must be held (new data keys are wrapped with it);
          3. every version that still wraps a data key must be held.
        """
        keyring = self._require_keyring()
        registered = await self._vault_store.master_keys()
        # Step 1: first start.
        if not registered:
            await self._vault_store.register_master_key(keyring.newest.check_value, at=self._clock.now())
            registered = await self._vault_store.master_keys()
        in_use = await self._vault_store.data_key_counts()
        newest = max(registered)
        # Steps 2 and 3: every version that matters is held.
        for version in sorted({newest, *in_use}, reverse=True):
            if version in registered and keyring.find(registered[version]) is None:
                used = in_use.get(version, 0)
                raise ConfigurationError(
                    f"the Vault's master key version {version} (check value {registered[version]}, wrapping "
                    f"{used} data key(s)) is not among the keys in {keyring.source}: set "
                    "HALDIR_ENCRYPTION_KEY to this deployment's key(s), newest first (or restore the key "
                    "file that held it). A different key cannot open the stored secrets."
                )
        self._master_checks = registered

    async def vault_status(self, principal: Principal) -> VaultStatus:
        principal.require("admin:read")
        registered = await self._vault_store.master_keys()
        in_use = await self._vault_store.data_key_counts()
        secrets, versions = await self._vault_store.secret_counts()
        keyring = self._keyring
        return VaultStatus(
            key_source=None if keyring is None else keyring.source,
            master_keys=[
                MasterKeyStatus(
                    version=version,
                    check_value=check,
                    held=keyring is not None and keyring.find(check) is not None,
                    data_keys=in_use.get(version, 0),
                )
                for version, check in sorted(registered.items())
            ],
            secrets=secrets,
            secret_versions=versions,
        )

    async def rotate_master_key(self, principal: Principal) -> Rotation:
        """Make the newest configured master key the newest version and rewrap every data key with it.

        Data keys are unwrapped and wrapped again in memory; no secret is opened. Servers keep serving
        throughout: a data key is readable under its old version until its rewrap commits, and under the
        new one after.
        """
        principal.require("admin:write")
        newest = self._require_keyring().newest
        version = await self._vault_store.register_master_key(newest.check_value, at=self._clock.now())
        registered = await self._vault_store.master_keys()
        if version != max(registered):
            raise ConfigurationError(
                f"the newest configured master key is version {version}, but version {max(registered)} is "
                "newer: put the newest key first"
            )
        self._master_checks = registered
        rewrapped = 0
        while batch := await self._vault_store.data_keys_not_on(version, limit=100):
            if max(await self._vault_store.master_keys()) != version:  # another rotation overtook this one
                raise Conflict(f"master key version {version} is no longer the newest: another rotation ran")
            for wrapped in batch:
                material = self._unwrap(wrapped, await self._master(wrapped.master_version))
                blob = wrap_data_key(
                    newest,
                    material,
                    tenant_id=wrapped.tenant_id,
                    version=wrapped.version,
                    kek_version=version,
                )
                if await self._vault_store.rewrap(wrapped, master_version=version, wrapped=blob):
                    rewrapped += 1
        return Rotation(version, newest.check_value, rewrapped)

    async def _tenant_key(self, tenant_id: str) -> DataKey:
        """The tenant's data key, created (and wrapped with the newest master key) on first use."""
        cached = self._data_keys.get((tenant_id, _DATA_KEY_VERSION))
        if cached is not None:
            return cached
        if await self._vault_store.data_key(tenant_id, _DATA_KEY_VERSION) is None:
            self._master_checks = await self._vault_store.master_keys()
            if not self._master_checks:
                raise VaultSealed(
                    "the Vault has no master key registered: restart the server to register one"
                )
            version = max(self._master_checks)
            await self._vault_store.insert_data_key(
                WrappedDataKey(
                    tenant_id=tenant_id,
                    version=_DATA_KEY_VERSION,
                    master_version=version,
                    wrapped=wrap_data_key(
                        await self._master(version),
                        new_data_key(),
                        tenant_id=tenant_id,
                        version=_DATA_KEY_VERSION,
                        kek_version=version,
                    ),
                    created_at=self._clock.now(),
                )
            )
        return await self._data_key(tenant_id, _DATA_KEY_VERSION)

    async def _data_key(self, tenant_id: str, version: int) -> DataKey:
        cached = self._data_keys.get((tenant_id, version))
        if cached is not None:
            return cached
        wrapped = await self._vault_store.data_key(tenant_id, version)
        if wrapped is None:
            raise VaultTampered(f"tenant {tenant_id}'s data key v{version} is missing from the store")
        key = DataKey(
            self._unwrap(wrapped, await self._master(wrapped.master_version)),
            tenant_id=tenant_id,
            version=version,
        )
        self._data_keys[(tenant_id, version)] = key  # data key material never changes; rotation rewraps it
        return key

    async def _master(self, version: int) -> MasterKey:
        keyring = self._require_keyring()
        check = self._master_checks.get(version)
        if check is None:
            self._master_checks = await self._vault_store.master_keys()
            check = self._master_checks.get(version)
        key = None if check is None else keyring.find(check)
        if key is None:
            raise VaultSealed(
                f"master key version {version} is not among the keys in {keyring.source}: add it to "
                "HALDIR_ENCRYPTION_KEY on this server"
            )
        return key

    def _unwrap(self, wrapped: WrappedDataKey, master: MasterKey) -> bytes:
        try:
            return unwrap_data_key(
                master,
                wrapped.wrapped,
                tenant_id=wrapped.tenant_id,
                version=wrapped.version,
                kek_version=wrapped.master_version,
            )
        except SealError:
            raise VaultTampered(
                f"tenant {wrapped.tenant_id}'s data key v{wrapped.version} does not open under master key "
                f"version {wrapped.master_version}: the stored key was changed or moved"
            ) from None

    def _require_keyring(self) -> MasterKeyring:
        if self._keyring is None:
            raise VaultSealed("no master key is configured: set HALDIR_ENCRYPTION_KEY")
        return self._keyring


def _value_bytes(value: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise InvalidRequest("value must be a non-empty string", field="value")
    try:
        plaintext = value.encode()
    except UnicodeEncodeError:
        raise InvalidRequest("value must be valid Unicode text", field="value") from None
    if len(plaintext) > MAX_VALUE_BYTES:
        raise InvalidRequest(f"value must be at most {MAX_VALUE_BYTES} bytes as UTF-8", field="value")
    return plaintext


def _vault_fields(
    action: str, secret: SecretVersion, principal: Principal, *, status: str, refused: str | None = None
) -> dict[str, Any]:
    """The ledger fields of a Vault action: the secret's name, version and value HMAC, never the value."""
    details: dict[str, Any] = {
        "name": secret.name,
        "version": secret.version,
        "value_hmac": secret.value_digest,
        "scope_required": secret.scope_required,
        "key_prefix": principal.key_prefix,
    }
    if refused is not None:
        details["refused"] = refused
    return {"tool": VAULT_TOOL, "action": action, "status": status, "cost_usd": 0, "details": details}
