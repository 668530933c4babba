/**
 * The shapes the governance API answers, as it sends them (snake_case, amounts as decimal strings).
 * See docs/api.md for every field.
 */

/** An amount of USD: a decimal string (`"12.50"`, exact) or a number. Answers always hold strings. */
export type Amount = string | number;

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

export interface Session {
  session_id: string;
  agent_id: string;
  scopes: string[];
  spend_limit: string;
  ttl: number;
  created_at: string;
  expires_at: string;
}

export interface SessionDetail extends Session {
  spent: string;
  remaining_budget: string;
  is_valid: boolean;
  revoked_at: string | null;
}

export interface PermissionCheck {
  allowed: boolean;
  session_id: string;
  scope: string;
  reason: string | null;
}

export interface PaymentAuthorization {
  authorization_id: string;
  amount: string;
  remaining_budget: string;
  status: "authorized" | "captured" | "voided" | "expired";
}

export type EntryStatus = "ok" | "denied" | "error";

export interface LoggedAction {
  entry_id: string;
  leaf_index: number;
  entry_hash: string;
  flagged: boolean;
  flag_reason: string | null;
}

/** A ledger entry: its record's fields plus the hashes that tie it into the log. */
export interface AuditEntry {
  entry_id: string;
  tenant_id: string;
  session_id: string;
  agent_id: string;
  tool: string;
  action: string;
  status: EntryStatus;
  cost_usd: string;
  charged_usd: string;
  details: JsonObject;
  flagged: boolean;
  flag_reason: string | null;
  timestamp: string;
  leaf_index: number;
  leaf_hash: string;
  prev_hash: string;
  entry_hash: string;
  [field: string]: unknown;
}

export interface AuditPage {
  entries: AuditEntry[];
  next_cursor: string | null;
}

export type ApprovalStatus = "pending" | "approved" | "denied" | "expired" | "consumed";

export interface Approval {
  approval_id: string;
  status: ApprovalStatus;
  kind: "payment" | "call" | "request";
  session_id: string;
  agent_id: string;
  tool: string;
  arguments_sha256: string | null;
  amount_usd: string;
  reason: string;
  rule_ids: string[];
  requested_by: string;
  requested_at: string;
  expires_at: string;
  decided_by: string | null;
  decided_at: string | null;
  note: string | null;
  consumed_at: string | null;
}

/** An admitted local tool call: run the tool with `arguments` (secrets substituted), then finish it. */
export interface ToolCallBegun {
  call_id: string;
  tool: string;
  session_id: string;
  arguments: JsonObject;
  /** Names of the secrets substituted into `arguments`. */
  secrets: string[];
  cost_usd: string;
  entry_id: string;
}

export interface ToolCallFinished {
  call_id: string;
  status: "ok" | "error";
  entry_id: string;
  charged_usd: string;
}
