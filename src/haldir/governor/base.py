"""What every part of the governor shares: the store, the clock and the configured limits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from ipaddress import IPv4Network, IPv6Network

from haldir.core import ids
from haldir.core.checkpoints import Signer
from haldir.core.clock import Clock
from haldir.core.commands import CommandRule
from haldir.core.keys import Principal
from haldir.core.scopes import BUILTIN_SCOPES
from haldir.core.sessions import Session
from haldir.core.vault import DataKey
from haldir.errors import InvalidRequest, NotFound
from haldir.governor.keyring import MasterKeyring
from haldir.store.ports import Store

DEFAULT_TENANT = "default"


class GovernorBase:
    def __init__(
        self,
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
    ) -> None:
        self._store = store
        self._clock = clock
        # None: any well-formed session scope name; strict: only these (a typo guard).
        self._known_scopes = BUILTIN_SCOPES | custom_scopes if strict_scopes else None
        self._max_ttl = max_ttl
        self._log_signer = log_signer
        self._log_origin = log_origin
        self._keyring = master_keys
        self._outbound_allow = tuple(outbound_allow)  # private networks upstream URLs may reach
        self._commands = CommandRule(frozenset(stdio_tenants), tuple(stdio_commands))  # stdio upstreams
        self._master_checks: dict[int, str] = {}  # master key version -> check value, as registered
        self._data_keys: dict[tuple[str, int], DataKey] = {}  # unwrapped, by (tenant, version)

    async def _session(self, principal: Principal, session_id: str) -> Session:
        session = None
        if ids.is_id(ids.SESSION, session_id):
            session = await self._store.get_session(principal.tenant_id, session_id)
        if session is None:
            raise NotFound(f"no session {session_id!r} in this tenant")
        return session

    def now(self) -> datetime:
        """The governor's clock, for adapters that render time-dependent fields such as `is_valid`."""
        return self._clock.now()


def text_field(value: str, *, field: str, max_length: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_length or not value.isprintable():
        raise InvalidRequest(f"{field} must be 1 to {max_length} printable characters")
    return value


def valid_tenant_id(tenant_id: str) -> str:
    if not ids.TENANT_ID.fullmatch(tenant_id):
        raise InvalidRequest(f"tenant id {tenant_id!r} must be 1 to 64 lowercase letters, digits, '_' or '-'")
    return tenant_id
