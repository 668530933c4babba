/**
 * The one error hierarchy of the client: every refusal or failure carries Haldir's `code`, the HTTP `status`
 * and the server's `requestId`; `fromResponse` turns an error body back into the same class the server meant.
 */

/** The error body every Haldir route answers on failure (and on a `202` hold). */
export interface ErrorBody {
  readonly error: string;
  readonly code: string;
  readonly request_id?: string;
  readonly [field: string]: unknown;
}

export class HaldirError extends Error {
  /** The code this class stands for; an unknown code from a newer server is kept on `code` instead. */
  static readonly code: string = "haldir_error";

  readonly code: string;
  readonly status: number;
  readonly requestId: string | undefined;
  /** The whole error body, with the fields some codes add (`remaining_budget`, `policy_id`, …). */
  readonly body: ErrorBody;

  constructor(message: string, options: { status: number; body: ErrorBody; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = options.body.code;
    this.status = options.status;
    this.body = options.body;
    this.requestId = options.body.request_id;
  }

  /** The approval that holds (or denied) this request, when the server named one. */
  get approvalId(): string | undefined {
    return stringField(this.body, "approval_id");
  }

  /** Why a policy refused the call, e.g. "Tool 'delete_database' is on the deny list". */
  get flagReason(): string | undefined {
    return stringField(this.body, "flag_reason");
  }

  /** The policy that decided a refusal. */
  get policyId(): string | undefined {
    return stringField(this.body, "policy_id");
  }
}

export class InvalidRequest extends HaldirError {
  static override readonly code: string = "invalid_request";
}
export class InvalidAmount extends InvalidRequest {
  static override readonly code = "invalid_amount";
}
export class InvalidScope extends InvalidRequest {
  static override readonly code = "invalid_scope";
}
export class Unauthenticated extends HaldirError {
  static override readonly code: string = "unauthenticated";
}
export class InvalidApiKey extends Unauthenticated {
  static override readonly code = "invalid_api_key";
}
export class InsufficientScope extends HaldirError {
  static override readonly code = "insufficient_scope";
}
/** The agent session is revoked, expired, or lacks the session scope the operation needs. */
export class ScopeDenied extends HaldirError {
  static override readonly code = "scope_denied";
}
export class BudgetExceeded extends HaldirError {
  static override readonly code = "budget_exceeded";

  get remainingBudget(): string | undefined {
    return stringField(this.body, "remaining_budget");
  }
}

/** A governed call refused by the session's scope or a policy; the subclasses name which. */
export class CallDenied extends HaldirError {
  static override readonly code: string = "call_denied";
}
export class ToolDenied extends CallDenied {
  static override readonly code = "tool_denied";
}
export class NotAllowed extends CallDenied {
  static override readonly code = "not_allowed";
}
export class PolicyDenied extends CallDenied {
  static override readonly code = "policy_denied";
}
export class ArgumentRejected extends CallDenied {
  static override readonly code = "argument_rejected";
}
export class OutsideTimeWindow extends CallDenied {
  static override readonly code = "outside_time_window";
}
export class RateLimited extends CallDenied {
  static override readonly code = "rate_limited";

  /** Seconds until the rate-limit window opens again. */
  get retryAfter(): number | undefined {
    const value = this.body["retry_after"];
    return typeof value === "number" ? value : undefined;
  }
}
/** A quota the operator set for the tenant is used up: nothing was recorded. */
export class QuotaExceeded extends HaldirError {
  static override readonly code = "quota_exceeded";

  /** Seconds until the quota resets (the next UTC month, or the next second). */
  get retryAfter(): number | undefined {
    const value = this.body["retry_after"];
    return typeof value === "number" ? value : undefined;
  }

  /** Which quota: `actions_per_month`, `agents` or `requests_per_second`. */
  get quota(): string | undefined {
    return stringField(this.body, "quota");
  }
}
export class ToolDefinitionChanged extends CallDenied {
  static override readonly code = "tool_definition_changed";
}

/** A person must decide: nothing ran. Make the same request again once `approvalId` is approved. */
export class ApprovalRequired extends HaldirError {
  static override readonly code = "approval_required";

  get expiresAt(): string | undefined {
    return stringField(this.body, "expires_at");
  }
}
export class ApprovalDenied extends HaldirError {
  static override readonly code = "approval_denied";
}
export class SelfApproval extends HaldirError {
  static override readonly code = "self_approval";
}
export class NotFound extends HaldirError {
  static override readonly code = "not_found";
}
export class Conflict extends HaldirError {
  static override readonly code = "conflict";
}
export class IdempotencyKeyReused extends HaldirError {
  static override readonly code = "idempotency_key_reused";
}
export class UpstreamUnavailable extends HaldirError {
  static override readonly code = "upstream_unavailable";
}
export class StoreUnavailable extends HaldirError {
  static override readonly code = "store_unavailable";
}
/** The server could not be reached, or answered something that is not a Haldir response. */
export class ServerUnavailable extends HaldirError {
  static override readonly code = "server_unavailable";
}
export class VaultSealed extends HaldirError {
  static override readonly code = "vault_sealed";
}
export class InternalError extends HaldirError {
  static override readonly code = "internal_error";
}

type ErrorClass = (new (message: string, options: { status: number; body: ErrorBody; cause?: unknown }) => HaldirError) & {
  readonly code: string;
};

const CLASSES: readonly ErrorClass[] = [
  InvalidRequest,
  InvalidAmount,
  InvalidScope,
  Unauthenticated,
  InvalidApiKey,
  InsufficientScope,
  ScopeDenied,
  BudgetExceeded,
  CallDenied,
  ToolDenied,
  NotAllowed,
  PolicyDenied,
  ArgumentRejected,
  OutsideTimeWindow,
  RateLimited,
  QuotaExceeded,
  ToolDefinitionChanged,
  ApprovalRequired,
  ApprovalDenied,
  SelfApproval,
  NotFound,
  Conflict,
  IdempotencyKeyReused,
  UpstreamUnavailable,
  StoreUnavailable,
  ServerUnavailable,
  VaultSealed,
  InternalError,
];

const BY_CODE: ReadonlyMap<string, ErrorClass> = new Map(CLASSES.map((cls) => [cls.code, cls]));

/** The error a Haldir error body stands for: the class of its `code`, or `HaldirError` for a code this client does not know. */
export function fromResponse(status: number, body: ErrorBody): HaldirError {
  const cls = BY_CODE.get(body.code) ?? HaldirError;
  return new cls(messageOf(body), { status, body });
}

/** The server's message, naming the approval when there is one: it is all a model reads of a refused tool. */
function messageOf(body: ErrorBody): string {
  const approvalId = stringField(body, "approval_id");
  if (approvalId === undefined || body.error.includes(approvalId)) return body.error;
  return `${body.error} (approval ${approvalId})`;
}

/** Whether a parsed JSON value has the shape of Haldir's error body. */
export function isErrorBody(value: unknown): value is ErrorBody {
  if (typeof value !== "object" || value === null) return false;
  const record = value as Record<string, unknown>;
  return typeof record["error"] === "string" && typeof record["code"] === "string";
}

function stringField(body: ErrorBody, field: string): string | undefined {
  const value = body[field];
  return typeof value === "string" ? value : undefined;
}
