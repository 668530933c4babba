export { HaldirClient } from "./client.js";
export type {
  AuthorizePaymentOptions,
  BeginToolCallOptions,
  CreateSessionOptions,
  FinishToolCallOptions,
  HaldirClientOptions,
  ListEntriesOptions,
  LogActionOptions,
} from "./client.js";
export { governed, governedTools } from "./governed.js";
export type { GovernedOptions } from "./governed.js";
export {
  ApprovalDenied,
  ApprovalRequired,
  ArgumentRejected,
  BudgetExceeded,
  CallDenied,
  Conflict,
  HaldirError,
  IdempotencyKeyReused,
  InsufficientScope,
  InternalError,
  InvalidAmount,
  InvalidApiKey,
  InvalidRequest,
  InvalidScope,
  NotAllowed,
  NotFound,
  OutsideTimeWindow,
  PolicyDenied,
  QuotaExceeded,
  RateLimited,
  ScopeDenied,
  SelfApproval,
  ServerUnavailable,
  StoreUnavailable,
  ToolDefinitionChanged,
  ToolDenied,
  Unauthenticated,
  UpstreamUnavailable,
  VaultSealed,
} from "./errors.js";
export type { ErrorBody } from "./errors.js";
export type * from "./types.js";
