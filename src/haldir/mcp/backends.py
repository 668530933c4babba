"""What the governance tools call: one protocol, met in-process by `LocalBackend` (a governor and the
authenticated principal) and over HTTP by `haldir.client.AsyncHaldirClient` (`remote_backend`).

Both answer with the REST API's JSON bodies: `LocalBackend` renders the governor's results with the
same response models as the routes, so a tool's structured result is the body the route would send.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol, cast

from haldir.client import AsyncHaldirClient
from haldir.client.money import plain
from haldir.core.keys import Principal
from haldir.core.ledger import EntryFilter
from haldir.governor import Governor
from haldir.http.routes.approvals import ApprovalOut
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

    async def request_approval(
        self,
        session_id: str,
        tool: str,
        *,
        amount: Decimal | int | str = 0,
        reason: str = "",
        arguments_sha256: str | None = None,
    ) -> Json: ...

    async def get_approval(self, approval_id: str) -> Json: ...


def remote_backend(client: AsyncHaldirClient) -> GovernanceBackend:
    """The SDK as the remote backend, answering the bodies the server sent (its `Decimal` money back to the
    server's exact decimal strings); the server it reaches enforces the key's scopes."""
    sdk: GovernanceBackend = client  # mypy checks that the SDK meets the protocol
    return cast(GovernanceBackend, _PlainAnswers(sdk))


class _PlainAnswers:
    """A backend whose answers are plain JSON, as the MCP tools' structured results must be."""

    def __init__(self, backend: GovernanceBackend) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Json]]:
        method: Callable[..., Awaitable[Json]] = getattr(self._backend, name)

        async def answer(*args: Any, **kwargs: Any) -> Json:
            return plain(await method(*args, **kwargs))

        return answer


class LocalBackend:
    """The governor in this process, acting for `principal`: its `require` checks apply the API key's
    scopes exactly as they do behind the REST routes."""

    def __init__(self, governor: Governor, principal: Principal) -> None:
        self._gov = governor
        self._who = principal

    def _new_action(self) -> AbstractAsyncContextManager[None]:
        """The tenant's actions quota, as `POST` routes of the REST API apply it."""
        return self._gov.limits.action(self._who.tenant_id)

    async def create_session(
        self, *, agent_id: str, scopes: list[str], ttl: int | None = None, spend_limit: Decimal | None = None
    ) -> Json:
        async with self._new_action():
            outcome = await self._gov.sessions.create_session(
                self._who, agent_id=agent_id, scopes=scopes, ttl=ttl, spend_limit=spend_limit
            )
        return _body(SessionOut.of(outcome.value))

    async def get_session(self, session_id: str) -> Json:
        return _body(
            SessionDetail.at(await self._gov.sessions.get_session(self._who, session_id), self._gov.now())
        )

    async def revoke_session(self, session_id: str) -> Json:
        return _body(
            SessionDetail.at(await self._gov.sessions.revoke_session(self._who, session_id), self._gov.now())
        )

    async def check_permission(self, session_id: str, scope: str) -> Json:
        return _body(CheckResult.of(await self._gov.sessions.check_permission(self._who, session_id, scope)))

    async def store_secret(self, *, name: str, value: str, scope_required: str = "read") -> Json:
        async with self._new_action():
            outcome = await self._gov.vault.store_secret(
                self._who, name=name, value=value, scope_required=scope_required
            )
        return _body(SecretStored.of(outcome.value))

    async def get_secret(self, name: str, *, session_id: str, version: int | None = None) -> Json:
        released = await self._gov.vault.get_secret(self._who, name, session_id=session_id, version=version)
        return _body(SecretValue.of(released))

    async def authorize_payment(
        self, *, session_id: str, amount: Decimal, currency: str = "USD", description: str = ""
    ) -> Json:
        async with self._new_action():
            outcome = await self._gov.budgets.authorize_payment(
                self._who, session_id=session_id, amount=amount, currency=currency, description=description
            )
        return _body(Authorized.of(outcome.value))

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
        async with self._new_action():
            entry = await self._gov.budgets.log_action(
                self._who,
                session_id=session_id,
                tool=tool,
                action=action,
                cost_usd=cost_usd,
                details=details,
                status=status,
                authorization_id=authorization_id,
            )
        return _body(EntryCreated.of(entry))

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
        page = await self._gov.ledger.list_entries(
            self._who, where=where, limit=limit, cursor=cursor, order=order
        )
        return _body(EntryList.of(page))

    async def spend(
        self,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Json:
        result = await self._gov.ledger.spend(
            self._who, session_id=session_id, agent_id=agent_id, since=since, until=until
        )
        return _body(SpendOut.of(result))

    async def request_approval(
        self,
        session_id: str,
        tool: str,
        *,
        amount: Decimal | int | str = 0,
        reason: str = "",
        arguments_sha256: str | None = None,
    ) -> Json:
        async with self._new_action():
            approval = await self._gov.approvals.request_approval(
                self._who,
                session_id=session_id,
                tool=tool,
                amount=amount,
                reason=reason,
                arguments_sha256=arguments_sha256,
            )
        return _body(ApprovalOut.at(approval, self._gov.now()))

    async def get_approval(self, approval_id: str) -> Json:
        approval = await self._gov.approvals.get_approval(self._who, approval_id)
        return _body(ApprovalOut.at(approval, self._gov.now()))


def _body(model: Any) -> Json:
    """A response model as the JSON object FastAPI would send for it."""
    body: Json = model.model_dump(mode="json")
    return body
