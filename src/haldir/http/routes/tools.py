"""Governed calls of local tools over HTTP: tools that run in the agent's own process. `begin` decides
and reserves (the proxy's pipeline, without an upstream), the agent runs the tool, `finish` records how
it ended. Both need the key scope `proxy:write`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from haldir.core.money import format_micros, to_micros
from haldir.governor.proxy import LOCAL_TOOL_NAME
from haldir.http.auth import GovernorDep, PrincipalDep
from haldir.http.errors import APPROVAL_RESPONSE, ERROR_RESPONSES
from haldir.http.schemas import Money, documented_pattern
from haldir.proxy.service import ProxyService

router = APIRouter(prefix="/v1/tools", tags=["tools"], responses=ERROR_RESPONSES)

ToolName = Annotated[str, Path(max_length=64, json_schema_extra=documented_pattern(LOCAL_TOOL_NAME))]
CallId = Annotated[str, Path(max_length=100)]


class BeginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_id: str = Field(max_length=100)
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="The tool's arguments; strings may hold `{{secret:NAME}}`."
    )
    cost_usd: Money | None = Field(
        default=None,
        description="The caller's declared cost of the call. A tool_cost policy's cost wins when higher.",
    )


class Begun(BaseModel):
    call_id: str
    tool: str
    session_id: str
    arguments: dict[str, Any] = Field(description="With each `{{secret:NAME}}` replaced by its value.")
    secrets: list[str] = Field(description="The names of the secrets injected; never their values.")
    cost_usd: str = Field(description="The cost reserved against the session's budget.")
    entry_id: str = Field(description="The ledger entry of the admission.")


class FinishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["ok", "error"]
    error: str | None = Field(default=None, max_length=10_000, description="What failed (status error).")
    latency_ms: float | None = Field(default=None, ge=0, description="How long the tool ran.")


class FinishedOut(BaseModel):
    call_id: str
    status: str
    entry_id: str = Field(description="The ledger entry of the outcome.")
    charged_usd: str = Field(description="The cost kept: the reserved cost after ok, 0.00 after error.")


@router.post("/{tool}/begin", status_code=201, response_model=Begun, responses=APPROVAL_RESPONSE)
async def begin_tool_call(tool: ToolName, body: BeginRequest, request: Request, who: PrincipalDep) -> Begun:
    """Admit one call of a local tool: session, scope `execute:<tool>`, policies, secrets, approval
    rules, and the cost reserved. A refusal is an error, already recorded as a denied ledger entry."""
    service: ProxyService = request.app.state.proxy
    cost = 0 if body.cost_usd is None else to_micros(body.cost_usd, field="cost_usd")
    admission = await service.begin_local_call(
        who, session_id=body.session_id, tool=tool, arguments=body.arguments, cost_micros=cost
    )
    return Begun(
        call_id=admission.call_id,
        tool=admission.tool.exposed,
        session_id=admission.session.session_id,
        arguments=admission.arguments,
        secrets=sorted(admission.injected),
        cost_usd=format_micros(admission.cost_micros),
        entry_id=admission.entry_id,
    )


@router.post("/calls/{call_id}/finish", response_model=FinishedOut)
async def finish_tool_call(
    call_id: CallId, body: FinishRequest, gov: GovernorDep, who: PrincipalDep
) -> FinishedOut:
    """Record how a begun call ended: `ok` keeps its cost, `error` releases it. Once per call."""
    finished = await gov.proxy.finish_local_call(
        who, call_id, status=body.status, error=body.error, latency_ms=body.latency_ms
    )
    return FinishedOut(
        call_id=finished.call_id,
        status=finished.status,
        entry_id=finished.entry.entry_id,
        charged_usd=format_micros(finished.charged_micros),
    )
