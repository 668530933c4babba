"""The one exception hierarchy: every failure a caller can see, with its code, HTTP status and exit code."""

from __future__ import annotations

from typing import Any, ClassVar


class HaldirError(Exception):
    """Base of every error Haldir raises on purpose.

    `code` is the stable machine-readable name, `http_status` what the API answers, `exit_code`
    what the CLI exits with. `details` carries extra JSON-safe fields for the error body.
    """

    code: ClassVar[str] = "haldir_error"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class InvalidRequest(HaldirError):
    code = "invalid_request"
    http_status = 400
    exit_code = 2


class InvalidAmount(InvalidRequest):
    code = "invalid_amount"


class InvalidScope(InvalidRequest):
    code = "invalid_scope"


class Unauthenticated(HaldirError):
    code = "unauthenticated"
    http_status = 401
    exit_code = 3


class InvalidApiKey(Unauthenticated):
    code = "invalid_api_key"


class InsufficientScope(HaldirError):
    """The API key lacks the scope a route or tool needs."""

    code = "insufficient_scope"
    http_status = 403
    exit_code = 4


class ScopeDenied(HaldirError):
    """The agent session lacks the scope an operation needs."""

    code = "scope_denied"
    http_status = 403
    exit_code = 4


class StdioNotAllowed(HaldirError):
    """A command (stdio) upstream runs a program on the Haldir server: the operator allows it only for
    the tenants in HALDIR_STDIO_TENANTS and, when HALDIR_STDIO_COMMANDS is set, only those programs."""

    code = "stdio_not_allowed"
    http_status = 403
    exit_code = 4


class BudgetExceeded(HaldirError):
    """The amount does not fit in what is left of the session's budget; `details` holds the remainder."""

    code = "budget_exceeded"
    http_status = 402
    exit_code = 4


class OutboundRefused(InvalidRequest):
    """An outbound URL (an upstream, a webhook) points where this server must not connect."""

    code = "outbound_refused"


class CallDenied(HaldirError):
    """A governed tool call refused by the proxy's pipeline. `details` carry `flag_reason` and, when a
    policy decided, its `policy_id`; the ledger records the same."""

    code = "call_denied"
    http_status = 403
    exit_code = 4


class ToolDenied(CallDenied):
    """The tool is on a deny list."""

    code = "tool_denied"


class NotAllowed(CallDenied):
    """An allow list applies and does not name the tool, or the session lacks the tool's scope."""

    code = "not_allowed"


class ArgumentRejected(CallDenied):
    """An arguments policy refused a call argument."""

    code = "argument_rejected"


class OutsideTimeWindow(CallDenied):
    """A time-window policy does not allow calls now."""

    code = "outside_time_window"


class RateLimited(CallDenied):
    """A rate limit is used up; `retry_after` (seconds) says when the window reopens."""

    code = "rate_limited"
    http_status = 429


class QuotaExceeded(HaldirError):
    """A tenant's quota, set by the operator, is used up; `retry_after` (seconds) says when it resets,
    `quota` which one (`actions_per_month`, `agents`, `requests_per_second`)."""

    code = "quota_exceeded"
    http_status = 429
    exit_code = 4


class ToolDefinitionChanged(CallDenied):
    """The upstream changed the tool's definition since it was pinned; an operator must approve it."""

    code = "tool_definition_changed"
    http_status = 409


class ApprovalRequired(HaldirError):
    """The request waits for a person: nothing ran. `approval_id` names the request to decide; making the
    same request again once it is approved runs it once. A REST answer of 202, not a failure."""

    code = "approval_required"
    http_status = 202
    exit_code = 10


class ApprovalDenied(HaldirError):
    """A person denied this exact request, or its approval lapsed unused."""

    code = "approval_denied"
    http_status = 403
    exit_code = 4


class SelfApproval(HaldirError):
    """The API key that asked for an approval may not decide it: a decision is made out of band."""

    code = "self_approval"
    http_status = 403
    exit_code = 4


class UpstreamUnavailable(HaldirError):
    """An upstream MCP server could not be reached, did not answer in time, or answered with an error."""

    code = "upstream_unavailable"
    http_status = 502
    exit_code = 7


class NotFound(HaldirError):
    code = "not_found"
    http_status = 404
    exit_code = 5


class Conflict(HaldirError):
    code = "conflict"
    http_status = 409
    exit_code = 6


class PayloadTooLarge(HaldirError):
    code = "payload_too_large"
    http_status = 413
    exit_code = 2


class IdempotencyKeyReused(HaldirError):
    """The same Idempotency-Key was sent before with a different request."""

    code = "idempotency_key_reused"
    http_status = 422
    exit_code = 6


class SchemaOutOfDate(HaldirError):
    code = "schema_out_of_date"
    http_status = 503
    exit_code = 7


class StoreUnavailable(HaldirError):
    code = "store_unavailable"
    http_status = 503
    exit_code = 7


class ServerUnavailable(HaldirError):
    """The SDK or a client command could not reach a Haldir server, or a proxy answered for it."""

    code = "server_unavailable"
    http_status = 503
    exit_code = 7


class ConfigurationError(HaldirError):
    code = "configuration_error"
    http_status = 500
    exit_code = 8


class InternalError(HaldirError):
    code = "internal_error"
    http_status = 500
    exit_code = 1


class LedgerTampered(HaldirError):
    """Stored ledger data no longer matches what was hashed and signed."""

    code = "ledger_tampered"
    http_status = 500
    exit_code = 9


class EvidenceTampered(HaldirError):
    """A compliance evidence pack does not verify: `details` name the `section` (1-8) and the `field`, or
    for Markdown the `line`, that does not match what was signed."""

    code = "evidence_tampered"
    http_status = 422
    exit_code = 9


class VaultSealed(HaldirError):
    """The master key that opens a tenant's data key is not configured on this server."""

    code = "vault_sealed"
    http_status = 503
    exit_code = 8


class VaultTampered(HaldirError):
    """A stored secret or data key does not open under the right key: it was changed or moved."""

    code = "vault_tampered"
    http_status = 500
    exit_code = 9


def error_classes() -> dict[str, type[HaldirError]]:
    """Every concrete error class by code, so clients can turn a `code` back into its class."""
    found: dict[str, type[HaldirError]] = {}
    pending: list[type[HaldirError]] = [HaldirError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found
