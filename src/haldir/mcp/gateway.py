"""The MCP gateway: one MCP server in front of a tenant's upstream MCP servers.

It lists every upstream tool under its aggregated name, plus four of Haldir's own
(`haldir_check_permission`, `haldir_get_spend`, `haldir_get_audit`, `haldir_get_approval`), and sends every
`tools/call`
through the proxy's pipeline for one session: the agent and the upstreams need no change. A refusal
comes back as an MCP tool error whose text starts with the denial code (`tool_denied: …`) and whose
structured content is the REST error body (`code`, `flag_reason`, `policy_id`, `retry_after`). A call held
for approval is an `approval_required` tool error naming the `approval_id`; the gateway may hold it open for
a while (`approval_wait`) and run it as soon as a person approves it.

When the tenant's tools change (an upstream said `notifications/tools/list_changed`, an operator
refreshed, approved or removed one), clients hear `notifications/tools/list_changed`: 2026-07-28 clients
on their `subscriptions/listen` stream, handshake-era clients on their connection where it stays open
(stdio; stateless HTTP has no channel to tell them on).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import mcp_types as types
import structlog
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp_types import SERVER_INFO_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from haldir import __version__
from haldir.errors import ApprovalRequired, HaldirError
from haldir.governor import Governor
from haldir.mcp.backends import Json
from haldir.mcp.governance import guarded, protocol_error, structured

log = structlog.get_logger("haldir.mcp.gateway")
APPROVAL_POLL_SECONDS = 0.25  # how often a held call asks whether its approval was decided
WATCH_SECONDS = 0.1  # how often a server process looks at the change counter for other processes' changes

INSTRUCTIONS = (
    "Tools of this server reach real MCP servers through Haldir, which checks each call against the "
    "session's scopes, budget and the tenant's policies, and records it in a tamper-evident ledger. A "
    "refused call returns an error naming the reason. haldir_check_permission, haldir_get_spend and "
    "haldir_get_audit tell the agent what it may do, what it has spent and what it did."
)


class GatewayBackend(Protocol):
    """What the gateway calls, for one session; answers are REST bodies. Met in-process by
    `haldir.proxy.gateway.LocalGateway` and over HTTP by `RemoteGateway`."""

    @property
    def session_id(self) -> str: ...

    async def list_proxy_tools(self) -> Json: ...

    async def call_tool(self, *, session_id: str, tool: str, arguments: dict[str, Any]) -> Json: ...

    async def check_permission(self, session_id: str, scope: str) -> Json: ...

    async def spend(self, *, session_id: str | None = None) -> Json: ...

    async def list_entries(self, *, session_id: str | None = None, limit: int = 50) -> Json: ...

    async def get_approval(self, approval_id: str) -> Json: ...


GatewayFactory = Callable[[ServerRequestContext[Any, Any]], GatewayBackend]
"""The backend of one request: fixed for stdio; over HTTP, from the API key and `X-Session-ID`."""

TenantOf = Callable[[ServerRequestContext[Any, Any]], str]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckArgs(_Args):
    scope: str = Field(max_length=200, description="A session scope, e.g. `read`, `spend:stripe`.")


class NoArgs(_Args):
    pass


class ApprovalArgs(_Args):
    approval_id: str = Field(max_length=100, description="The `approval_id` a held call answered with.")


class AuditArgs(_Args):
    limit: int = Field(default=20, ge=1, le=100, description="How many of the latest entries.")


@dataclass(frozen=True)
class _OwnTool:
    name: str
    description: str
    args: type[BaseModel]
    run: Callable[[GatewayBackend, Any], Awaitable[Json]]

    def definition(self) -> types.Tool:
        return types.Tool(
            name=self.name,
            description=self.description,
            input_schema=self.args.model_json_schema(),
            annotations=types.ToolAnnotations(
                read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
            ),
        )


async def _check(backend: GatewayBackend, args: CheckArgs) -> Json:
    return await backend.check_permission(backend.session_id, args.scope)


async def _spend(backend: GatewayBackend, args: NoArgs) -> Json:
    return await backend.spend(session_id=backend.session_id)


async def _audit(backend: GatewayBackend, args: AuditArgs) -> Json:
    return await backend.list_entries(session_id=backend.session_id, limit=args.limit)


async def _approval(backend: GatewayBackend, args: ApprovalArgs) -> Json:
    return await backend.get_approval(args.approval_id)


OWN_TOOLS = (
    _OwnTool(
        "haldir_check_permission",
        "Whether this agent's session holds a scope, and why not when it does not.",
        CheckArgs,
        _check,
    ),
    _OwnTool("haldir_get_spend", "What this agent's session has spent, by tool.", NoArgs, _spend),
    _OwnTool(
        "haldir_get_audit", "This agent's session's latest ledger entries, newest first.", AuditArgs, _audit
    ),
    _OwnTool(
        "haldir_get_approval",
        "Whether a call held for approval was approved (then call it again, unchanged), denied or expired.",
        ApprovalArgs,
        _approval,
    ),
)
OWN_NAMES = frozenset(tool.name for tool in OWN_TOOLS)


def upstream_tool(view: Json) -> types.Tool:
    """A proxy tool as clients see it: its pinned definition under its aggregated name."""
    return types.Tool.model_validate({**view["definition"], "name": view["name"]})


def upstream_tools(views: list[Json]) -> list[types.Tool]:
    """The proxy tools clients can call. A tool named like one of the gateway's own is left out: calls
    by that name reach the gateway's tool, and a listing must not name two tools alike. So is a
    definition the SDK cannot read, rather than failing the whole listing."""
    tools = []
    for view in views:
        if view["name"] in OWN_NAMES:
            log.warning("gateway.tool_shadowed", tool=view["name"], upstream=view.get("upstream"))
            continue
        try:
            tools.append(upstream_tool(view))
        except ValidationError:
            log.warning("gateway.tool_unreadable", tool=view["name"], upstream=view.get("upstream"))
    return tools


def forwarded_result(body: Json) -> types.CallToolResult:
    """An upstream's result as the gateway answers it. The upstream's `serverInfo` stamp in `_meta` is
    dropped: the SDK stamps a result only when it has none, and the client talks to the gateway."""
    meta = body.get("_meta")
    if isinstance(meta, dict) and SERVER_INFO_META_KEY in meta:
        rest = {key: value for key, value in meta.items() if key != SERVER_INFO_META_KEY}
        body = {key: value for key, value in body.items() if key != "_meta"} | (
            {"_meta": rest} if rest else {}
        )
    return types.CallToolResult.model_validate(body)


Digest = Callable[[str], Awaitable[str]]  # a tenant's tool list, as a digest that moves when it changes


class ToolChangeFanout:
    """Tells a tenant's gateway clients that their tool list changed.

    2026-07-28 clients hear it on their `subscriptions/listen` streams, through a per-tenant bus, so one
    tenant's changes never reach another's clients. A handshake-era client can only be told on a
    connection that stays open between its requests (`held_connections`, as on stdio): the SDK makes a
    `ServerSession` per request, so the latest one of each tenant is kept, and its notifications ride the
    connection's own channel. Stateless HTTP has no such channel: there, only listen streams hear.

    Once it `follow`s a digest of each tenant's tools, a change is told once, whichever way it is heard:
    from this process (a refresh, an approval) or, through `watch`, from any other process or replica.
    """

    def __init__(self, *, held_connections: bool = False) -> None:
        self._held = held_connections
        self._digest: Digest | None = None  # set by `follow`, once the server's governor exists
        self._told: dict[str, str] = {}  # tenant -> digest of the tool list its clients last heard of
        self._sessions: dict[str, ServerSession] = {}
        self._buses: dict[str, InMemorySubscriptionBus] = {}
        self._listeners: dict[str, ListenHandler] = {}

    def follow(self, digest: Digest) -> None:
        """Tell each change once, by comparing `digest`s of the tenant's tools (see the class)."""
        self._digest = digest

    def seen(self, tenant_id: str, session: ServerSession) -> None:
        if self._held and session.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            self._sessions[tenant_id] = session

    def listen_handler(self, tenant_id: str) -> ListenHandler:
        handler = self._listeners.get(tenant_id)
        if handler is None:
            bus = self._buses.setdefault(tenant_id, InMemorySubscriptionBus())
            handler = self._listeners[tenant_id] = ListenHandler(bus)
        return handler

    async def changed(self, tenant_id: str) -> None:
        if self._digest is not None:
            now = await self._digest(tenant_id)
            if self._told.get(tenant_id) == now:
                return
            self._told[tenant_id] = now
        bus = self._buses.get(tenant_id)
        if bus is not None:
            await bus.publish(ToolsListChanged())
        session = self._sessions.get(tenant_id)
        if session is None:
            return
        try:
            with anyio.fail_after(5):
                await session.send_tool_list_changed()
        except Exception as exc:  # the client went away; a later request remembers its successor
            log.info("gateway.notify_failed", tenant_id=tenant_id, error=type(exc).__name__)
            if self._sessions.get(tenant_id) is session:
                del self._sessions[tenant_id]

    async def watch(self, epoch: Callable[[], int | None], *, every: float = WATCH_SECONDS) -> None:
        """Hear changes made by other processes and replicas, until cancelled: whenever the change counter
        moves (or while it cannot be trusted), compare each listening tenant's tools with what its clients
        last heard; otherwise just note where a newly listening tenant's tools stand."""
        if self._digest is None:
            return
        last = epoch()
        while True:
            await anyio.sleep(every)
            current = epoch()
            moved, last = current is None or current != last, current
            for tenant in {*self._buses, *self._sessions}:
                if moved:  # a tenant seen for the first time is told too: better once too often than never
                    await self._quietly(self.changed, tenant)
                elif tenant not in self._told:
                    await self._quietly(self._baseline, tenant)

    async def _baseline(self, tenant_id: str) -> None:
        assert self._digest is not None
        self._told[tenant_id] = await self._digest(tenant_id)

    async def _quietly(self, step: Callable[[str], Awaitable[None]], tenant_id: str) -> None:
        try:
            await step(tenant_id)
        except Exception as exc:  # the store may be unavailable for a moment: the next round tries again
            log.warning("gateway.watch_failed", tenant_id=tenant_id, error=type(exc).__name__)


def tool_digest(governor: Governor) -> Digest:
    """The digest of a tenant's tools as its gateway clients see them: names, pins and status."""

    async def digest(tenant_id: str) -> str:
        tools = await governor.registry.proxy_tools(tenant_id)
        seen = sorted((t.name, t.upstream, t.status, t.pinned_hash, t.current_hash) for t in tools)
        return hashlib.sha256(json.dumps(seen).encode()).hexdigest()

    return digest


def build_gateway_server(
    backend_for: GatewayFactory,
    tenant_of: TenantOf,
    fanout: ToolChangeFanout,
    *,
    approval_wait: float = 0.0,
) -> Server[Any]:
    """The gateway server; `backend_for` picks each request's backend, `tenant_of` its tenant. A call held
    for approval waits up to `approval_wait` seconds for the decision before it answers."""
    own = {tool.name: tool for tool in OWN_TOOLS}

    def seen(ctx: ServerRequestContext[Any, Any]) -> None:
        if ctx.session is not None:
            fanout.seen(tenant_of(ctx), ctx.session)

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        seen(ctx)
        try:
            views = (await backend_for(ctx).list_proxy_tools())["tools"]
        except HaldirError as exc:
            raise protocol_error(exc) from None
        return types.ListToolsResult(tools=upstream_tools(views) + [tool.definition() for tool in OWN_TOOLS])

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        seen(ctx)

        async def run() -> types.CallToolResult:
            backend = backend_for(ctx)
            mine = own.get(params.name)
            if mine is None:
                arguments = params.arguments or {}
                try:
                    forwarded = await backend.call_tool(
                        session_id=backend.session_id, tool=params.name, arguments=arguments
                    )
                except ApprovalRequired as held:
                    if approval_wait <= 0 or not await _decided(backend, held, within=approval_wait):
                        raise
                    # Decided: the same call again runs once if approved, or answers the denial.
                    forwarded = await backend.call_tool(
                        session_id=backend.session_id, tool=params.name, arguments=arguments
                    )
                return forwarded_result(forwarded)
            return structured(await mine.run(backend, mine.args.model_validate(params.arguments or {})))

        return await guarded(params.name, run)

    async def listen(
        ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        return await fanout.listen_handler(tenant_of(ctx))(ctx, params)

    def input_schema(name: str) -> dict[str, Any] | None:
        mine = own.get(name)
        return None if mine is None else mine.args.model_json_schema()

    return Server(
        "haldir-gateway",
        version=__version__,
        title="Haldir MCP gateway",
        instructions=INSTRUCTIONS,
        get_tool_input_schema=input_schema,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_subscriptions_listen=listen,
    )


async def _decided(backend: GatewayBackend, held: ApprovalRequired, *, within: float) -> bool:
    """Whether the held call's approval was decided (or lapsed) within `within` seconds, asking every
    quarter second."""
    approval_id = str(held.details.get("approval_id", ""))
    with anyio.move_on_after(within):
        while True:
            await anyio.sleep(APPROVAL_POLL_SECONDS)
            if (await backend.get_approval(approval_id))["status"] != "pending":
                return True
    return False
