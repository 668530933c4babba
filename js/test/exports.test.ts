import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";

import * as published from "@haldir/ai-sdk";

import { fromResponse, HaldirError } from "../src/errors.js";

test("the package exports exactly its public names, through its exports map", () => {
  assert.deepEqual(Object.keys(published).sort(), [
    "ApprovalDenied",
    "ApprovalRequired",
    "ArgumentRejected",
    "BudgetExceeded",
    "CallDenied",
    "Conflict",
    "HaldirClient",
    "HaldirError",
    "IdempotencyKeyReused",
    "InsufficientScope",
    "InternalError",
    "InvalidAmount",
    "InvalidApiKey",
    "InvalidRequest",
    "InvalidScope",
    "NotAllowed",
    "NotFound",
    "OutsideTimeWindow",
    "PolicyDenied",
    "QuotaExceeded",
    "RateLimited",
    "ScopeDenied",
    "SelfApproval",
    "ServerUnavailable",
    "StoreUnavailable",
    "ToolDefinitionChanged",
    "ToolDenied",
    "Unauthenticated",
    "UpstreamUnavailable",
    "VaultSealed",
    "governed",
    "governedTools",
  ]);
});

// Codes the server's errors.py names that an API client never receives over HTTP, or that the client
// rightly reads as their parent class.
const NOT_SENT_TO_CLIENTS = new Set([
  "configuration_error", // refuses to start; never an HTTP answer
  "schema_out_of_date", // refuses to start
  "ledger_tampered", // raised by offline verifiers
  "evidence_tampered", // raised by offline verifiers
  "stdio_not_allowed", // an operator's upstream registration, not an agent's call
  "outbound_refused", // idem; reads as InvalidRequest's sibling HaldirError
  "payload_too_large",
  "vault_tampered",
]);

test("every error code the server defines for clients has its own class here, carrying code and status", async () => {
  const source = await readFile(new URL("../../../src/haldir/errors.py", import.meta.url), "utf8");
  const codes = [...source.matchAll(/^\s+code = "([a-z_]+)"$/gm)].map((match) => match[1] as string);
  assert.ok(codes.length > 20, "read the server's codes");

  for (const code of codes.filter((code) => !NOT_SENT_TO_CLIENTS.has(code))) {
    const error = fromResponse(418, { error: "message", code, request_id: "req_1" });
    assert.notEqual(error.constructor, HaldirError, `no class for the server's code ${code}`);
    assert.equal(error.code, code);
    assert.equal(error.status, 418);
    assert.equal(error.requestId, "req_1");
  }
});

test("an unknown code from a newer server is a HaldirError that keeps the code and every field", () => {
  const error = fromResponse(409, { error: "new thing", code: "brand_new", request_id: "req_2", extra: 1 });
  assert.equal(error.constructor, HaldirError);
  assert.equal(error.code, "brand_new");
  assert.equal(error.body["extra"], 1);
  assert.equal(error.name, "HaldirError");
});
