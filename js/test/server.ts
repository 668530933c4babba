/**
 * A real `haldir serve` for the tests: a fresh data dir, `haldir migrate up`, a free port, the admin key
 * it prints on first start; always stopped. The Python venv's `haldir` is used unless HALDIR_BIN names one.
 */
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { openSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";

const run = promisify(execFile);
const HERE = fileURLToPath(new URL(".", import.meta.url));
// build/test/ → js/ → the repository.
const HALDIR = process.env["HALDIR_BIN"] ?? resolve(HERE, "../../../.venv/bin/haldir");
const KEY = /hld_[A-Za-z0-9]{48}/;

export interface LiveServer {
  readonly url: string;
  readonly adminKey: string;
  /** Whether the server has a route, by its OpenAPI document: `hasRoute("post", "/v1/tools/{tool}/begin")`. */
  hasRoute(method: string, path: string): boolean;
  stop(): Promise<void>;
}

export async function startServer(): Promise<LiveServer> {
  const dataDir = await mkdtemp(join(tmpdir(), "haldir-js-"));
  const env = environment(dataDir);
  await run(HALDIR, ["migrate", "up"], { env, timeout: 60_000 });
  const port = await freePort();
  const outFile = join(dataDir, "serve.out");
  const out = openSync(outFile, "w");
  const child = spawn(HALDIR, ["serve", "--port", String(port)], { env, stdio: ["ignore", out, out] });
  const url = `http://127.0.0.1:${port}`;
  const stop = async (): Promise<void> => {
    await terminate(child);
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    await waitReady(url, child, outFile);
    const adminKey = KEY.exec(await readFile(outFile, "utf8"))?.[0];
    if (adminKey === undefined) throw new Error(`haldir serve printed no admin key: ${await readFile(outFile, "utf8")}`);
    const openapi = (await (await fetch(`${url}/openapi.json`)).json()) as { paths: Record<string, Record<string, unknown>> };
    const hasRoute = (method: string, path: string): boolean => openapi.paths[path]?.[method.toLowerCase()] !== undefined;
    return { url, adminKey, hasRoute, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

function environment(dataDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) if (!name.startsWith("HALDIR_")) env[name] = value;
  return { ...env, HALDIR_DATA_DIR: dataDir, HALDIR_LOG_LEVEL: "warning", HALDIR_WORKERS: "1" };
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address !== null ? done(address.port) : fail(new Error("no port"))));
    });
  });
}

async function waitReady(url: string, child: ChildProcess, outFile: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`haldir serve exited with ${child.exitCode}: ${await readFile(outFile, "utf8")}`);
    try {
      if ((await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1000) })).status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((done) => setTimeout(done, 100)); // polling a real process for readiness
  }
  throw new Error(`haldir serve not ready after 30 s: ${await readFile(outFile, "utf8")}`);
}

async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  await exited;
  clearTimeout(timer);
}
