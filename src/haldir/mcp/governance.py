"""The governance MCP server: twelve tools, each one governor method over a `GovernanceBackend`, and the
`security-audit` and `budget-check` prompts. Haldir errors become tool error results, never a
broken session."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import mcp_types as types
import structlog
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, ValidationError

from haldir import __version__
from haldir.clock import SystemClock
from haldir.core.clock import Clock
from haldir.errors import HaldirError, InternalError, InvalidRequest
from haldir.http.schemas import Money
from haldir.mcp import prompts
from haldir.mcp.backends import GovernanceBackend, Json

BackendFactory = Callable[[ServerRequestContext[Any, Any]], GovernanceBackend]
"""The backend that serves one request: fixed for stdio, built from the request's API key over HTTP."""

A = TypeVar("A", bound=BaseModel)
log = structlog.get_logger("haldir.mcp")

INSTRUCTIONS = (
    "Haldir governs what an AI agent may do. Create a session for an agent with scopes, a TTL and a spend "
    "limit; check a scope before acting; authorize payments against the session's budget; log each action "
    "to the tamper-evident ledger; read the audit trail and spend. A secret's value is released only to a "
    "session that holds the secret's scope."
)


# Arguments: the REST request fields, snake_case, checked again by the governor.


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


SessionId = Field(max_length=100, description="A session id, `ses_…`.")


class CreateSessionArgs(_Args):
    agent_id: str = Field(min_length=1, max_length=200, description="The agent the session is for.")
    scopes: list[str] = Field(
        default_factory=list,
        description="Session scopes: `name` grants every `name:<qualifier>`, `name:qualifier` only itself. "
        "Built in: read, write, execute, delete, spend, admin. Default none: the session allows nothing.",
    )
    ttl: StrictInt | None = Field(default=None, ge=1, description="Seconds until it expires; default 3600.")
    spend_limit: Money | None = Field(
        default=None, description="USD the session may spend; absent means nothing may be spent."
    )


class SessionArgs(_Args):
    session_id: str = SessionId


class CheckPermissionArgs(_Args):
    session_id: str = SessionId
    scope: str = Field(
        min_length=1, max_length=200, description="A session scope; `spend:<amount>` also asks for budget."
    )


class StoreSecretArgs(_Args):
    name: str = Field(max_length=128, description="1 to 128 letters, digits, '_', '.' or '-'.")
    value: str = Field(description="The value, at most 64 KiB. Never returned by this tool.")
    scope_required: str = Field(
        default="read", max_length=200, description="The session scope a release needs; default `read`."
    )


class GetSecretArgs(_Args):
    name: str = Field(max_length=128, description="The secret's name.")
    session_id: str = Field(max_length=100, description="The session the value is released to.")
    version: StrictInt | None = Field(default=None, ge=1, description="A version; default the latest.")


class AuthorizePaymentArgs(_Args):
    session_id: str = SessionId
    amount: Money = Field(description="USD, more than 0, at most 6 decimals.")
    currency: str = Field(default="USD", max_length=10, description="Only `USD`.")
    description: str = Field(default="", max_length=500, description="What the payment is for.")


class LogActionArgs(_Args):
    session_id: str = SessionId
    tool: str = Field(min_length=1, max_length=200, description="The tool the agent called.")
    action: str = Field(min_length=1, max_length=200, description="What it did, e.g. `charge`.")
    cost_usd: Money = Field(default=0, description="What the action cost; charged to the budget.")  # type: ignore[assignment]
    details: dict[str, Any] = Field(default_factory=dict, description="Any JSON object, up to 64 KiB.")
    status: Literal["ok", "denied", "error"] = Field(default="ok", description="The action's outcome.")
    authorization_id: str | None = Field(
        default=None, max_length=100, description="A payment authorization that already holds the cost."
    )


class AuditTrailArgs(_Args):
    session_id: str | None = Field(default=None, max_length=200, description="Only this session's.")
    agent_id: str | None = Field(default=None, max_length=200, description="Only this agent's.")
    tool: str | None = Field(default=None, max_length=200, description="Only this tool's.")
    status: str | None = Field(default=None, max_length=200, description="`ok`, `denied` or `error`.")
    flagged: bool | None = Field(default=None, description="Only flagged (true) or unflagged (false).")
    since: AwareDatetime | None = Field(default=None, description="ISO 8601 with a zone; inclusive.")
    until: AwareDatetime | None = Field(default=None, description="ISO 8601 with a zone; exclusive.")
    limit: StrictInt = Field(default=50, ge=1, le=200, description="Page size.")
    cursor: str | None = Field(default=None, max_length=512, description="`next_cursor` of the last page.")
    order: Literal["asc", "desc"] = Field(default="desc", description="`desc`: newest first.")


class SpendArgs(_Args):
    session_id: str | None = Field(default=None, max_length=200, description="Only this session's.")
    agent_id: str | None = Field(default=None, max_length=200, description="Only this agent's.")
    since: AwareDatetime | None = Field(default=None, description="ISO 8601 with a zone; inclusive.")
    until: AwareDatetime | None = Field(default=None, description="ISO 8601 with a zone; exclusive.")


class RequestApprovalArgs(_Args):
    session_id: str = SessionId
    tool: str = Field(
        min_length=1, max_length=200, description="What the agent wants to do: a tool or action."
    )
    amount: Money = Field(default=0, description="What it would cost, in USD.")  # type: ignore[assignment]
    reason: str = Field(default="", max_length=1000, description="Why, for the person who decides.")
    arguments_sha256: str | None = Field(
        default=None, max_length=64, description="SHA-256 (hex) of the RFC 8785 JSON of the call's arguments."
    )


class ApprovalArgs(_Args):
    approval_id: str = Field(max_length=100, description="An approval id, `apr_…`.")


# The tools: each calls one backend method with its arguments.


async def create_session(backend: GovernanceBackend, args: CreateSessionArgs) -> Json:
    return await backend.create_session(
        agent_id=args.agent_id, scopes=args.scopes, ttl=args.ttl, spend_limit=args.spend_limit
    )


async def get_session(backend: GovernanceBackend, args: SessionArgs) -> Json:
    return await backend.get_session(args.session_id)


async def revoke_session(backend: GovernanceBackend, args: SessionArgs) -> Json:
    return await backend.revoke_session(args.session_id)


async def check_permission(backend: GovernanceBackend, args: CheckPermissionArgs) -> Json:
    return await backend.check_permission(args.session_id, args.scope)


async def store_secret(backend: GovernanceBackend, args: StoreSecretArgs) -> Json:
    return await backend.store_secret(name=args.name, value=args.value, scope_required=args.scope_required)


async def get_secret(backend: GovernanceBackend, args: GetSecretArgs) -> Json:
    return await backend.get_secret(args.name, session_id=args.session_id, version=args.version)


async def authorize_payment(backend: GovernanceBackend, args: AuthorizePaymentArgs) -> Json:
    return await backend.authorize_payment(
        session_id=args.session_id, amount=args.amount, currency=args.currency, description=args.description
    )


async def log_action(backend: GovernanceBackend, args: LogActionArgs) -> Json:
    return await backend.log_action(
        session_id=args.session_id,
        tool=args.tool,
        action=args.action,
        cost_usd=args.cost_usd,
        details=args.details,
        status=args.status,
        authorization_id=args.authorization_id,
    )


async def get_audit_trail(backend: GovernanceBackend, args: AuditTrailArgs) -> Json:
    return await backend.list_entries(**args.model_dump())


async def get_spend(backend: GovernanceBackend, args: SpendArgs) -> Json:
    return await backend.spend(**args.model_dump())


async def request_approval(backend: GovernanceBackend, args: RequestApprovalArgs) -> Json:
    return await backend.request_approval(
        args.session_id,
        args.tool,
        amount=args.amount,
        reason=args.reason,
        arguments_sha256=args.arguments_sha256,
    )


async def get_approval(backend: GovernanceBackend, args: ApprovalArgs) -> Json:
    return await backend.get_approval(args.approval_id)


@dataclass(frozen=True)
class GovernanceTool(Generic[A]):
    name: str
    args: type[A]
    run: Callable[[GovernanceBackend, A], Awaitable[Json]]
    scope: str  # the API key scope it needs, as its REST route does
    description: str
    hints: types.ToolAnnotations

    def definition(self) -> types.Tool:
        return types.Tool(
            name=self.name,
            description=f"{self.description} API key scope: `{self.scope}`.",
            input_schema=self.args.model_json_schema(),
            annotations=self.hints,
        )


def _hints(
    title: str, *, read_only: bool, destructive: bool = False, idempotent: bool
) -> types.ToolAnnotations:
    # Every tool acts on this Haldir deployment alone: a closed world.
    return types.ToolAnnotations(
        title=title,
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=False,
    )


TOOLS: tuple[GovernanceTool[Any], ...] = (
    GovernanceTool(
        "createSession",
        CreateSessionArgs,
        create_session,
        "sessions:write",
        "Create a session, a scoped and expiring grant for one agent with a spend limit; returns session_id.",
        _hints("Create session", read_only=False, idempotent=False),
    ),
    GovernanceTool(
        "getSession",
        SessionArgs,
        get_session,
        "sessions:read",
        "Read a session: its scopes, spend limit, spent, remaining budget, expiry and whether it is valid.",
        _hints("Get session", read_only=True, idempotent=True),
    ),
    GovernanceTool(
        "revokeSession",
        SessionArgs,
        revoke_session,
        "sessions:write",
        "Revoke a session: from now on it allows nothing. Revoking it again changes nothing.",
        _hints("Revoke session", read_only=False, destructive=True, idempotent=True),
    ),
    GovernanceTool(
        "checkPermission",
        CheckPermissionArgs,
        check_permission,
        "sessions:read",
        "Whether a session allows a scope now, and why not. Records nothing and reserves no budget.",
        _hints("Check permission", read_only=True, idempotent=True),
    ),
    GovernanceTool(
        "storeSecret",
        StoreSecretArgs,
        store_secret,
        "vault:write",
        "Store a value, encrypted, as the next version of a named secret; older versions stay readable. "
        "The answer never holds the value.",
        _hints("Store secret", read_only=False, idempotent=False),
    ),
    GovernanceTool(
        "getSecret",
        GetSecretArgs,
        get_secret,
        "vault:read",
        "Release a secret's value to a session that is valid and holds the secret's scope_required. "
        "The release (or the refusal) is recorded in the ledger.",
        _hints("Get secret", read_only=False, idempotent=False),
    ),
    GovernanceTool(
        "authorizePayment",
        AuthorizePaymentArgs,
        authorize_payment,
        "payments:write",
        "Reserve an amount of a session's budget before spending it; refused with budget_exceeded when it "
        "does not fit. The session needs the `spend` scope.",
        _hints("Authorize payment", read_only=False, idempotent=False),
    ),
    GovernanceTool(
        "logAction",
        LogActionArgs,
        log_action,
        "audit:write",
        "Append an action of a session to the tamper-evident ledger. A cost_usd is matched to the "
        "session's payment authorizations first, the rest charged to its budget; never refused for budget, "
        "but flagged over_budget when it takes the session past its limit.",
        _hints("Log action", read_only=False, idempotent=False),
    ),
    GovernanceTool(
        "getAuditTrail",
        AuditTrailArgs,
        get_audit_trail,
        "audit:read",
        "Ledger entries, newest first, filtered by session, agent, tool, status, flag or time; one page.",
        _hints("Get audit trail", read_only=True, idempotent=True),
    ),
    GovernanceTool(
        "getSpend",
        SpendArgs,
        get_spend,
        "audit:read",
        "What was charged, in total and by session, agent and tool, optionally for a time range.",
        _hints("Get spend", read_only=True, idempotent=True),
    ),
    GovernanceTool(
        "requestApproval",
        RequestApprovalArgs,
        request_approval,
        "sessions:write",
        "Ask a person to approve an action of a session before taking it; returns approval_id, pending "
        "until decided. Asking again for the same thing while it is open returns the same approval.",
        _hints("Request approval", read_only=False, idempotent=True),
    ),
    GovernanceTool(
        "getApproval",
        ApprovalArgs,
        get_approval,
        "approvals:read",
        "An approval's status (pending, approved, denied, expired, consumed), decision and note.",
        _hints("Get approval", read_only=True, idempotent=True),
    ),
)


def build_governance_server(backend_factory: BackendFactory, *, clock: Clock | None = None) -> Server[Any]:
    """The governance server; `backend_factory` picks the backend of each request. `clock` dates the
    budget-check prompt's projections."""
    tools = {tool.name: tool for tool in TOOLS}
    clock = clock or SystemClock()

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool.definition() for tool in TOOLS])

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        tool = tools.get(params.name)
        if tool is None:
            raise MCPError(types.INVALID_PARAMS, f"unknown tool {params.name!r}; see tools/list")

        async def run() -> types.CallToolResult:
            args = tool.args.model_validate(params.arguments or {})
            return structured(await tool.run(backend_factory(ctx), args))

        return await guarded(tool.name, run)

    async def list_prompts(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=list(prompts.PROMPTS))

    async def get_prompt(
        ctx: ServerRequestContext[Any, Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        try:
            return await prompts.render(
                backend_factory(ctx), params.name, params.arguments or {}, clock.now()
            )
        except HaldirError as exc:
            raise protocol_error(exc) from None

    def input_schema(name: str) -> dict[str, Any] | None:
        tool = tools.get(name)
        return None if tool is None else tool.args.model_json_schema()

    return Server(
        "haldir",
        version=__version__,
        title="Haldir governance",
        instructions=INSTRUCTIONS,
        get_tool_input_schema=input_schema,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
    )


def error_body(exc: HaldirError) -> Json:
    """The REST error envelope's fields (a remote server's answer adds its `request_id`)."""
    return {"error": exc.message, "code": exc.code, **exc.details}


def protocol_error(exc: HaldirError) -> MCPError:
    """A Haldir error where MCP has no tool result to carry it (listing, prompts): a JSON-RPC error whose
    message starts with the code and whose data is the REST error body."""
    status = types.INTERNAL_ERROR if exc.http_status >= 500 else types.INVALID_PARAMS
    return MCPError(status, f"{_code(exc)}: {exc.message}", data=error_body(exc))


def invalid_arguments(exc: ValidationError) -> InvalidRequest:
    """Argument problems, one per field, without the submitted values (one may be a secret)."""
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or 'arguments'}: {error['msg']}"
        for error in exc.errors()
    ]
    return InvalidRequest("; ".join(problems), problems=problems)


def _code(exc: HaldirError) -> str:
    # A remote error with a code this client does not know keeps the server's code in its details.
    return str(exc.details.get("code", exc.code))


async def guarded(tool: str, run: Callable[[], Awaitable[types.CallToolResult]]) -> types.CallToolResult:
    """Run one tool call so that nothing it raises breaks the session: bad arguments, a Haldir error or a
    crash each become a tool error result."""
    try:
        result = await run()
    except ValidationError as exc:
        return tool_error(tool, invalid_arguments(exc))
    except HaldirError as exc:
        return tool_error(tool, exc)
    except Exception:
        log.exception("mcp.tool_crashed", tool=tool)
        return tool_error(tool, InternalError("internal error; the server log has the details"))
    log.info("mcp.tool", tool=tool, code=None)
    return result


def structured(result: Json) -> types.CallToolResult:
    """A REST body as a tool result: compact JSON text, and the same object as structured content."""
    text = json.dumps(result, separators=(",", ":"))
    return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=result)


def tool_error(tool: str, exc: HaldirError) -> types.CallToolResult:
    log.info("mcp.tool", tool=tool, code=_code(exc))
    return types.CallToolResult(
        content=[types.TextContent(text=f"{_code(exc)}: {exc.message}")],
        structured_content=error_body(exc),
        is_error=True,
    )
