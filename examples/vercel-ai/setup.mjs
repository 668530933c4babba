// Once per tenant, with a key holding proxy:write, approvals:write and vault:write (the admin key):
// a deny policy, an approval rule for refunds, and the secret the order tool authenticates with.
import { HaldirClient } from "@haldir/ai-sdk";

const haldir = new HaldirClient(); // HALDIR_URL, HALDIR_API_KEY

const { policies } = await haldir.request("GET", "/v1/proxy/policies");
if (!policies.some((policy) => policy.type === "deny" && policy.tools.includes("delete_customer"))) {
  await haldir.request("POST", "/v1/proxy/policies", { type: "deny", tools: ["delete_customer"] });
}
const { rules } = await haldir.request("GET", "/v1/approvals/rules");
if (!rules.some((rule) => rule.type === "tool" && rule.tool === "refund_*")) {
  await haldir.request("POST", "/v1/approvals/rules", { type: "tool", tool: "refund_*", description: "refunds need a person" });
}
await haldir.request("POST", "/v1/secrets", { name: "ORDERS_TOKEN", value: "orders-api-token-123", scope_required: "read" });
console.log("policy, approval rule and secret ORDERS_TOKEN are in place");
