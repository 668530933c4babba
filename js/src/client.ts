/**
 * The typed client of Haldir's governance API: sessions, permission checks, payments, the audit ledger,
 * approvals, and the two routes of a governed local tool call. Method names follow the Python SDK's.
 */
import { segment, Transport, type Query, type TransportOptions } from "./http.js";
import type {
  Amount,
  Approval,
  AuditEntry,
  AuditPage,
  EntryStatus,
  JsonObject,
  LoggedAction,
  PaymentAuthorization,
  PermissionCheck,
  Session,
  SessionDetail,
  ToolCallBegun,
  ToolCallFinished,
} from "./types.js";

export type HaldirClientOptions = TransportOptions;

export interface CreateSessionOptions {
  scopes?: string[];
  /** Seconds; the server's default is 3600. */
  ttl?: number;
  spendLimit?: Amount;
  idempotencyKey?: string;
}

export interface AuthorizePaymentOptions {
  description?: string;
  idempotencyKey?: string;
}

export interface LogActionOptions {
  costUsd?: Amount;
  details?: JsonObject;
  status?: EntryStatus;
  authorizationId?: string;
}

export interface ListEntriesOptions {
  sessionId?: string;
  agentId?: string;
  tool?: string;
  status?: EntryStatus;
  flagged?: boolean;
  since?: string;
  until?: string;
  limit?: number;
  cursor?: string;
  order?: "asc" | "desc";
}

export interface BeginToolCallOptions {
  /** What the call costs, reserved against the session's budget before the tool runs. */
  costUsd?: Amount | undefined;
  signal?: AbortSignal | undefined;
}

export interface FinishToolCallOptions {
  /** Why the tool failed; scrub secret values from it first (the `governed` wrapper does). */
  error?: string | undefined;
  latencyMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

export class HaldirClient {
  readonly #transport: Transport;

  constructor(options: HaldirClientOptions = {}) {
    this.#transport = new Transport(options);
  }

  get baseUrl(): string {
    return this.#transport.baseUrl;
  }

  // Sessions

  createSession(agentId: string, options: CreateSessionOptions = {}): Promise<Session> {
    return this.#transport.send({
      method: "POST",
      path: "/v1/sessions",
      body: { agent_id: agentId, scopes: options.scopes, ttl: options.ttl, spend_limit: options.spendLimit },
      headers: idempotency(options.idempotencyKey),
    });
  }

  getSession(sessionId: string): Promise<SessionDetail> {
    return this.#transport.send({ method: "GET", path: `/v1/sessions/${segment(sessionId)}` });
  }

  revokeSession(sessionId: string): Promise<SessionDetail> {
    return this.#transport.send({ method: "DELETE", path: `/v1/sessions/${segment(sessionId)}` });
  }

  /** Whether the session allows `scope` now; records nothing. A denial is `allowed: false`, not an error. */
  checkPermission(sessionId: string, scope: string): Promise<PermissionCheck> {
    return this.#transport.send({
      method: "POST",
      path: `/v1/sessions/${segment(sessionId)}/check`,
      body: { scope },
    });
  }

  // Payments

  authorizePayment(sessionId: string, amount: Amount, options: AuthorizePaymentOptions = {}): Promise<PaymentAuthorization> {
    return this.#transport.send({
      method: "POST",
      path: "/v1/payments/authorize",
      body: { session_id: sessionId, amount, description: options.description },
      headers: idempotency(options.idempotencyKey),
    });
  }

  // Audit ledger

  logAction(sessionId: string, tool: string, action: string, options: LogActionOptions = {}): Promise<LoggedAction> {
    return this.#transport.send({
      method: "POST",
      path: "/v1/audit",
      body: {
        session_id: sessionId,
        tool,
        action,
        cost_usd: options.costUsd,
        details: options.details,
        status: options.status,
        authorization_id: options.authorizationId,
      },
    });
  }

  /** One page of ledger entries, newest first unless `order: "asc"`. */
  listEntries(options: ListEntriesOptions = {}): Promise<AuditPage> {
    const query: Query = {
      session_id: options.sessionId,
      agent_id: options.agentId,
      tool: options.tool,
      status: options.status,
      flagged: options.flagged,
      since: options.since,
      until: options.until,
      limit: options.limit,
      cursor: options.cursor,
      order: options.order,
    };
    return this.#transport.send({ method: "GET", path: "/v1/audit", query });
  }

  getEntry(entryId: string): Promise<{ record: AuditEntry; leaf_index: number; leaf_hash: string; prev_hash: string; entry_hash: string }> {
    return this.#transport.send({ method: "GET", path: `/v1/audit/entries/${segment(entryId)}` });
  }

  // Approvals

  getApproval(approvalId: string): Promise<Approval> {
    return this.#transport.send({ method: "GET", path: `/v1/approvals/${segment(approvalId)}` });
  }

  // Governed local tool calls

  /**
   * Admit a call of a local tool: the session's scope, the policies and approval rules decide, the cost is
   * reserved and the admission is in the ledger before this returns. Refusals throw (`ToolDenied`,
   * `BudgetExceeded`, `ApprovalRequired`, …).
   */
  beginToolCall(tool: string, sessionId: string, args: JsonObject, options: BeginToolCallOptions = {}): Promise<ToolCallBegun> {
    return this.#transport.send({
      method: "POST",
      path: `/v1/tools/${segment(tool)}/begin`,
      body: { session_id: sessionId, arguments: args, cost_usd: options.costUsd },
      signal: options.signal,
    });
  }

  /** Record the outcome of an admitted call; an `error` releases its reserved cost. */
  finishToolCall(callId: string, status: "ok" | "error", options: FinishToolCallOptions = {}): Promise<ToolCallFinished> {
    return this.#transport.send({
      method: "POST",
      path: `/v1/tools/calls/${segment(callId)}/finish`,
      body: { status, error: options.error, latency_ms: options.latencyMs },
      signal: options.signal,
    });
  }

  /** Any other route of the API, with the same authentication and errors: `request("GET", "/v1/usage")`. */
  request<T>(method: "GET" | "POST" | "DELETE", path: string, body?: unknown, query?: Query): Promise<T> {
    return this.#transport.send({ method, path, body, query });
  }
}

function idempotency(key: string | undefined): Record<string, string> | undefined {
  return key === undefined ? undefined : { "Idempotency-Key": key };
}
