"""Gate sessions: create, read, list, revoke, and check a scope."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from haldir.cache import Cache
from haldir.core import ids
from haldir.core.clock import Clock
from haldir.core.idempotency import Outcome, claim
from haldir.core.keys import Principal
from haldir.core.money import to_micros
from haldir.core.pagination import MAX_PAGE, Page, decode_cursor
from haldir.core.scopes import SPEND, Scope, parse_scope, parse_session_scopes
from haldir.core.sessions import Decision, Session, check_scope
from haldir.errors import InvalidRequest, NotFound
from haldir.governor.fields import text_field
from haldir.governor.limits import Limits
from haldir.store.ports import ChangeFeed, SessionStore

DEFAULT_TTL = 3600
CACHED_SESSIONS = 100_000


@dataclass(frozen=True)
class PermissionCheck:
    session: Session
    scope: Scope
    decision: Decision


class Sessions:
    """Gate sessions, and the session lookup the services that act for a session share."""

    def __init__(
        self,
        *,
        session_store: SessionStore,
        changes: ChangeFeed,
        clock: Clock,
        known_scopes: frozenset[str] | None,
        max_ttl: int,
        limits: Limits | None = None,
    ) -> None:
        self._session_store = session_store
        self._limits = limits  # the tenant's agents quota
        self._changes = changes
        self._clock = clock
        self._known_scopes = known_scopes  # None: any well-formed scope name; else only these (a typo guard)
        self._max_ttl = max_ttl
        self._cache: Cache[tuple[str, str], Session] = Cache(changes.epoch, maxsize=CACHED_SESSIONS)

    async def require_session(self, principal: Principal, session_id: str, *, fresh: bool = False) -> Session:
        """The principal's tenant's session `session_id`, valid or not; `NotFound` when there is none.
        No key scope is checked: the calling use case checks its own.

        Served from the cache unless `fresh`: scopes, expiry and revocation are current (a revocation
        anywhere empties the cache), but `spent` is as old as the cached copy. Budgets are decided in a
        spend transaction on the stored row, or on a `fresh` read.
        """
        key = (principal.tenant_id, session_id)
        if fresh:
            self._cache.drop(key)  # read from the store, and keep that copy
        session = None
        if ids.is_id(ids.SESSION, session_id):
            session = await self._cache.read_through(
                key, lambda: self._session_store.get_session(principal.tenant_id, session_id)
            )
        if session is None:
            raise NotFound(f"no session {session_id!r} in this tenant")
        return session

    def uncache_expired(self) -> int:
        """Drop expired sessions from this process's cache (they are read again, from the store, if asked
        for); how many. Expiry is checked on every use whether cached or not: this bounds the memory."""
        now = self._clock.now()
        return self._cache.drop_where(lambda session: now >= session.expires_at)

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
        agent_id = text_field(agent_id, field="agent_id", max_length=200)
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
        if self._limits is None:
            return await self._session_store.insert_session(session, idempotency=request)
        async with self._limits.agent_room(principal.tenant_id, agent_id):
            return await self._session_store.insert_session(session, idempotency=request)

    async def get_session(self, principal: Principal, session_id: str) -> Session:
        principal.require("sessions:read")
        return await self.require_session(principal, session_id, fresh=True)  # its spent is shown

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
            agent_id = text_field(agent_id, field="agent_id", max_length=200)
        return await self._session_store.list_sessions(
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
            session = await self._session_store.revoke_session(
                principal.tenant_id, session_id, at=self._clock.now()
            )
        if session is None:
            raise NotFound(f"no session {session_id!r} in this tenant")
        await self._changes.announce()
        return session

    async def check_permission(self, principal: Principal, session_id: str, scope: str) -> PermissionCheck:
        principal.require("sessions:read")
        wanted = parse_scope(scope, known=self._known_scopes)
        # `spend:<amount>` asks about the budget left: that comes from the stored row, never a cache.
        fresh = wanted.name == SPEND and wanted.qualifier is not None
        session = await self.require_session(principal, session_id, fresh=fresh)
        return PermissionCheck(session, wanted, check_scope(session, wanted, now=self._clock.now()))
