"""Gate sessions: create, read, list, revoke, and check a scope."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from haldir.core.money import format_micros
from haldir.core.pagination import MAX_PAGE, encode_cursor
from haldir.core.sessions import Session
from haldir.governor.sessions import PermissionCheck
from haldir.http.auth import GovernorDep, PrincipalDep
from haldir.http.errors import ERROR_RESPONSES
from haldir.http.routes.keys import IdempotencyKey
from haldir.http.schemas import Money, OptionalTimestamp, Timestamp

router = APIRouter(prefix="/v1/sessions", tags=["sessions"], responses=ERROR_RESPONSES)


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent_id: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(default_factory=list, description="`name` or `name:qualifier`; see the README.")
    ttl: StrictInt | None = Field(
        default=None, description="Seconds until the session expires (default 3600)."
    )
    spend_limit: Money | None = Field(default=None, description="USD; absent means no spending is allowed.")


class SessionOut(BaseModel):
    session_id: str
    agent_id: str
    scopes: list[str]
    spend_limit: str
    ttl: int
    created_at: Timestamp
    expires_at: Timestamp

    @classmethod
    def of(cls, session: Session) -> SessionOut:
        return cls(**_fields(session))


class SessionDetail(SessionOut):
    spent: str
    remaining_budget: str
    is_valid: bool
    revoked_at: OptionalTimestamp = None

    @classmethod
    def at(cls, session: Session, now: datetime) -> SessionDetail:
        return cls(
            **_fields(session),
            spent=format_micros(session.spent_micros),
            remaining_budget=format_micros(session.remaining_micros),
            is_valid=session.is_valid(now),
            revoked_at=session.revoked_at,
        )


class SessionList(BaseModel):
    sessions: list[SessionDetail]
    next_cursor: str | None


class CheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: str = Field(min_length=1, max_length=200)


class CheckResult(BaseModel):
    allowed: bool
    session_id: str
    scope: str
    reason: str | None

    @classmethod
    def of(cls, check: PermissionCheck) -> CheckResult:
        return cls(
            allowed=check.decision.allowed,
            session_id=check.session.session_id,
            scope=str(check.scope),
            reason=check.decision.reason,
        )


@router.post("", status_code=201, response_model=SessionOut)
async def create_session(
    body: SessionCreate,
    gov: GovernorDep,
    who: PrincipalDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> SessionOut:
    outcome = await gov.sessions.create_session(
        who,
        agent_id=body.agent_id,
        scopes=body.scopes,
        ttl=body.ttl,
        spend_limit=body.spend_limit,
        idempotency_key=idempotency_key,
    )
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return SessionOut.of(outcome.value)


@router.get("", response_model=SessionList)
async def list_sessions(
    gov: GovernorDep,
    who: PrincipalDep,
    agent_id: Annotated[str | None, Query(max_length=200)] = None,
    active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> SessionList:
    page = await gov.sessions.list_sessions(who, agent_id=agent_id, active=active, limit=limit, cursor=cursor)
    now = gov.now()
    return SessionList(
        sessions=[SessionDetail.at(s, now) for s in page.items], next_cursor=encode_cursor(page.next)
    )


@router.get("/{session_id}", response_model=SessionDetail)
async def get_session(session_id: str, gov: GovernorDep, who: PrincipalDep) -> SessionDetail:
    return SessionDetail.at(await gov.sessions.get_session(who, session_id), gov.now())


@router.delete("/{session_id}", response_model=SessionDetail)
async def revoke_session(session_id: str, gov: GovernorDep, who: PrincipalDep) -> SessionDetail:
    return SessionDetail.at(await gov.sessions.revoke_session(who, session_id), gov.now())


@router.post("/{session_id}/check", response_model=CheckResult)
async def check_session(
    session_id: str, body: CheckRequest, gov: GovernorDep, who: PrincipalDep
) -> CheckResult:
    return CheckResult.of(await gov.sessions.check_permission(who, session_id, body.scope))


def _fields(session: Session) -> dict[str, object]:
    return {
        "session_id": session.session_id,
        "agent_id": session.agent_id,
        "scopes": [str(scope) for scope in session.scopes],
        "spend_limit": format_micros(session.spend_limit_micros),
        "ttl": session.ttl,
        "created_at": session.created_at,
        "expires_at": session.expires_at,
    }
