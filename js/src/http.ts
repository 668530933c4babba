/**
 * One request to a Haldir server: authentication, JSON in and out, and every failure turned into the
 * `HaldirError` subclass of its code. The client's methods only say which route and which body.
 */
import { fromResponse, HaldirError, isErrorBody, ServerUnavailable } from "./errors.js";

export const DEFAULT_URL = "http://127.0.0.1:8000";
export const DEFAULT_TIMEOUT_MS = 30_000;

export interface TransportOptions {
  /** `hld_…`; default `HALDIR_API_KEY`. */
  apiKey?: string | undefined;
  /** Default `HALDIR_URL`, else http://127.0.0.1:8000. */
  baseUrl?: string | undefined;
  /** Per request; default 30 s. */
  timeoutMs?: number | undefined;
  /** A `fetch` to send with (tests, proxies); default the global one. */
  fetch?: typeof globalThis.fetch | undefined;
}

export type Query = Record<string, string | number | boolean | undefined>;

export interface Request {
  method: "GET" | "POST" | "DELETE";
  path: string;
  query?: Query | undefined;
  body?: unknown;
  headers?: Record<string, string> | undefined;
  signal?: AbortSignal | undefined;
}

export class Transport {
  readonly baseUrl: string;
  readonly #apiKey: string | undefined;
  readonly #timeoutMs: number;
  readonly #fetch: typeof globalThis.fetch;

  constructor(options: TransportOptions = {}) {
    const apiKey = options.apiKey ?? process.env["HALDIR_API_KEY"];
    if (apiKey !== undefined && apiKey.includes("://")) {
      throw new TypeError(`apiKey looks like a URL (${apiKey}); pass the server as baseUrl`);
    }
    this.#apiKey = apiKey || undefined;
    this.baseUrl = (options.baseUrl ?? process.env["HALDIR_URL"] ?? DEFAULT_URL).replace(/\/+$/, "");
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#fetch = options.fetch ?? globalThis.fetch;
  }

  async send<T>(request: Request): Promise<T> {
    const url = this.#url(request.path, request.query);
    const headers: Record<string, string> = { Accept: "application/json", ...request.headers };
    if (this.#apiKey !== undefined) headers["Authorization"] = `Bearer ${this.#apiKey}`;
    if (request.body !== undefined) headers["Content-Type"] = "application/json";
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const signal = request.signal === undefined ? timeout : AbortSignal.any([request.signal, timeout]);
    let response: Response;
    let text: string;
    try {
      response = await this.#fetch(url, {
        method: request.method,
        headers,
        body: request.body === undefined ? null : JSON.stringify(request.body),
        signal,
      });
      text = await response.text();
    } catch (error) {
      if (request.signal?.aborted === true) throw error;
      throw unreachable(this.baseUrl, error);
    }
    const body = parse(text);
    // A 202 with an error body is a hold (`approval_required`): nothing ran, so it is not a success.
    if (!response.ok || (response.status === 202 && isErrorBody(body))) {
      throw errorFor(response.status, body, text);
    }
    return body as T;
  }

  #url(path: string, query: Query | undefined): string {
    const url = new URL(this.baseUrl + path);
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined) url.searchParams.set(name, String(value));
    }
    return url.toString();
  }
}

/** A path segment from an id or name the caller gave: never a way to reach another route. */
export function segment(value: string): string {
  return encodeURIComponent(value);
}

function parse(text: string): unknown {
  if (text === "") return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function errorFor(status: number, body: unknown, text: string): HaldirError {
  if (isErrorBody(body)) return fromResponse(status, body);
  const excerpt = text.slice(0, 200);
  const message = `the server answered ${status} without an error body: ${excerpt}`;
  const cls = status === 502 || status === 503 || status === 504 ? ServerUnavailable : HaldirError;
  return new cls(message, { status, body: { error: message, code: cls.code } });
}

function unreachable(baseUrl: string, cause: unknown): ServerUnavailable {
  const reason = cause instanceof Error ? (cause.cause instanceof Error ? cause.cause.message : cause.message) : String(cause);
  const message =
    `cannot reach the Haldir server at ${baseUrl}: ${reason}; ` + "check that it is running and that HALDIR_URL points at it";
  return new ServerUnavailable(message, { status: 0, body: { error: message, code: ServerUnavailable.code }, cause });
}
