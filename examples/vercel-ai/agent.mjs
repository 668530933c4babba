// A support agent with three tools, every call governed by Haldir. The model here is the AI SDK's mock,
// scripted to call all three, so the example runs offline; put a provider's model in its place
// (e.g. `openai("gpt-5")` from @ai-sdk/openai) and the rest stays as it is.
import { generateText, stepCountIs, tool } from "ai";
import { MockLanguageModelV4 } from "ai/test";
import { z } from "zod";
import { HaldirClient, HaldirError, governedTools } from "@haldir/ai-sdk";

const haldir = new HaldirClient(); // HALDIR_URL, HALDIR_API_KEY
const session = await haldir.createSession("support-bot", { scopes: ["execute", "read"], spendLimit: "1.00", ttl: 900 });

const tools = governedTools(
  {
    lookup_order: tool({
      description: "Look up an order; auth is a bearer token",
      inputSchema: z.object({ orderId: z.string(), auth: z.string() }),
      // `auth` arrives as the secret's value; the model only ever wrote {{secret:ORDERS_TOKEN}}.
      execute: async ({ orderId, auth }) => ({ orderId, status: "shipped", requestedWith: auth }),
    }),
    refund_order: tool({
      description: "Refund an order",
      inputSchema: z.object({ orderId: z.string(), amount: z.number() }),
      execute: async ({ orderId, amount }) => ({ orderId, refunded: amount }),
    }),
    delete_customer: tool({
      description: "Delete a customer",
      inputSchema: z.object({ customerId: z.string() }),
      execute: async () => "deleted",
    }),
  },
  { session, client: haldir, cost: { lookup_order: "0.01" } },
);

const usage = { inputTokens: { total: 0, noCache: 0, cacheRead: 0, cacheWrite: 0 }, outputTokens: { total: 0, text: 0, reasoning: 0 } };
const call = (toolCallId, toolName, input) => ({ type: "tool-call", toolCallId, toolName, input: JSON.stringify(input) });
const model = new MockLanguageModelV4({
  doGenerate: [
    {
      content: [
        call("1", "lookup_order", { orderId: "1042", auth: "Bearer {{secret:ORDERS_TOKEN}}" }),
        call("2", "refund_order", { orderId: "1042", amount: 20 }),
        call("3", "delete_customer", { customerId: "cus_9" }),
      ],
      finishReason: { unified: "tool-calls", raw: undefined },
      usage,
      warnings: [],
    },
    { content: [{ type: "text", text: "Order 1042 has shipped; the refund waits for approval." }], finishReason: { unified: "stop", raw: undefined }, usage, warnings: [] },
  ],
});

const result = await generateText({ model, tools, stopWhen: stepCountIs(3), prompt: "Where is order 1042? Refund 20 and delete customer cus_9." });

for (const part of result.steps.flatMap((step) => step.content)) {
  if (part.type === "tool-result") console.log(`${part.toolName}: ok`, JSON.stringify(part.output));
  if (part.type === "tool-error" && part.error instanceof HaldirError) {
    const { code, status, approvalId } = part.error;
    console.log(`${part.toolName}: ${code} (${status})${approvalId ? ` approval ${approvalId}` : ""}`);
  }
}
console.log("model:", result.text);

const { entries } = await haldir.listEntries({ sessionId: session.session_id, order: "asc" });
for (const entry of entries) console.log(`ledger: ${entry.tool} ${entry.action} ${entry.status} cost ${entry.cost_usd}`);
console.log("spent:", (await haldir.getSession(session.session_id)).spent);
