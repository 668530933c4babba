"""Use cases over the store ports: the one place that authenticates, authorizes and decides."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from haldir.core import ids
from haldir.core.clock import Clock
from haldir.core.idempotency import Outcome, claim
from haldir.core.keys import (
    ApiKey,
    NewKey,
    Principal,
    display_prefix,
    generate_key,
    key_matches,
    looks_like_key,
    parse_key_scopes,
)
from haldir.core.money import to_micros
from haldir.core.pagination import MAX_PAGE, Page, decode_cursor
from haldir.core.scopes import BUILTIN_SCOPES, Scope, parse_scope, parse_session_scopes
from haldir.core.sessions import Decision, Session, check_scope
from haldir.errors import InsufficientScope, InvalidApiKey, InvalidRequest, NotFound, Unauthenticated
from haldir.store.ports import Store

DEFAULT_TENANT = "default"
DEFAULT_TTL = 3600
_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@dataclass(frozen=True)
class CreatedKey:
    """A stored key and, only when it was just made, its value (a replay never shows it again)."""

    key: ApiKey
    value: str | None


@dataclass(frozen=True)
class PermissionCheck:
    session: Session
    scope: Scope
    decision: Decision


class Governor:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        custom_scopes: frozenset[str] = frozenset(),
        max_ttl: int = 30 * 86400,
    ) -> None:
        self._store = store
        self._clock = clock
        self._known_scopes = BUILTIN_SCOPES | custom_scopes
        self._max_ttl = max_ttl

    def now(self) -> datetime:
        """The governor's clock, for adapters that render time-dependent fields such as `is_valid`."""
        return self._clock.now()

    # API keys

    async def authenticate(self, presented: str | None) -> Principal:
        """The principal of a presented API key; missing, unknown and revoked keys are refused alike."""
        if not presented:
            raise Unauthenticated("missing API key: send 'Authorization: Bearer hld_…' or 'X-API-Key: hld_…'")
        if not looks_like_key(presented):
            raise InvalidApiKey("invalid API key")
        found = await self._store.find_key(display_prefix(presented))
        # Hash and compare even when nothing was found, so timing says nothing about which prefixes exist.
        stored_hash = found[1] if found else "0" * 64
        matches = key_matches(presented, stored_hash)
        if found is None or not matches or found[0].revoked_at is not None:
            raise InvalidApiKey("invalid API key")
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
        return new if await self._store.bootstrap_tenant(key, key_hash=new.hash) else None

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
        name = _text(name, field="name", max_length=200)
        request = claim(
            idempotency_key, operation="keys.create", payload={"name": name, "scopes": sorted(wanted)}
        )
        new = generate_key()
        key = ApiKey(
            tenant_id=_tenant(principal.tenant_id),
            prefix=new.prefix,
            name=name,
            scopes=wanted,
            created_at=self._clock.now(),
        )
        outcome = await self._store.insert_key(key, key_hash=new.hash, idempotency=request)
        value = None if outcome.replayed else new.value
        return Outcome(CreatedKey(outcome.value, value), replayed=outcome.replayed)

    async def key_tenant(self, prefix: str) -> str | None:
        """The tenant of a key prefix, for operator commands that name a key but not its tenant."""
        found = await self._store.find_key(prefix) if ids.is_id(ids.API_KEY, prefix) else None
        return None if found is None else found[0].tenant_id

    async def list_keys(self, principal: Principal) -> list[ApiKey]:
        principal.require("admin:read")
        return await self._store.list_keys(principal.tenant_id)

    async def revoke_key(self, principal: Principal, prefix: str) -> ApiKey:
        principal.require("admin:write")
        key = None
        if ids.is_id(ids.API_KEY, prefix):
            key = await self._store.revoke_key(principal.tenant_id, prefix, at=self._clock.now())
        if key is None:
            raise NotFound(f"no API key {prefix!r} in this tenant")
        return key

    # sessions

    async def create_session(
        self,
        principal: Principal,
        *,
        agent_id: str,
        scopes: list[str],
        ttl: int | None = None,
        spend_limit: Decimal | None = None,
        idempotency_key: str | None = None,
    ) -> Outcome[Session]:
        principal.require("sessions:write")
        agent_id = _text(agent_id, field="agent_id", max_length=200)
        parsed = parse_session_scopes(scopes, known=self._known_scopes)
        ttl = DEFAULT_TTL if ttl is None else ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= self._max_ttl:
            raise InvalidRequest(f"ttl must be whole seconds from 1 to {self._max_ttl}, got {ttl!r}")
        if spend_limit is not None:
            limit = to_micros(spend_limit, field="spend_limit")
        else:
            limit = parsed.implied_spend_limit_micros or 0  # no limit given: nothing may be spent
        request = claim(
            idempotency_key,
            operation="sessions.create",
            payload={
                "agent_id": agent_id,
                "scopes": [str(scope) for scope in parsed.scopes],
                "ttl": ttl,
                "spend_limit_micros": limit,
            },
        )
        session = Session(
            tenant_id=principal.tenant_id,
            session_id=ids.new_id(ids.SESSION),
            agent_id=agent_id,
            scopes=parsed.scopes,
            spend_limit_micros=limit,
            spent_micros=0,
            ttl=ttl,
            created_at=self._clock.now(),
        )
        return await self._store.insert_session(session, idempotency=request)

    async def get_session(self, principal: Principal, session_id: str) -> Session:
        principal.require("sessions:read")
        return await self._session(principal, session_id)

    async def list_sessions(
        self,
        principal: Principal,
        *,
        agent_id: str | None = None,
        active: bool | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Session]:
        principal.require("sessions:read")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be from 1 to {MAX_PAGE}, got {limit}")
        if agent_id is not None:
            agent_id = _text(agent_id, field="agent_id", max_length=200)
        return await self._store.list_sessions(
            principal.tenant_id,
            agent_id=agent_id,
            active=active,
            now=self._clock.now(),
            limit=limit,
            after=decode_cursor(cursor),
        )

    async def revoke_session(self, principal: Principal, session_id: str) -> Session:
        principal.require("sessions:write")
        session = None
        if ids.is_id(ids.SESSION, session_id):
            session = await self._store.revoke_session(principal.tenant_id, session_id, at=self._clock.now())
        if session is None:
            raise NotFound(f"no session {session_id!r} in this tenant")
        return session

    async def check_permission(self, principal: Principal, session_id: str, scope: str) -> PermissionCheck:
        principal.require("sessions:read")
        wanted = parse_scope(scope, known=self._known_scopes)
        session = await self._session(principal, session_id)
        return PermissionCheck(session, wanted, check_scope(session, wanted, now=self._clock.now()))

    async def _session(self, principal: Principal, session_id: str) -> Session:
        session = None
        if ids.is_id(ids.SESSION, session_id):
            session = await self._store.get_session(principal.tenant_id, session_id)
        if session is None:
            raise NotFound(f"no session {session_id!r} in this tenant")
        return session


def _text(value: str, *, field: str, max_length: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_length or not value.isprintable():
        raise InvalidRequest(f"{field} must be 1 to {max_length} printable characters")
    return value


def _tenant(tenant_id: str) -> str:
    if not _TENANT.fullmatch(tenant_id):
        raise InvalidRequest(f"tenant id {tenant_id!r} must be 1 to 64 lowercase letters, digits, '_' or '-'")
    return tenant_id
