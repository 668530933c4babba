import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  ApprovalRequired,
  BudgetExceeded,
  HaldirClient,
  HaldirError,
  InvalidApiKey,
  InvalidScope,
  NotFound,
  ServerUnavailable,
} from "../src/index.js";
import { startServer, type LiveServer } from "./server.js";

let server: LiveServer;
let haldir: HaldirClient;

before(async () => {
  server = await startServer();
  haldir = new HaldirClient({ baseUrl: server.url, apiKey: server.adminKey });
});

after(async () => {
  await server?.stop();
});

test("a new session answers its scopes and spend limit, and reads back with its budget", async () => {
  const session = await haldir.createSession("reader", { scopes: ["read", "spend"], spendLimit: "5.00", ttl: 600 });
  assert.match(session.session_id, /^ses_/);
  assert.deepEqual(session.scopes, ["read", "spend"]);
  assert.equal(session.spend_limit, "5.00");

  const detail = await haldir.getSession(session.session_id);
  assert.equal(detail.remaining_budget, "5.00");
  assert.equal(detail.is_valid, true);
});

test("a permission check allows a scope the session holds and names the scopes it has when it does not", async () => {
  const session = await haldir.createSession("checker", { scopes: ["read"] });

  assert.equal((await haldir.checkPermission(session.session_id, "read")).allowed, true);
  const denied = await haldir.checkPermission(session.session_id, "write");
  assert.equal(denied.allowed, false);
  assert.match(denied.reason ?? "", /read/);
});

test("a revoked session allows nothing from then on", async () => {
  const session = await haldir.createSession("revoked", { scopes: ["read"] });

  const revoked = await haldir.revokeSession(session.session_id);

  assert.equal(revoked.is_valid, false);
  assert.notEqual(revoked.revoked_at, null);
  assert.equal((await haldir.checkPermission(session.session_id, "read")).allowed, false);
});

test("a payment authorization reserves budget, and one over what is left throws BudgetExceeded", async () => {
  const session = await haldir.createSession("buyer", { scopes: ["spend"], spendLimit: "10.00" });

  const payment = await haldir.authorizePayment(session.session_id, "7.50", { description: "credits" });
  assert.equal(payment.status, "authorized");
  assert.equal(payment.remaining_budget, "2.50");

  const refused = await haldir.authorizePayment(session.session_id, "3.00").catch((error: unknown) => error);
  assert.ok(refused instanceof BudgetExceeded);
  assert.equal(refused.code, "budget_exceeded");
  assert.equal(refused.status, 402);
  assert.equal(refused.remainingBudget, "2.50");
  assert.match(refused.requestId ?? "", /^req_/);
});

test("a logged action is in the ledger with its cost, and the denied payment is recorded as denied", async () => {
  const session = await haldir.createSession("logger", { scopes: ["spend"], spendLimit: "1.00" });
  await haldir.authorizePayment(session.session_id, "2.00").catch(() => undefined);

  const logged = await haldir.logAction(session.session_id, "search", "query", { costUsd: "0.25", details: { q: "haldir" } });
  assert.match(logged.entry_id, /^aud_/);

  const { entries } = await haldir.listEntries({ sessionId: session.session_id, order: "asc" });
  assert.deepEqual(
    entries.map((entry) => [entry.tool, entry.status, entry.cost_usd]),
    [
      ["payments", "denied", "2.00"],
      ["search", "ok", "0.25"],
    ],
  );
  const entry = await haldir.getEntry(logged.entry_id);
  assert.deepEqual(entry.record.details, { q: "haldir" });
});

test("a payment an approval rule holds throws ApprovalRequired with the approval id, and the approval reads pending", async () => {
  await haldir.request("POST", "/v1/approvals/rules", { type: "agent", agent_id: "held-buyer" });
  const session = await haldir.createSession("held-buyer", { scopes: ["spend"], spendLimit: "100.00" });

  const held = await haldir.authorizePayment(session.session_id, "40.00").catch((error: unknown) => error);

  assert.ok(held instanceof ApprovalRequired);
  assert.equal(held.status, 202);
  assert.match(held.approvalId ?? "", /^apr_/);
  const approval = await haldir.getApproval(held.approvalId ?? "");
  assert.equal(approval.status, "pending");
  assert.equal(approval.amount_usd, "40.00");
});

test("an unknown session is NotFound, a malformed scope InvalidScope, and both are HaldirErrors", async () => {
  const missing = await haldir.getSession("ses_0000000000000000000000").catch((error: unknown) => error);
  assert.ok(missing instanceof NotFound && missing instanceof HaldirError);
  assert.equal(missing.status, 404);

  const malformed = await haldir.createSession("bad", { scopes: ["not a scope!"] }).catch((error: unknown) => error);
  assert.ok(malformed instanceof InvalidScope);
});

test("a wrong API key is InvalidApiKey and an unreachable server is ServerUnavailable", async () => {
  const wrongKey = new HaldirClient({ baseUrl: server.url, apiKey: `hld_${"x".repeat(48)}` });
  await assert.rejects(wrongKey.getSession("ses_0000000000000000000000"), InvalidApiKey);

  const nowhere = new HaldirClient({ baseUrl: "http://127.0.0.1:9", apiKey: server.adminKey, timeoutMs: 2000 });
  await assert.rejects(nowhere.getSession("ses_x"), (error: unknown) => {
    assert.ok(error instanceof ServerUnavailable);
    assert.match(error.message, /cannot reach the Haldir server at http:\/\/127\.0\.0\.1:9/);
    return true;
  });
});
