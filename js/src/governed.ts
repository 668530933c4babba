/**
 * `governed(tool, {session, name})`: an `ai` tool whose every execution is admitted by Haldir first (scope,
 * policies, approval rules, budget), runs with the secrets Haldir substituted, is recorded in the ledger
 * with its outcome, and never hands a secret value back to the model.
 */
import type { Tool, ToolExecutionOptions } from "ai";

import { HaldirClient, type BeginToolCallOptions } from "./client.js";
import { isPlainObject, scrub, scrubText, substitutedValues, type SecretValues } from "./secrets.js";
import type { Amount, JsonObject, ToolCallBegun } from "./types.js";

export interface GovernedOptions<INPUT> {
  /** The agent session every call runs under: its id, or the session as `createSession` answered it. */
  session: string | { readonly session_id: string };
  /** The tool's name as Haldir's policies and `execute:<tool>` scopes name it; usually its key in `tools`. */
  name: string;
  /** Default: a client from `HALDIR_URL` and `HALDIR_API_KEY`. The key needs `proxy:write`. */
  client?: HaldirClient | undefined;
  /** What one call costs, reserved before it runs and released if it fails. */
  cost?: Amount | ((input: INPUT) => Amount | undefined) | undefined;
}

type Execute<INPUT, OUTPUT> = (input: INPUT, options: ToolExecutionOptions<never>) => AsyncIterable<OUTPUT> | PromiseLike<OUTPUT> | OUTPUT;

/**
 * The same tool, governed. A refusal throws the `HaldirError` subclass of its code (`ToolDenied`,
 * `BudgetExceeded`, `ApprovalRequired` with `approvalId`, …): `generateText` turns it into a `tool-error`
 * the model reads as `"<ClassName>: <Haldir's message>"`, and the program finds the error itself in the
 * step's content.
 */
export function governed<T extends Tool>(tool: T, options: GovernedOptions<InputOf<T>>): T {
  const execute = tool.execute as Execute<InputOf<T>, unknown> | undefined;
  if (execute === undefined) {
    throw new TypeError(`tool '${options.name}' has no execute function: there is nothing local to govern`);
  }
  const client = options.client ?? new HaldirClient();
  const sessionId = typeof options.session === "string" ? options.session : options.session.session_id;
  const run = async (input: InputOf<T>, execution: ToolExecutionOptions<never>): Promise<unknown> => {
    const cost = typeof options.cost === "function" ? options.cost(input) : options.cost;
    const begin: BeginToolCallOptions = { costUsd: cost, signal: execution.abortSignal };
    const sent = asArguments(input);
    const call = await client.beginToolCall(options.name, sessionId, sent, begin);
    const secrets = substitutedValues(sent, call.arguments);
    const started = performance.now();
    const finish = (status: "ok" | "error", error?: string) =>
      client.finishToolCall(call.call_id, status, { error, latencyMs: Math.round(performance.now() - started) });
    let result: unknown;
    try {
      result = await execute(fromArguments(call, input), execution);
    } catch (error) {
      const clean = scrubError(error, secrets);
      await finish("error", messageOf(clean));
      throw clean;
    }
    if (isAsyncIterable(result)) return streamed(result, secrets, finish);
    await finish("ok");
    return scrub(result, secrets);
  };
  return { ...tool, execute: run } as T;
}

/** Every tool of a `tools` record governed under one session, each named by its key. */
export function governedTools<TOOLS extends Record<string, Tool>>(
  tools: TOOLS,
  options: Omit<GovernedOptions<unknown>, "name" | "cost"> & {
    cost?: { [NAME in keyof TOOLS]?: Amount | ((input: InputOf<TOOLS[NAME]>) => Amount | undefined) };
  },
): TOOLS {
  const client = options.client ?? new HaldirClient();
  const governedEntries = Object.entries(tools).map(([name, tool]) => {
    const cost = options.cost?.[name as keyof TOOLS] as GovernedOptions<unknown>["cost"];
    return [name, governed(tool, { session: options.session, name, client, cost })];
  });
  return Object.fromEntries(governedEntries) as TOOLS;
}

type InputOf<T> = T extends Tool<infer INPUT> ? INPUT : unknown;

/** The call's `arguments`: Haldir governs JSON objects, so any other input travels as `{"input": …}`. */
function asArguments(input: unknown): JsonObject {
  return isPlainObject(input) ? (input as JsonObject) : { input: (input ?? null) as JsonObject[string] };
}

function fromArguments<INPUT>(call: ToolCallBegun, input: INPUT): INPUT {
  return (isPlainObject(input) ? call.arguments : call.arguments["input"]) as INPUT;
}

async function* streamed(
  chunks: AsyncIterable<unknown>,
  secrets: SecretValues,
  finish: (status: "ok" | "error", error?: string) => Promise<unknown>,
): AsyncGenerator<unknown> {
  try {
    for await (const chunk of chunks) yield scrub(chunk, secrets);
  } catch (error) {
    const clean = scrubError(error, secrets);
    await finish("error", messageOf(clean));
    throw clean;
  }
  await finish("ok");
}

/** The tool's own error, its message and stack cleaned of secret values, so the model never reads them. */
function scrubError(error: unknown, secrets: SecretValues): unknown {
  if (error instanceof Error) {
    error.message = scrubText(error.message, secrets);
    if (error.stack !== undefined) error.stack = scrubText(error.stack, secrets);
    return error;
  }
  return typeof error === "string" ? scrubText(error, secrets) : scrub(error, secrets);
}

function messageOf(error: unknown): string {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return text.slice(0, 2000);
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof value === "object" && value !== null && Symbol.asyncIterator in value;
}
