import assert from "node:assert/strict";
import { after, before, test, type TestContext } from "node:test";

import { generateText, stepCountIs, tool, type StepResult, type ToolSet } from "ai";
import { z } from "zod";

import { ApprovalRequired, BudgetExceeded, governed, governedTools, HaldirClient, HaldirError, ToolDenied } from "../src/index.js";
import { callingModel, shownToModel } from "./model.js";
import { startServer, type LiveServer } from "./server.js";

// Governed local calls need POST /v1/tools/{tool}/begin and /v1/tools/calls/{call_id}/finish. On a
// server without them every test here is skipped, saying so (with CI=true they fail instead, as the
// Python suite's PostgreSQL tests do); they run as soon as the server has them.
const ROUTES = "POST /v1/tools/{tool}/begin and /v1/tools/calls/{call_id}/finish";

let server: LiveServer;
let haldir: HaldirClient;
let routesMissing: string | false;

before(async () => {
  server = await startServer();
  haldir = new HaldirClient({ baseUrl: server.url, apiKey: server.adminKey });
  const present = server.hasRoute("post", "/v1/tools/{tool}/begin") && server.hasRoute("post", "/v1/tools/calls/{call_id}/finish");
  routesMissing = present ? false : `the server has no ${ROUTES} yet`;
  if (present) {
    await haldir.request("POST", "/v1/proxy/policies", { type: "deny", tools: ["delete_database"] });
    await haldir.request("POST", "/v1/approvals/rules", { type: "tool", tool: "send_*" });
    await haldir.request("POST", "/v1/secrets", { name: "MAIL_TOKEN", value: "tok-7f3a9c1e-do-not-leak", scope_required: "read" });
  }
});

after(async () => {
  await server?.stop();
});

function requireRoutes(t: TestContext): boolean {
  if (routesMissing !== false && process.env["CI"] === "true") assert.fail(routesMissing);
  if (routesMissing !== false) t.skip(routesMissing);
  return routesMissing === false;
}

function toolErrors(steps: ReadonlyArray<StepResult<ToolSet>>): unknown[] {
  return steps.flatMap((step) => step.content.flatMap((part) => (part.type === "tool-error" ? [part.error] : [])));
}

const search = tool({
  description: "Search the web",
  inputSchema: z.object({ query: z.string() }),
  execute: async ({ query }) => ({ hits: [`${query} result`] }),
});

test("an allowed call runs, answers the model, and is recorded in the ledger with its cost", async (t) => {
  if (!requireRoutes(t)) return;
  const session = await haldir.createSession("researcher", { scopes: ["execute"], spendLimit: "1.00" });
  const model = callingModel([{ tool: "search", input: { query: "haldir" } }]);

  const result = await generateText({
    model,
    prompt: "find haldir",
    stopWhen: stepCountIs(3),
    tools: { search: governed(search, { session, name: "search", client: haldir, cost: "0.10" }) },
  });

  assert.deepEqual(toolErrors(result.steps), []);
  assert.match(shownToModel(model), /haldir result/);
  const { entries } = await haldir.listEntries({ sessionId: session.session_id, tool: "search" });
  assert.ok(entries.length > 0, "the call is in the ledger");
  assert.ok(entries.every((entry) => entry.status === "ok"));
  assert.ok(entries.some((entry) => entry.cost_usd === "0.10"));
  assert.equal((await haldir.getSession(session.session_id)).spent, "0.10");
});

test("a call a deny policy refuses never runs, reaches the model as ToolDenied, and is recorded as denied", async (t) => {
  if (!requireRoutes(t)) return;
  const session = await haldir.createSession("cleaner", { scopes: ["execute"] });
  let ran = false;
  const deleteDatabase = tool({
    description: "Drop the database",
    inputSchema: z.object({ name: z.string() }),
    execute: async () => {
      ran = true;
      return "dropped";
    },
  });
  const model = callingModel([{ tool: "delete_database", input: { name: "prod" } }]);

  const result = await generateText({
    model,
    prompt: "clean up",
    stopWhen: stepCountIs(3),
    tools: governedTools({ delete_database: deleteDatabase }, { session, client: haldir }),
  });

  assert.equal(ran, false);
  const [error] = toolErrors(result.steps);
  assert.ok(error instanceof ToolDenied);
  assert.equal(error.code, "tool_denied");
  assert.equal(error.status, 403);
  assert.match(shownToModel(model), /ToolDenied: /);
  const { entries } = await haldir.listEntries({ sessionId: session.session_id, tool: "delete_database" });
  assert.deepEqual(
    entries.map((entry) => entry.status),
    ["denied"],
  );
});

test("a call an approval rule holds shows the model and the program the approval id, and runs once approved", async (t) => {
  if (!requireRoutes(t)) return;
  const session = await haldir.createSession("mailer", { scopes: ["execute"] });
  let sent = 0;
  const sendEmail = tool({
    description: "Send an email",
    inputSchema: z.object({ to: z.string() }),
    execute: async ({ to }) => {
      sent += 1;
      return `sent to ${to}`;
    },
  });
  const tools = { send_email: governed(sendEmail, { session, name: "send_email", client: haldir }) };
  const ask = () => callingModel([{ tool: "send_email", input: { to: "ops@example.com" } }]);

  const model = ask();
  const held = await generateText({ model, prompt: "mail ops", stopWhen: stepCountIs(3), tools });

  const [error] = toolErrors(held.steps);
  assert.ok(error instanceof ApprovalRequired);
  const approvalId = error.approvalId ?? "";
  assert.match(approvalId, /^apr_/);
  assert.ok(shownToModel(model).includes(approvalId), "the model reads the approval id");
  assert.equal(sent, 0);

  // A person approves with another key: the key that asked may not decide its own request.
  const approver = await haldir.request<{ key: string }>("POST", "/v1/keys", { name: "approver", scopes: ["approvals:write"] });
  await new HaldirClient({ baseUrl: server.url, apiKey: approver.key }).request("POST", `/v1/approvals/${approvalId}/approve`, {});
  const retried = await generateText({ model: ask(), prompt: "mail ops", stopWhen: stepCountIs(3), tools });

  assert.deepEqual(toolErrors(retried.steps), []);
  assert.equal(sent, 1);
  assert.equal((await haldir.getApproval(approvalId)).status, "consumed");
});

test("a call over the session's budget throws BudgetExceeded and does not run", async (t) => {
  if (!requireRoutes(t)) return;
  const session = await haldir.createSession("spender", { scopes: ["execute"], spendLimit: "1.00" });
  const model = callingModel([{ tool: "search", input: { query: "expensive" } }]);

  const result = await generateText({
    model,
    prompt: "search",
    stopWhen: stepCountIs(3),
    tools: { search: governed(search, { session, name: "search", client: haldir, cost: () => "5.00" }) },
  });

  const [error] = toolErrors(result.steps);
  assert.ok(error instanceof BudgetExceeded);
  assert.equal(error.status, 402);
  assert.equal((await haldir.getSession(session.session_id)).spent, "0.00");
});

test("a secret reference runs the tool with its value, and the value never reaches the model", async (t) => {
  if (!requireRoutes(t)) return;
  const session = await haldir.createSession("notifier", { scopes: ["execute", "read"] });
  const received: string[] = [];
  const notify = tool({
    description: "Call the notification API",
    inputSchema: z.object({ auth: z.string(), message: z.string() }),
    execute: async ({ auth, message }) => {
      received.push(auth);
      return { request: { headers: { authorization: auth } }, echoed: message };
    },
  });
  const failing = tool({
    description: "A call that fails, quoting its credential",
    inputSchema: z.object({ auth: z.string() }),
    execute: async ({ auth }): Promise<string> => {
      throw new Error(`401 from the API with ${auth}`);
    },
  });
  const model = callingModel([
    { tool: "notify", input: { auth: "Bearer {{secret:MAIL_TOKEN}}", message: "hello" } },
    { tool: "notify_failing", input: { auth: "{{secret:MAIL_TOKEN}}" } },
  ]);

  const result = await generateText({
    model,
    prompt: "notify",
    stopWhen: stepCountIs(3),
    tools: governedTools({ notify, notify_failing: failing }, { session, client: haldir }),
  });

  assert.deepEqual(received, ["Bearer tok-7f3a9c1e-do-not-leak"]);
  const shown = shownToModel(model);
  assert.ok(!shown.includes("tok-7f3a9c1e"), `the model was shown the secret: ${shown}`);
  assert.match(shown, /Bearer \[secret:MAIL_TOKEN\]/);
  assert.match(shown, /401 from the API with \[secret:MAIL_TOKEN\]/);
  const [error] = toolErrors(result.steps);
  assert.ok(error instanceof Error && !(error instanceof HaldirError), "the tool's own error is kept, scrubbed");
});
