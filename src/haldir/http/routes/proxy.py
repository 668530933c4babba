"""The proxy over HTTP: upstream MCP servers, their aggregated and pinned tools, policies, governed calls.

Header and env values of an upstream are never answered (they may carry credentials); their names are.
"""

from __future__ import annotations

from typing import Annotated, Any

import mcp_types
from fastapi import APIRouter, Body, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from haldir.core.policies import POLICY_TYPES, Policy
from haldir.core.tools import Upstream
from haldir.governor.registry import ProxyTool, ToolSync
from haldir.governor.upstreams import UPSTREAM_NAME
from haldir.http.auth import GovernorDep, PrincipalDep
from haldir.http.errors import APPROVAL_RESPONSE, ERROR_RESPONSES
from haldir.http.schemas import Timestamp, documented_enum, documented_pattern
from haldir.proxy.service import ProxyService

router = APIRouter(prefix="/v1/proxy", tags=["proxy"], responses=ERROR_RESPONSES)

UpstreamName = Annotated[str, Path(max_length=64, json_schema_extra=documented_pattern(UPSTREAM_NAME))]
ToolName = Annotated[str, Path(max_length=64)]
PolicyId = Annotated[str, Path(max_length=100)]
# A policy is read by the domain (`parse_policy`), which names the field it refuses; the document says
# what every policy has.
PolicySpec = Annotated[
    dict[str, Any],
    Body(
        json_schema_extra={
            "required": ["type"],
            "properties": {"type": {"type": "string", **documented_enum(POLICY_TYPES)}},
        }
    ),
]


def _service(request: Request) -> ProxyService:
    found: ProxyService = request.app.state.proxy
    return found


class UpstreamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        max_length=64,
        description="1 to 32 of a-z, 0-9, '_' or '-'; no '__'.",
        json_schema_extra=documented_pattern(UPSTREAM_NAME),
    )
    url: str | None = Field(default=None, max_length=2048, description="A Streamable HTTP MCP endpoint.")
    headers: dict[str, str] | None = Field(
        default=None, description="Sent to a URL upstream; values may be `{{secret:NAME}}`."
    )
    command: str | None = Field(default=None, max_length=1024, description="A stdio MCP server to start.")
    args: list[str] | None = Field(default=None, description="The command's arguments.")
    env: dict[str, str] | None = Field(
        default=None, description="The command's environment; values may be `{{secret:NAME}}`."
    )


class UpstreamOut(BaseModel):
    name: str
    transport: str
    url: str | None
    command: str | None
    args: list[str]
    header_names: list[str]
    env_names: list[str]
    created_at: Timestamp

    @classmethod
    def of(cls, upstream: Upstream) -> UpstreamOut:
        return cls(
            name=upstream.name,
            transport=upstream.transport,
            url=upstream.url,
            command=upstream.command,
            args=list(upstream.args),
            header_names=sorted(upstream.headers),
            env_names=sorted(upstream.env),
            created_at=upstream.created_at,
        )


class SyncOut(BaseModel):
    upstream: str
    added: list[str]
    changed: list[str] = Field(description="Tools whose definition changed: refused until approved.")
    reverted: list[str] = Field(description="Tools back to their pinned definition.")
    removed: list[str]
    skipped: list[str] = Field(description="Listed by the upstream but unusable (bad name or definition).")

    @classmethod
    def of(cls, sync: ToolSync) -> SyncOut:
        return cls(
            upstream=sync.upstream,
            added=list(sync.added),
            changed=list(sync.changed),
            reverted=list(sync.reverted),
            removed=list(sync.removed),
            skipped=list(sync.skipped),
        )


class Registered(UpstreamOut):
    tools: SyncOut


class UpstreamList(BaseModel):
    upstreams: list[UpstreamOut]


class ToolOut(BaseModel):
    name: str = Field(description="The name agents call it by: its own, or `<upstream>__<tool>`.")
    upstream: str
    upstream_tool: str
    status: str = Field(description="`pinned`, or `changed`: refused until approved.")
    definition: dict[str, Any] = Field(description="The pinned definition.")
    pending_definition: dict[str, Any] | None = Field(description="The changed definition awaiting approval.")
    pinned_hash: str
    current_hash: str
    first_seen_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, tool: ProxyTool) -> ToolOut:
        return cls(
            name=tool.name,
            upstream=tool.upstream,
            upstream_tool=tool.tool_name,
            status=tool.status,
            definition=tool.definition,
            pending_definition=tool.pending_definition,
            pinned_hash=tool.pinned_hash,
            current_hash=tool.current_hash,
            first_seen_at=tool.first_seen_at,
            updated_at=tool.updated_at,
        )


class ToolList(BaseModel):
    tools: list[ToolOut]


class PolicyOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    policy_id: str
    type: str
    created_at: Timestamp

    @classmethod
    def of(cls, policy: Policy) -> PolicyOut:
        return cls(**{**policy.spec, "policy_id": policy.policy_id, "created_at": policy.created_at})


class PolicyList(BaseModel):
    policies: list[PolicyOut]


class NoBody(BaseModel):
    """No fields: an empty object or no body at all."""

    model_config = ConfigDict(extra="forbid")


class CallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool: str = Field(max_length=64)
    arguments: dict[str, Any] = Field(default_factory=dict)
    session_id: str = Field(max_length=100)


# upstreams


@router.post("/upstreams", status_code=201, response_model=Registered)
async def register_upstream(body: UpstreamCreate, request: Request, who: PrincipalDep) -> Registered:
    upstream, synced = await _service(request).register(who, **body.model_dump(exclude_none=True))
    return Registered(**UpstreamOut.of(upstream).model_dump(), tools=SyncOut.of(synced))


@router.get("/upstreams", response_model=UpstreamList)
async def list_upstreams(gov: GovernorDep, who: PrincipalDep) -> UpstreamList:
    return UpstreamList(upstreams=[UpstreamOut.of(u) for u in await gov.registry.list_upstreams(who)])


@router.delete("/upstreams/{name}", response_model=UpstreamOut)
async def delete_upstream(name: UpstreamName, request: Request, who: PrincipalDep) -> UpstreamOut:
    """Remove an upstream and its tools; answers the upstream as it was."""
    return UpstreamOut.of(await _service(request).delete(who, name))


@router.post("/upstreams/{name}/refresh", response_model=SyncOut)
async def refresh_upstream(
    name: UpstreamName, request: Request, who: PrincipalDep, body: NoBody | None = None
) -> SyncOut:
    return SyncOut.of(await _service(request).refresh(who, name))


# tools


@router.get("/tools", response_model=ToolList)
async def list_tools(gov: GovernorDep, who: PrincipalDep) -> ToolList:
    return ToolList(tools=[ToolOut.of(tool) for tool in await gov.registry.list_proxy_tools(who)])


@router.post("/tools/{name}/approve", response_model=ToolOut)
async def approve_tool(
    name: ToolName, request: Request, who: PrincipalDep, body: NoBody | None = None
) -> ToolOut:
    return ToolOut.of(await _service(request).approve(who, name))


# policies


@router.post("/policies", status_code=201, response_model=PolicyOut)
async def create_policy(body: PolicySpec, gov: GovernorDep, who: PrincipalDep) -> PolicyOut:
    return PolicyOut.of(await gov.registry.create_policy(who, body))


@router.get("/policies", response_model=PolicyList)
async def list_policies(gov: GovernorDep, who: PrincipalDep) -> PolicyList:
    return PolicyList(policies=[PolicyOut.of(policy) for policy in await gov.registry.list_policies(who)])


@router.delete("/policies/{policy_id}", response_model=PolicyOut)
async def delete_policy(policy_id: PolicyId, gov: GovernorDep, who: PrincipalDep) -> PolicyOut:
    """Remove a policy; answers the policy as it was."""
    return PolicyOut.of(await gov.registry.delete_policy(who, policy_id))


# calls


@router.post(
    "/call",
    responses={
        200: {"model": mcp_types.CallToolResult, "description": "The upstream's `CallToolResult`."},
        **APPROVAL_RESPONSE,
    },
)
async def call_tool(body: CallRequest, request: Request, who: PrincipalDep) -> dict[str, Any]:
    """Evaluate, forward and record one tool call; the upstream's `CallToolResult` as it answered,
    with injected secret values scrubbed. A refusal is an error with `flag_reason` and `policy_id`."""
    return await _service(request).call_tool(
        who, session_id=body.session_id, tool=body.tool, arguments=body.arguments
    )
