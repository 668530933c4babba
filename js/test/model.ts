/**
 * The `ai` package's own mock language model, scripted: the first step asks for the given tool calls, the
 * second answers text. Each call's prompt is kept, so a test reads exactly what the model was shown.
 */
import { MockLanguageModelV4 } from "ai/test";

const usage = {
  inputTokens: { total: 10, noCache: 10, cacheRead: 0, cacheWrite: 0 },
  outputTokens: { total: 5, text: 5, reasoning: 0 },
};

export function callingModel(calls: ReadonlyArray<{ tool: string; input: unknown }>): MockLanguageModelV4 {
  return new MockLanguageModelV4({
    doGenerate: [
      {
        content: calls.map((call, index) => ({
          type: "tool-call" as const,
          toolCallId: `call-${index}`,
          toolName: call.tool,
          input: JSON.stringify(call.input),
        })),
        finishReason: { unified: "tool-calls", raw: undefined },
        usage,
        warnings: [],
      },
      { content: [{ type: "text", text: "done" }], finishReason: { unified: "stop", raw: undefined }, usage, warnings: [] },
    ],
  });
}

/** What the model was shown of the tool results, as JSON text, on its second step. */
export function shownToModel(model: MockLanguageModelV4): string {
  const second = model.doGenerateCalls[1];
  if (second === undefined) throw new Error("the model was not called a second time");
  return JSON.stringify(second.prompt.filter((message) => message.role === "tool"));
}
