"""API keys: authenticate a presented key, and create, list and revoke a tenant's keys."""

from __future__ import annotations

from dataclasses import dataclass

from haldir.cache import Cache
from haldir.core import ids
from haldir.core.clock import Clock
from haldir.core.idempotency import Outcome, claim
from haldir.core.keys import (
    ApiKey,
    NewKey,
    Principal,
    display_prefix,
    generate_key,
    hash_key,
    key_matches,
    looks_like_key,
    parse_key_scopes,
)
from haldir.errors import InsufficientScope, InvalidApiKey, NotFound, Unauthenticated
from haldir.governor.fields import DEFAULT_TENANT, text_field, valid_tenant_id
from haldir.store.ports import ChangeFeed, KeyStore


@dataclass(frozen=True)
class CreatedKey:
    """A stored key and, only when it was just made, its value (a replay never shows it again)."""

    key: ApiKey
    value: str | None


CACHED_KEYS = 10_000


class Keys:
    """Turns a presented API key into a principal, and manages a tenant's keys."""

    def __init__(self, *, key_store: KeyStore, changes: ChangeFeed, clock: Clock) -> None:
        self._key_store = key_store
        self._changes = changes
        self._clock = clock
        # By the SHA-256 of the presented key: a hit is a key that matched its stored hash before.
        self._cache: Cache[str, Principal] = Cache(changes.epoch, maxsize=CACHED_KEYS)

    async def authenticate(self, presented: str | None) -> Principal:
        """The principal of a presented API key; missing, unknown and revoked keys are refused alike.
        Keys that authenticated are remembered until any key is revoked anywhere."""
        if not presented:
            raise Unauthenticated("missing API key: send 'Authorization: Bearer hld_…' or 'X-API-Key: hld_…'")
        if not looks_like_key(presented):
            raise InvalidApiKey("invalid API key")
        principal = await self._cache.read_through(hash_key(presented), lambda: self._stored(presented))
        if principal is None:
            raise InvalidApiKey("invalid API key")
        return principal

    async def _stored(self, presented: str) -> Principal | None:
        """The principal of a presented key as stored; None for an unknown, wrong or revoked key."""
        found = await self._key_store.find_key(display_prefix(presented))
        # Hash and compare even when nothing was found, so timing says nothing about which prefixes exist.
        stored_hash = found[1] if found else "0" * 64
        matches = key_matches(presented, stored_hash)
        if found is None or not matches or found[0].revoked_at is not None:
            return None
        key = found[0]
        return Principal(tenant_id=key.tenant_id, key_prefix=key.prefix, scopes=key.scopes)

    async def bootstrap(self, tenant_id: str = DEFAULT_TENANT) -> NewKey | None:
        """On first start: create `tenant_id` with an admin (`*`) key, or None if the tenant exists."""
        new = generate_key()
        key = ApiKey(
            tenant_id=tenant_id,
            prefix=new.prefix,
            name="bootstrap admin",
            scopes=frozenset({"*"}),
            created_at=self._clock.now(),
        )
        return new if await self._key_store.bootstrap_tenant(key, key_hash=new.hash) else None

    async def create_key(
        self,
        principal: Principal,
        *,
        name: str,
        scopes: list[str],
        idempotency_key: str | None = None,
    ) -> Outcome[CreatedKey]:
        principal.require("admin:write")
        wanted = parse_key_scopes(scopes)
        if not principal.can_grant(wanted):
            raise InsufficientScope(
                f"cannot create a key wider than your own: asked for {sorted(wanted)}, "
                f"you have {sorted(principal.scopes)}",
                requested=sorted(wanted),
                granted=sorted(principal.scopes),
            )
        name = text_field(name, field="name", max_length=200)
        request = claim(
            idempotency_key, operation="keys.create", payload={"name": name, "scopes": sorted(wanted)}
        )
        new = generate_key()
        key = ApiKey(
            tenant_id=valid_tenant_id(principal.tenant_id),
            prefix=new.prefix,
            name=name,
            scopes=wanted,
            created_at=self._clock.now(),
        )
        outcome = await self._key_store.insert_key(key, key_hash=new.hash, idempotency=request)
        value = None if outcome.replayed else new.value
        return Outcome(CreatedKey(outcome.value, value), replayed=outcome.replayed)

    async def key_tenant(self, prefix: str) -> str | None:
        """The tenant of a key prefix, for operator commands that name a key but not its tenant."""
        found = await self._key_store.find_key(prefix) if ids.is_id(ids.API_KEY, prefix) else None
        return None if found is None else found[0].tenant_id

    async def list_keys(self, principal: Principal) -> list[ApiKey]:
        principal.require("admin:read")
        return await self._key_store.list_keys(principal.tenant_id)

    async def revoke_key(self, principal: Principal, prefix: str) -> ApiKey:
        principal.require("admin:write")
        key = None
        if ids.is_id(ids.API_KEY, prefix):
            key = await self._key_store.revoke_key(principal.tenant_id, prefix, at=self._clock.now())
        if key is None:
            raise NotFound(f"no API key {prefix!r} in this tenant")
        await self._changes.announce()
        return key
