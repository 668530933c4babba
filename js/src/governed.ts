/**
 * `governed(tool, {session, name})`: an `ai` tool whose every execution is admitted by Haldir first (scope,
 * policies, approval rules, budget), runs with the secrets Haldir substituted, is recorded in the ledger
 * with its outcome, and never hands a secret value back to the model.
 */
import type { Tool, ToolExecutionOptions } from "ai";

import { HaldirClient } from "./client.js";
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
  const admit = async (input: InputOf<T>, execution: ToolExecutionOptions<never>): Promise<Admitted<InputOf<T>>> => {
    const cost = typeof options.cost === "function" ? options.cost(input) : options.cost;
    const sent = asArguments(input);
    const call = await client.beginToolCall(options.name, sessionId, sent, { costUsd: cost, signal: execution.abortSignal });
    const started = performance.now();
    return {
      input: fromArguments(call, input),
      secrets: substitutedValues(sent, call.arguments),
      finish: (status, error) =>
        client.finishToolCall(call.call_id, status, { error, latencyMs: Math.round(performance.now() - started) }),
    };
  };
  // The `ai` package streams a tool's preliminary results only when execute itself returns an async
  // iterable, so a generator tool is governed by a generator, and any other by an async function.
  const run = isAsyncGeneratorFunction(execute)
    ? async function* (input: InputOf<T>, execution: ToolExecutionOptions<never>): AsyncGenerator<unknown> {
        const call = await admit(input, execution);
        yield* streamed(execute(call.input, execution) as AsyncIterable<unknown>, call);
      }
    : async (input: InputOf<T>, execution: ToolExecutionOptions<never>): Promise<unknown> => {
        const call = await admit(input, execution);
        let result: unknown;
        try {
          result = await execute(call.input, execution);
          if (isAsyncIterable(result)) result = await last(result);
        } catch (error) {
          throw await failed(error, call);
        }
        await call.finish("ok");
        return scrub(result, call.secrets);
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

interface Admitted<INPUT> {
  /** The input to run the tool with: the model's, with Haldir's secret values in place of references. */
  input: INPUT;
  secrets: SecretValues;
  finish(status: "ok" | "error", error?: string): Promise<unknown>;
}

async function* streamed(chunks: AsyncIterable<unknown>, call: Admitted<unknown>): AsyncGenerator<unknown> {
  let ended = false;
  try {
    for await (const chunk of chunks) yield scrub(chunk, call.secrets);
    ended = true;
  } catch (error) {
    ended = true;
    throw await failed(error, call);
  } finally {
    // The consumer stopped reading before the end: the tool did not finish what it was asked.
    if (!ended) await call.finish("error", "the stream was closed before its end");
  }
  await call.finish("ok");
}

/** Record the failure, and give back the error cleaned of secret values. */
async function failed(error: unknown, call: Admitted<unknown>): Promise<unknown> {
  const clean = scrubError(error, call.secrets);
  await call.finish("error", messageOf(clean));
  return clean;
}

async function last(chunks: AsyncIterable<unknown>): Promise<unknown> {
  let final: unknown;
  for await (const chunk of chunks) final = chunk;
  return final;
}

function isAsyncGeneratorFunction(fn: unknown): boolean {
  return Object.prototype.toString.call(fn) === "[object AsyncGeneratorFunction]";
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
