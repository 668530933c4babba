/**
 * The wrapper against the begin/finish contract of docs/integrations/vercel-ai.md, with a scripted HTTP
 * server in place of Haldir: what it sends, what it runs with, what reaches the model. The same behaviour
 * against a real server is in governed.test.ts.
 */
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, beforeEach, test } from "node:test";

import { generateText, stepCountIs, tool } from "ai";
import { z } from "zod";

import { ApprovalRequired, governed, HaldirClient, ToolDenied } from "../src/index.js";
import { callingModel, shownToModel } from "./model.js";

const SECRET = "s3cr3t-value-91";

interface Received {
  path: string;
  body: Record<string, unknown>;
}

let received: Received[] = [];
let url: string;
const server = createServer((request, response) => void answer(request, response));

async function answer(request: IncomingMessage, response: ServerResponse): Promise<void> {
  let text = "";
  for await (const chunk of request) text += String(chunk);
  const body = JSON.parse(text) as Record<string, unknown>;
  const path = request.url ?? "";
  received.push({ path, body });
  const send = (status: number, payload: unknown) => {
    response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(payload));
  };
  if (path.startsWith("/v1/tools/calls/")) {
    send(200, { call_id: "call_1", status: body["status"], entry_id: "aud_2", charged_usd: "0.00" });
  } else if (path === "/v1/tools/delete_database/begin") {
    send(403, {
      error: "Tool 'delete_database' is on the deny list",
      code: "tool_denied",
      request_id: "req_1",
      flag_reason: "Tool 'delete_database' is on the deny list",
      policy_id: "pol_1",
    });
  } else if (path === "/v1/tools/send_email/begin") {
    send(202, { error: "send_email needs a person's approval", code: "approval_required", request_id: "req_2", approval_id: "apr_1" });
  } else {
    const args = JSON.parse(JSON.stringify(body["arguments"]).replaceAll("{{secret:TOKEN}}", SECRET)) as unknown;
    const secrets = JSON.stringify(body["arguments"]).includes("{{secret:TOKEN}}") ? ["TOKEN"] : [];
    send(201, { call_id: "call_1", tool: "x", session_id: body["session_id"], arguments: args, secrets, cost_usd: body["cost_usd"] ?? "0.00", entry_id: "aud_1" });
  }
}

before(async () => {
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => new Promise<void>((done) => server.close(() => done())));
beforeEach(() => {
  received = [];
});

const client = () => new HaldirClient({ baseUrl: url, apiKey: "hld_test" });

test("the model's arguments and the cost go to begin, the tool runs with the substituted ones, and the call finishes ok", async () => {
  let ranWith: unknown;
  const fetchPage = tool({
    inputSchema: z.object({ auth: z.string(), page: z.number() }),
    execute: async (input) => {
      ranWith = input;
      return { page: input.page, authorization: input.auth };
    },
  });
  const model = callingModel([{ tool: "fetch_page", input: { auth: "Bearer {{secret:TOKEN}}", page: 2 } }]);

  await generateText({
    model,
    prompt: "p",
    stopWhen: stepCountIs(3),
    tools: { fetch_page: governed(fetchPage, { session: "ses_1", name: "fetch_page", client: client(), cost: ({ page }) => `0.0${page}` }) },
  });

  assert.deepEqual(received[0], {
    path: "/v1/tools/fetch_page/begin",
    body: { session_id: "ses_1", arguments: { auth: "Bearer {{secret:TOKEN}}", page: 2 }, cost_usd: "0.02" },
  });
  assert.deepEqual(ranWith, { auth: `Bearer ${SECRET}`, page: 2 });
  assert.equal(received[1]?.path, "/v1/tools/calls/call_1/finish");
  assert.equal(received[1]?.body["status"], "ok");
  assert.equal(typeof received[1]?.body["latency_ms"], "number");
  const shown = shownToModel(model);
  assert.ok(!shown.includes(SECRET));
  assert.match(shown, /Bearer \[secret:TOKEN\]/);
});

test("a tool that throws finishes as an error, and neither the ledger nor the model gets the secret in its message", async () => {
  const failing = tool({
    inputSchema: z.object({ auth: z.string() }),
    execute: async ({ auth }): Promise<string> => {
      throw new TypeError(`refused credential ${auth}`);
    },
  });
  const model = callingModel([{ tool: "failing", input: { auth: "{{secret:TOKEN}}" } }]);

  const result = await generateText({
    model,
    prompt: "p",
    stopWhen: stepCountIs(3),
    tools: { failing: governed(failing, { session: { session_id: "ses_1" }, name: "failing", client: client() }) },
  });

  assert.deepEqual(received[1]?.body["status"], "error");
  assert.equal(received[1]?.body["error"], "TypeError: refused credential [secret:TOKEN]");
  assert.match(shownToModel(model), /refused credential \[secret:TOKEN\]/);
  const error = result.steps[0]?.content.find((part) => part.type === "tool-error")?.error;
  assert.ok(error instanceof TypeError, "the program catches the tool's own error class");
});

test("a refusal never runs the tool nor finishes a call, and reaches the program as ToolDenied with its policy", async () => {
  let ran = false;
  const drop = tool({
    inputSchema: z.object({}),
    execute: async () => {
      ran = true;
      return "dropped";
    },
  });
  const model = callingModel([{ tool: "delete_database", input: {} }]);

  const result = await generateText({
    model,
    prompt: "p",
    stopWhen: stepCountIs(3),
    tools: { delete_database: governed(drop, { session: "ses_1", name: "delete_database", client: client() }) },
  });

  assert.equal(ran, false);
  assert.deepEqual(
    received.map((request) => request.path),
    ["/v1/tools/delete_database/begin"],
  );
  const error = result.steps[0]?.content.find((part) => part.type === "tool-error")?.error;
  assert.ok(error instanceof ToolDenied);
  assert.equal(error.policyId, "pol_1");
  assert.equal(error.requestId, "req_1");
  assert.match(shownToModel(model), /ToolDenied: Tool 'delete_database' is on the deny list/);
});

test("a hold answers ApprovalRequired, whose message names the approval for the model", async () => {
  const send = tool({ inputSchema: z.object({}), execute: async () => "sent" });
  const model = callingModel([{ tool: "send_email", input: {} }]);

  const result = await generateText({
    model,
    prompt: "p",
    stopWhen: stepCountIs(3),
    tools: { send_email: governed(send, { session: "ses_1", name: "send_email", client: client() }) },
  });

  const error = result.steps[0]?.content.find((part) => part.type === "tool-error")?.error;
  assert.ok(error instanceof ApprovalRequired);
  assert.equal(error.approvalId, "apr_1");
  assert.equal(error.status, 202);
  assert.match(shownToModel(model), /ApprovalRequired: send_email needs a person's approval \(approval apr_1\)/);
});

test("a streaming tool's chunks are scrubbed, and the call finishes after the last one", async () => {
  const stream = tool({
    inputSchema: z.object({ auth: z.string() }),
    async *execute({ auth }) {
      yield `partial ${auth}`;
      yield `final ${auth}`;
    },
  });
  const model = callingModel([{ tool: "stream", input: { auth: "{{secret:TOKEN}}" } }]);

  await generateText({
    model,
    prompt: "p",
    stopWhen: stepCountIs(3),
    tools: { stream: governed(stream, { session: "ses_1", name: "stream", client: client() }) },
  });

  assert.equal(received[1]?.body["status"], "ok");
  const shown = shownToModel(model);
  assert.ok(!shown.includes(SECRET));
  assert.match(shown, /final \[secret:TOKEN\]/);
});

test("a stream its consumer closes early is finished as an error", async () => {
  const stream = tool({
    inputSchema: z.object({}),
    async *execute() {
      yield "first";
      yield "never read";
    },
  });
  const execute = governed(stream, { session: "ses_1", name: "stream", client: client() }).execute;
  const chunks = execute({}, { toolCallId: "c1", messages: [], context: {} }) as AsyncGenerator<unknown>;

  assert.deepEqual(await chunks.next(), { value: "first", done: false });
  await chunks.return(undefined);

  assert.deepEqual(received[1]?.body, { status: "error", error: "the stream was closed before its end", latency_ms: received[1]?.body["latency_ms"] });
});

test("a tool without execute cannot be governed", () => {
  const schemaOnly = tool({ inputSchema: z.object({}), outputSchema: z.string() });
  assert.throws(() => governed(schemaOnly, { session: "ses_1", name: "schema_only", client: client() }), /no execute function/);
});
