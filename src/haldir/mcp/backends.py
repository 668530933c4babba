"""What the governance tools call: one protocol, met in-process by `LocalBackend` (a governor and the
authenticated principal) and over HTTP by `haldir.client.AsyncHaldirClient`.

Both answer with the REST API's JSON bodies: `LocalBackend` renders the governor's results with the
same response models as the routes, so a tool's structured result is the body the route would send.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from haldir.client import AsyncHaldirClient
from haldir.core.keys import Principal
from haldir.core.ledger import EntryFilter, StoredEntry, to_hex
from haldir.core.money import format_micros
from haldir.governor import Governor
from haldir.http.routes.audit import EntryCreated, EntryList, SpendOut
from haldir.http.routes.payments import Authorized
from haldir.http.routes.secrets import SecretStored, SecretValue
from haldir.http.routes.sessions import CheckResult, SessionDetail, SessionOut

Json = dict[str, Any]
Order = Literal["asc", "desc"]


class GovernanceBackend(Protocol):
    """The governor's method names and arguments, minus the principal; answers are REST bodies."""

    async def create_session(
        self, *, agent_id: str, scopes: list[str], ttl: int | None = None, spend_limit: Decimal | None = None
    ) -> Json: ...

    async def get_session(self, session_id: str) -> Json: ...

    async def revoke_session(self, session_id: str) -> Json: ...

    async def check_permission(self, session_id: str, scope: str) -> Json: ...

    async def store_secret(self, *, name: str, value: str, scope_required: str = "read") -> Json: ...

    async def get_secret(self, name: str, *, session_id: str, version: int | None = None) -> Json: ...

    async def authorize_payment(
        self, *, session_id: str, amount: Decimal, currency: str = "USD", description: str = ""
    ) -> Json: ...

    async def log_action(
        self,
        *,
        session_id: str,
        tool: str,
        action: str,
        cost_usd: Decimal = Decimal(0),
        details: Json | None = None,
        status: str = "ok",
        authorization_id: str | None = None,
    ) -> Json: ...

    async def list_entries(
        self,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        tool: str | None = None,
        status: str | None = None,
        flagged: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
        order: Order = "desc",
    ) -> Json: ...

    async def spend(
        self,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Json: ...


def remote_backend(client: AsyncHaldirClient) -> GovernanceBackend:
    """The SDK is the remote backend as it is; the server it reaches enforces the key's scopes."""
    return client


class LocalBackend:
    """The governor in this process, acting for `principal`: its `require` checks apply the API key's
    scopes exactly as they do behind the REST routes."""

    def __init__(self, governor: Governor, principal: Principal) -> None:
        self._gov = governor
        self._who = principal

    async def create_session(
        self, *, agent_id: str, scopes: list[str], ttl: int | None = None, spend_limit: Decimal | None = None
    ) -> Json:
        outcome = await self._gov.create_session(
            self._who, agent_id=agent_id, scopes=scopes, ttl=ttl, spend_limit=spend_limit
        )
        return _body(SessionOut.of(outcome.value))

    async def get_session(self, session_id: str) -> Json:
        return _body(SessionDetail.at(await self._gov.get_session(self._who, session_id), self._gov.now()))

    async def revoke_session(self, session_id: str) -> Json:
        return _body(SessionDetail.at(await self._gov.revoke_session(self._who, session_id), self._gov.now()))

    async def check_permission(self, session_id: str, scope: str) -> Json:
        check = await self._gov.check_permission(self._who, session_id, scope)
        return _body(
            CheckResult(
                allowed=check.decision.allowed,
                session_id=check.session.session_id,
                scope=str(check.scope),
                reason=check.decision.reason,
            )
        )

    async def store_secret(self, *, name: str, value: str, scope_required: str = "read") -> Json:
        outcome = await self._gov.store_secret(
            self._who, name=name, value=value, scope_required=scope_required
        )
        stored = outcome.value
        return _body(
            SecretStored(
                name=stored.name,
                version=stored.version,
                scope_required=stored.scope_required,
                created_at=stored.created_at,
            )
        )

    async def get_secret(self, name: str, *, session_id: str, version: int | None = None) -> Json:
        released = await self._gov.get_secret(self._who, name, session_id=session_id, version=version)
        return _body(
            SecretValue(
                name=released.name,
                version=released.version,
                value=released.value,
                scope_required=released.scope_required,
            )
        )

    async def authorize_payment(
        self, *, session_id: str, amount: Decimal, currency: str = "USD", description: str = ""
    ) -> Json:
        outcome = await self._gov.authorize_payment(
            self._who, session_id=session_id, amount=amount, currency=currency, description=description
        )
        payment = outcome.value.payment
        return _body(
            Authorized(
                authorization_id=payment.payment_id,
                amount=format_micros(payment.amount_micros),
                remaining_budget=format_micros(outcome.value.remaining_micros),
                status=payment.status,
            )
        )

    async def log_action(
        self,
        *,
        session_id: str,
        tool: str,
        action: str,
        cost_usd: Decimal = Decimal(0),
        details: Json | None = None,
        status: str = "ok",
        authorization_id: str | None = None,
    ) -> Json:
        entry = await self._gov.log_action(
            self._who,
            session_id=session_id,
            tool=tool,
            action=action,
            cost_usd=cost_usd,
            details=details,
            status=status,
            authorization_id=authorization_id,
        )
        return _body(
            EntryCreated(
                entry_id=entry.entry_id,
                leaf_index=entry.leaf_index,
                entry_hash=to_hex(entry.entry_hash),
                flagged=entry.record["flagged"],
                flag_reason=entry.record["flag_reason"],
            )
        )

    async def list_entries(
        self,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        tool: str | None = None,
        status: str | None = None,
        flagged: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
        order: Order = "desc",
    ) -> Json:
        where = EntryFilter(session_id, agent_id, tool, status, flagged, since, until)
        page = await self._gov.list_entries(self._who, where=where, limit=limit, cursor=cursor, order=order)
        return _body(
            EntryList(entries=[_flat(entry) for entry in page.entries], next_cursor=page.next_cursor)
        )

    async def spend(
        self,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Json:
        result = await self._gov.spend(
            self._who, session_id=session_id, agent_id=agent_id, since=since, until=until
        )
        return _body(
            SpendOut(
                total_usd=f"{result.total:f}",
                count=result.count,
                by_session={k: f"{v:f}" for k, v in result.by_session.items()},
                by_agent={k: f"{v:f}" for k, v in result.by_agent.items()},
                by_tool={k: f"{v:f}" for k, v in result.by_tool.items()},
            )
        )


def _body(model: Any) -> Json:
    """A response model as the JSON object FastAPI would send for it."""
    body: Json = model.model_dump(mode="json")
    return body


def _flat(entry: StoredEntry) -> Json:
    """An entry as `GET /v1/audit` lists it: the record's fields and the hashes that place it in the log."""
    return {
        **entry.record,
        "leaf_index": entry.leaf_index,
        "leaf_hash": to_hex(entry.leaf_hash),
        "prev_hash": to_hex(entry.prev_hash),
        "entry_hash": to_hex(entry.entry_hash),
    }
