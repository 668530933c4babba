"""Load benchmark: one governed `tools/call` through Haldir's MCP gateway against the same call made directly.

The upstream is `@modelcontextprotocol/server-everything` over Streamable HTTP and the tool its `echo`, the
cheapest there is, so what the gateway adds is what the table shows. In the same run and at each
concurrency level, in rounds that alternate the paths:

- direct: official MCP SDK `Client`s over Streamable HTTP to server-everything;
- gateway: `Client`s made the same way to `haldir serve`'s `/mcp/gateway` (API key and `X-Session-ID`),
  which admits the call, forwards it to that server-everything through its upstream pool and records it;
- REST: `POST /v1/proxy/call`, the same pipeline without MCP on the client side.

Afterwards the ledger entries of the gateway and REST calls are read back: each holds the time Haldir
waited for the upstream (`details.latency_ms`), so client latency minus that is Haldir's own share.
`--phases` runs the server under a wrapper that times the pipeline's steps and counts SQL statements,
and `--profile DIR` (with pyinstrument importable, e.g. on `PYTHONPATH`) samples the server's event loop.

Run `python bench/gateway.py --help`; see bench/README.md for recorded results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from common import (
    HOST,
    REQUEST_TIMEOUT_S,
    Call,
    Result,
    free_port,
    haldir,
    http_client,
    machine,
    measure,
    percentile_ms,
    report,
    running_server,
    scratch_database,
    server_env,
    tree_cpu_seconds,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
EVERYTHING = ROOT / ".mcp-servers/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
UPSTREAM = "everything"
PATHS = ("direct", "gateway", "REST")
TIMED_SERVE = "--serve-timed"  # argv[1] of the process `--phases` starts instead of `haldir serve`
PHASES_DIR = "HALDIR_BENCH_PHASES_DIR"
PROFILE_DIR = "HALDIR_BENCH_PROFILE_DIR"

Json = dict[str, Any]


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="Measured calls per path and level.")
    parser.add_argument("--concurrency", default="1,8,32", help="Comma-separated concurrency levels.")
    parser.add_argument("--warmup", type=int, default=100, help="Unmeasured calls per path and level.")
    parser.add_argument("--rounds", type=int, default=2, help="Rounds per level; each runs every path once.")
    parser.add_argument("--budget", type=float, default=60.0, help="Seconds per path and level, at most.")
    parser.add_argument("--paths", default="direct,gateway,REST", help="Which paths to measure, in order.")
    parser.add_argument(
        "--phases", action="store_true", help="Time the pipeline's steps in the server (a wrapper process)."
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="Write pyinstrument profiles of the server into DIR."
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="A PostgreSQL URL; the run makes (and drops) a scratch database on that server. "
        "Default: SQLite in a temporary directory.",
    )
    args = parser.parse_args()
    try:
        args.levels = sorted({int(level) for level in args.concurrency.split(",")})
    except ValueError:
        parser.error("--concurrency must be comma-separated integers")
    args.paths = args.paths.split(",")
    if not set(args.paths) <= set(PATHS):
        parser.error(f"--paths takes a comma-separated subset of {','.join(PATHS)}")
    if args.requests < 1 or args.levels[0] < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error("--requests, --concurrency and --rounds must be >= 1, --warmup >= 0")
    if args.profile is not None:
        args.phases = True
    return args


# the upstream


@contextlib.contextmanager
def everything_http(port: int, log: Path) -> Iterator[tuple[str, int]]:
    """server-everything over Streamable HTTP on `port` until the block ends; yields its MCP URL and pid."""
    node = shutil.which("node")
    if node is None or not EVERYTHING.exists():
        sys.exit(f"needs node and {EVERYTHING.relative_to(ROOT)}: run `make .mcp-servers/.installed`")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", ""), "PORT": str(port)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [node, str(EVERYTHING), "streamableHttp"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                if proc.poll() is not None:
                    sys.exit(f"server-everything exited with {proc.returncode}:\n{log.read_text()}")
                with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
                    break
                if time.monotonic() > deadline:
                    sys.exit(f"server-everything not listening after 15 s:\n{log.read_text()}")
                time.sleep(0.05)
            yield f"http://{HOST}:{port}/mcp", proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# one durable commit, the yardstick of the gateway's target

PROBE_COMMITS = 200


async def durable_commits(data_dir: Path, database_url: str | None) -> list[float]:
    """Seconds per commit of a one-row write transaction on the store's disk or server, sorted: on
    SQLite a database beside the server's (WAL, synchronous=FULL, as Haldir's), on PostgreSQL a table in
    the scratch database (BEGIN, INSERT, COMMIT). Measured while no load runs."""
    took = []
    if database_url is None:
        import sqlite3

        conn = sqlite3.connect(data_dir / "commit-probe.db", isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE IF NOT EXISTS probe (x INTEGER)")
            for i in range(PROBE_COMMITS):
                began = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO probe VALUES (?)", (i,))
                conn.execute("COMMIT")
                took.append(time.perf_counter() - began)
        finally:
            conn.close()
        return sorted(took)
    import asyncpg

    pg = await asyncpg.connect(urlsplit(database_url)._replace(scheme="postgresql").geturl())
    try:
        await pg.execute("CREATE TABLE IF NOT EXISTS haldir_bench_commit_probe (x integer)")
        for i in range(PROBE_COMMITS):
            began = time.perf_counter()
            async with pg.transaction():
                await pg.execute("INSERT INTO haldir_bench_commit_probe VALUES ($1)", i)
            took.append(time.perf_counter() - began)
    finally:
        await pg.close()
    return sorted(took)


# the measured paths


@dataclass
class CallPath:
    """One way of calling echo: `call(i)` for the load workers, and what it measured."""

    name: str
    call: Call
    result: Result
    windows: list[tuple[datetime, datetime]] = field(default_factory=list)  # wall time of measured rounds
    phases: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    counters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    statements: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # seconds, by process


def cpu_seconds(stat: str) -> float:
    """User plus system CPU time from a /proc `stat` file: of a process (all its threads) or one thread."""
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Processes:
    server: int
    upstream: int

    def cpu(self) -> dict[str, float]:
        return {
            "server": tree_cpu_seconds(self.server),  # the server's worker processes included
            "upstream": cpu_seconds(f"/proc/{self.upstream}/stat"),
            "client": time.process_time(),
        }


def mcp_caller(clients: list[Client]) -> Call:
    """echo on whichever of `clients` is free; one client per worker, as one agent per connection."""
    free = list(clients)

    async def call(i: int) -> str | None:
        client = free.pop()
        try:
            with anyio.fail_after(REQUEST_TIMEOUT_S):
                result = await client.call_tool("echo", {"message": f"bench {i}"})
        finally:
            free.append(client)
        text = getattr(result.content[0], "text", None) if result.content else None
        if result.is_error or text != f"Echo: bench {i}":
            return f"is_error={result.is_error}: {text or result.structured_content}"[:500]
        return None

    return call


def rest_caller(client: httpx.AsyncClient, sessions: list[str], tool: str) -> Call:
    free = list(sessions)

    async def call(i: int) -> str | None:
        session = free.pop()
        try:
            body = {"tool": tool, "arguments": {"message": f"bench {i}"}, "session_id": session}
            response = await client.post("/v1/proxy/call", json=body)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            free.append(session)
        if response.status_code != 200:
            return f"HTTP {response.status_code}: {response.text[:300]}"
        content = response.json().get("content") or [{}]
        if content[0].get("text") != f"Echo: bench {i}":
            return f"unexpected result: {response.text[:300]}"
        return None

    return call


async def open_client(stack: AsyncExitStack, url: str, headers: dict[str, str] | None = None) -> Client:
    """An SDK `Client` over Streamable HTTP with the SDK's own HTTP client, as Haldir's pool opens one."""
    http = await stack.enter_async_context(create_mcp_http_client(headers=headers))
    return await stack.enter_async_context(Client(streamable_http_client(url, http_client=http), cache=None))


async def checked(response: Awaitable[httpx.Response], *expect: int) -> Any:
    answered = await response
    if answered.status_code not in expect:
        sys.exit(
            f"{answered.request.method} {answered.request.url.path}: HTTP {answered.status_code} "
            f"(expected {expect}): {answered.text[:1000]}"
        )
    return answered.json() if answered.content else None


async def setup(api: httpx.AsyncClient, upstream_url: str, sessions: int) -> tuple[str, list[str], list[str]]:
    """Register the upstream; the name agents call its echo by, and sessions for the gateway and REST."""
    await checked(api.post("/v1/proxy/upstreams", json={"name": UPSTREAM, "url": upstream_url}), 201)
    tools = (await checked(api.get("/v1/proxy/tools"), 200))["tools"]
    found = [t["name"] for t in tools if t["upstream"] == UPSTREAM and t["upstream_tool"] == "echo"]
    if not found:
        sys.exit(f"upstream {UPSTREAM!r} registered, but no echo tool among {[t['name'] for t in tools]}")
    made: dict[str, list[str]] = {}
    for path in ("gateway", "rest"):
        made[path] = []
        for n in range(sessions):
            body = {"agent_id": f"{path}-{n}", "scopes": ["execute"]}
            made[path].append((await checked(api.post("/v1/sessions", json=body), 201))["session_id"])
    return found[0], made["gateway"], made["rest"]


class ServerMarks:
    """With `--phases`: SIGUSR1 makes the wrapper server dump (and reset) its phase timers."""

    def __init__(self, pid: int | None, directory: Path) -> None:
        self.pid, self.directory, self.count = pid, directory, 0
        self.labels: dict[int, str] = {}  # mark number: what ran since the mark before it

    async def mark(self, label: str | None = None) -> dict[str, Any] | None:
        """Dump what the server saw since the previous mark (`label` names it)."""
        if self.pid is None:
            return None
        os.kill(self.pid, signal.SIGUSR1)
        dump = self.directory / f"phases-{self.count}.json"
        if label is not None:
            self.labels[self.count] = label
        self.count += 1
        for _ in range(1000):  # polls another process's file for up to 10 s
            if dump.exists():
                break
            await anyio.sleep(0.01)
        else:
            raise TimeoutError(f"the server wrote no {dump.name} within 10 s of SIGUSR1")
        found: dict[str, Any] = json.loads(dump.read_text())
        return found


async def run_level(
    paths: list[CallPath], level: int, args: argparse.Namespace, marks: ServerMarks, procs: Processes
) -> None:
    for path in paths:
        warm = Result(f"warm-up {path.name}")
        await measure(warm, path.call, count=args.warmup, concurrency=level, budget_s=args.budget)
        if warm.failures:
            print(
                f"warm-up of {path.name} at concurrency {level}: {len(warm.failures)} failed; first ones:\n"
                + "\n".join(warm.failures[:3]),
                file=sys.stderr,
            )
    per_round = -(-args.requests // args.rounds)
    for n in range(args.rounds):
        for path in paths:
            count = min(per_round, args.requests - n * per_round)
            round_ = Result(path.name)
            await marks.mark()
            began, cpu = datetime.now(UTC), procs.cpu()
            await measure(
                round_, path.call, count=count, concurrency=level, budget_s=args.budget / args.rounds
            )
            path.windows.append((began, datetime.now(UTC)))
            for name, seconds in procs.cpu().items():
                path.cpu[name] += seconds - cpu[name]
            dump = await marks.mark(f"concurrency {level}, {path.name}, round {n + 1}")
            path.result.latencies += round_.latencies
            path.result.failures += round_.failures
            path.result.elapsed += round_.elapsed
            if dump is not None:
                for name, values in dump["phases"].items():
                    path.phases[name] += values
                for name, value in dump["counters"].items():
                    path.counters[name] += value
                for name, value in dump["statements"].items():
                    path.statements[name] += value


async def ledger_latencies(
    api: httpx.AsyncClient, tool: str, windows: list[tuple[datetime, datetime]]
) -> Json:
    """The `tools/call` entries recorded within `windows`: forward latencies, how many were flagged."""
    latencies, flagged = [], 0
    for since, until in windows:
        cursor = None
        while True:
            params: dict[str, Any] = {
                "tool": tool,
                "since": since.isoformat(),
                "until": until.isoformat(),
                "limit": 200,
            }
            if cursor:
                params["cursor"] = cursor
            page = await checked(api.get("/v1/audit", params=params), 200)
            for entry in page["entries"]:
                if entry["action"] == "tools/call" and entry["details"].get("phase") == "finish":
                    latencies.append(entry["details"]["latency_ms"] / 1000)
                    flagged += bool(entry["flagged"])
            cursor = page["next_cursor"]
            if not cursor:
                break
    return {"latencies": sorted(latencies), "flagged": flagged}


async def run(
    base: str,
    key: str,
    upstream_url: str,
    args: argparse.Namespace,
    marks: ServerMarks,
    procs: Processes,
    store: tuple[Path, str | None],
) -> Json:
    top = args.levels[-1]
    async with AsyncExitStack() as stack:
        api = await stack.enter_async_context(http_client(base, key, connections=top + 4))
        tool, gateway_sessions, rest_sessions = await setup(api, upstream_url, top)
        direct = [await open_client(stack, upstream_url) for _ in range(top)]
        gateway = [
            await open_client(
                stack, f"{base}/mcp/gateway", {"Authorization": f"Bearer {key}", "X-Session-ID": session}
            )
            for session in gateway_sessions
        ]
        tables: Json = {"levels": {}}
        for level in args.levels:
            callers = {
                "direct": mcp_caller(direct[:level]),
                "gateway": mcp_caller(gateway[:level]),
                "REST": rest_caller(api, rest_sessions[:level], tool),
            }
            paths = [CallPath(name, callers[name], Result(name)) for name in args.paths]
            commits = await durable_commits(*store)
            await run_level(paths, level, args, marks, procs)
            ledger = {
                p.name: await ledger_latencies(api, tool, p.windows) for p in paths if p.name != "direct"
            }
            tables["levels"][level] = {"paths": paths, "ledger": ledger, "commits": commits}
        await checked(api.delete(f"/v1/proxy/upstreams/{UPSTREAM}"), 200, 204)
    return tables


# reports


CPU_COLUMNS = ("server", "upstream", "client")


def minus(table: dict[str, float], path: str) -> str:
    """`path` minus direct, of one percentile; a dash when either was not measured."""
    return f"{table[path] - table['direct']:+.1f}" if {path, "direct"} <= table.keys() else "–"


def print_tables(tables: Json, args: argparse.Namespace) -> bool:
    rows: list[Result] = []
    added = [
        "| concurrency | durable commit p50 ms | gateway − direct p50 ms | gateway − direct p99 ms "
        "| REST − direct p50 ms | REST − direct p99 ms | target p50 / p99 ms (commit + 1 / + 3) "
        "| gateway / direct calls/s |",
        "|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    inside = [
        "| concurrency | path | entries | flagged | upstream wait p50 ms (ledger) | client p50 ms "
        "| client p50 − upstream wait p50 ms |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    cpu = [
        "| concurrency | path | server CPU ms/call (all workers) | upstream CPU ms/call "
        "| load generator CPU ms/call |",
        "|---:|---|---:|---:|---:|",
    ]
    failed = False
    for level, data in tables["levels"].items():
        paths = {p.name: p for p in data["paths"]}
        for p in data["paths"]:
            p.result.name = f"c={level} {p.name}"
            rows.append(p.result)
            failed |= bool(p.result.failures)
            calls = p.result.requests or 1
            used = [f"{p.cpu[name] / calls * 1000:.2f}" for name in CPU_COLUMNS]
            cpu.append(f"| {level} | {p.name} | {' | '.join(used)} |")
        p50 = {name: percentile_ms(sorted(p.result.latencies), 50) for name, p in paths.items()}
        p99 = {name: percentile_ms(sorted(p.result.latencies), 99) for name, p in paths.items()}

        commit = percentile_ms(data["commits"], 50)
        rate = {name: p.result.requests / p.result.elapsed for name, p in paths.items() if p.result.elapsed}
        share = f"{rate['gateway'] / rate['direct']:.0%}" if {"gateway", "direct"} <= rate.keys() else "–"
        cells = [
            str(level),
            f"{commit:.1f}",
            minus(p50, "gateway"),
            minus(p99, "gateway"),
            minus(p50, "REST"),
            minus(p99, "REST"),
            f"≤ {commit + 1:.1f} / ≤ {commit + 3:.1f}",
            share,
        ]
        added.append(f"| {' | '.join(cells)} |")
        for name, found in data["ledger"].items():
            wait = percentile_ms(found["latencies"], 50)
            cells = [str(level), name, str(len(found["latencies"])), str(found["flagged"])]
            cells += [f"{wait:.1f}", f"{p50[name]:.1f}", f"{p50[name] - wait:.1f}"]
            inside.append(f"| {' | '.join(cells)} |")
    print(report(rows, counted="calls", rate="calls/s"))
    print("\nAdded latency (difference of the percentiles measured in the same run):\n")
    print("\n".join(added))
    print(
        "\nInside Haldir (ledger `details.latency_ms`: from forwarding the call to the upstream's answer):\n"
    )
    print("\n".join(inside))
    print("\nCPU time per call (from /proc, clock ticks of 10 ms summed over the measured rounds):\n")
    print("\n".join(cpu))
    if args.phases:
        print_phases(tables)
    for row in rows:
        if row.failures:
            print(f"\n{row.name}: {len(row.failures)} failed; first ones:\n" + "\n".join(row.failures[:5]))
    return failed


def print_phases(tables: Json) -> None:
    print(
        "\nServer-side steps (`--phases`), wall time per governed call: mean ms per call "
        "(occurrences per call × p50 ms of one occurrence); and the event loop thread's CPU ms per call "
        "during the step, which only at concurrency 1 belongs to that call alone:\n"
    )
    header = ["step"]
    columns = []
    for level, data in tables["levels"].items():
        for p in data["paths"]:
            if p.name != "direct":
                header.append(f"c={level} {p.name}")
                columns.append(p)
    print(f"| {' | '.join(header)} |")
    print(f"|---|{'---:|' * len(columns)}")
    for name in STEPS:
        cells = [name]
        for p in columns:
            calls = len(p.phases.get(PIPELINE, ())) or 1
            values = sorted(p.phases.get(name, ()))
            if not values:
                cells.append("–")
                continue
            per_call = sum(values) / calls * 1000
            times = len(values) / calls
            cpu = sum(p.phases.get(CPU + name, ())) / calls * 1000
            cells.append(f"{per_call:.2f} ({times:.0f}× {percentile_ms(values, 50):.2f}); CPU {cpu:.2f}")
        print(f"| {' | '.join(cells)} |")
    for counter in ("SQL statements", "commits"):
        cells = [f"{counter} per call"]
        for p in columns:
            calls = len(p.phases.get(PIPELINE, ())) or 1
            cells.append(f"{p.counters.get(counter, 0) / calls:.1f}")
        print(f"| {' | '.join(cells)} |")
    first = next((p for p in columns if p.name == "gateway"), None)
    if first is not None:
        calls = len(first.phases.get(PIPELINE, ())) or 1
        print(f"\nSQL statements per call, gateway at concurrency {next(iter(tables['levels']))}:\n")
        print("| per call | statement (first 90 characters) |\n|---:|---|")
        for text, count in sorted(first.statements.items(), key=lambda item: -item[1]):
            print(f"| {count / calls:.2f} | `{text}` |")


# the wrapper server (`--phases`): `haldir serve` with timers around the pipeline's steps

PIPELINE = "pipeline: ProxyService.call_tool"
CPU = "cpu:"  # a step's event loop thread CPU time is recorded under CPU + its name
STEPS = (
    "HTTP: /mcp/gateway request (ASGI)",
    "auth: Keys.authenticate",
    PIPELINE,
    "admit: Proxy.admit_call",
    "· session read",
    "· tool read",
    "· policies read",
    "· reserve: lookback + write transaction",
    "· · write transaction (empty at cost 0)",
    "upstream fingerprint read",
    "forward: UpstreamPool.call_tool",
    "record: Proxy.finish_call",
    "lookback reads (rules, recent entries)",
    "· ledger append (group commit)",
)


def serve_timed(argv: list[str]) -> None:
    """Patch timers into the server's classes, then run `haldir serve` in this process."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from haldir.cli.serve import serve
    from haldir.governor.keys import Keys
    from haldir.governor.ledger import Ledger
    from haldir.governor.proxy import Proxy
    from haldir.governor.registry import Registry
    from haldir.governor.sessions import Sessions
    from haldir.mcp.gateway_http import GatewayEndpoint
    from haldir.proxy.service import ProxyService
    from haldir.proxy.upstreams import UpstreamPool
    from haldir.store.ledger import SqlLedger
    from haldir.store.proxy import SqlProxy
    from haldir.store.sql import SqlStore

    phases: dict[str, list[float]] = defaultdict(list)
    counters: dict[str, int] = defaultdict(int)
    statements: dict[str, int] = defaultdict(int)

    def timed(name: str, owner: type, attr: str) -> None:
        inner = getattr(owner, attr)

        @functools.wraps(inner)
        async def wrapper(*a: Any, **k: Any) -> Any:
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return await inner(*a, **k)
            finally:
                phases[name].append(time.perf_counter() - start)
                phases[CPU + name].append(time.thread_time() - cpu)

        setattr(owner, attr, wrapper)

    def timed_context(name: str, owner: type, attr: str) -> None:
        inner = getattr(owner, attr)

        @asynccontextmanager
        @functools.wraps(inner)
        async def wrapper(*a: Any, **k: Any) -> AsyncIterator[Any]:
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                async with inner(*a, **k) as value:
                    yield value
            finally:
                phases[name].append(time.perf_counter() - start)
                phases[CPU + name].append(time.thread_time() - cpu)

        setattr(owner, attr, wrapper)

    timed("HTTP: /mcp/gateway request (ASGI)", GatewayEndpoint, "__call__")
    timed("auth: Keys.authenticate", Keys, "authenticate")
    timed(PIPELINE, ProxyService, "call_tool")
    timed("admit: Proxy.admit_call", Proxy, "admit_call")
    timed("· session read", Sessions, "require_session")
    timed("· tool read", Registry, "proxy_tool")
    timed("· policies read", SqlProxy, "list_policies")
    timed("· reserve: lookback + write transaction", Proxy, "_reserve")
    timed_context("· · write transaction (empty at cost 0)", SqlStore, "spend_transaction")
    timed("upstream fingerprint read", Registry, "upstream_fingerprint")
    timed("forward: UpstreamPool.call_tool", UpstreamPool, "call_tool")
    timed("record: Proxy.finish_call", Proxy, "finish_call")
    timed("lookback reads (rules, recent entries)", Ledger, "lookback")
    timed("· ledger append (group commit)", SqlLedger, "append")

    def statement(_conn: Any, _cursor: Any, text: str, *_: Any) -> None:
        counters["SQL statements"] += 1
        statements[" ".join(text.split())[:90]] += 1

    def commit(*_: Any) -> None:
        counters["commits"] += 1

    event.listen(Engine, "before_cursor_execute", statement)
    event.listen(Engine, "commit", commit)

    out = Path(os.environ[PHASES_DIR])
    profile_dir = os.environ.get(PROFILE_DIR)
    profiler: Any = None
    sequence = itertools.count()

    def new_profiler() -> Any:
        from pyinstrument import Profiler

        started = Profiler(interval=0.0005, async_mode="disabled")
        started.start()
        return started

    def dump(_signum: int, _frame: Any) -> None:
        nonlocal profiler
        n = next(sequence)
        data = {"phases": dict(phases), "counters": dict(counters), "statements": dict(statements)}
        phases.clear()
        counters.clear()
        statements.clear()
        if profiler is not None:
            profiler.stop()
            folder = Path(str(profile_dir))
            (folder / f"profile-{n}.txt").write_text(profiler.output_text(unicode=True, show_all=False))
            (folder / f"profile-{n}-flat.txt").write_text(profiler.output_text(unicode=True, flat=True))
            profiler = None
        if profile_dir is not None:
            profiler = new_profiler()
        temporary = out / f".phases-{n}.json"
        temporary.write_text(json.dumps(data))
        temporary.rename(out / f"phases-{n}.json")

    signal.signal(signal.SIGUSR1, dump)
    options = dict(zip(argv[::2], argv[1::2], strict=True))
    serve(host=options["--host"], port=int(options["--port"]))


# main


def leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc


def main() -> None:
    if sys.argv[1:2] == [TIMED_SERVE]:
        serve_timed(sys.argv[2:])
        return
    args = parse_args()
    load = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M")
    with (
        tempfile.TemporaryDirectory(prefix="haldir-bench-") as tmp,
        scratch_database(args.database_url) as database_url,
    ):
        data_dir = Path(tmp)
        env = server_env(data_dir, database_url) | {"HALDIR_OUTBOUND_ALLOW": "127.0.0.0/8"}
        command = None
        if args.phases:
            env[PHASES_DIR] = str(data_dir)
            command = [sys.executable, str(Path(__file__).resolve()), TIMED_SERVE]
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            env[PROFILE_DIR] = str(args.profile.resolve())
        haldir(env, "migrate", "up")
        tenant = "bench-gw"
        created = haldir(
            env, "keys", "create", "--json", "--tenant", tenant, "--name", "bench", "--scopes", "*"
        )
        key: str = json.loads(created)["key"]
        port, log = free_port(), data_dir / "server.log"
        base = f"http://{HOST}:{port}"
        with (
            everything_http(free_port(), data_dir / "everything.log") as (upstream_url, upstream_pid),
            running_server(env, port, log, command=command) as proc,
        ):
            ready = wait_ready(proc, base, log)
            marks = ServerMarks(proc.pid if args.phases else None, data_dir)
            try:
                procs = Processes(server=proc.pid, upstream=upstream_pid)
                store = (data_dir, database_url)
                tables = asyncio.run(run(base, key, upstream_url, args, marks, procs, store))
            except BaseExceptionGroup as group:  # 64 clients' task groups wrap what went wrong
                sys.exit("\n".join(f"{type(e).__name__}: {e}" for e in leaves(group)))
    print(
        f"haldir {ready['version']}, store {ready['store']}, tenant {tenant}, {args.warmup} warm-up and "
        f"{args.requests} measured calls per path and level in {args.rounds} rounds, started {started}\n"
    )
    failed = print_tables(tables, args)
    if args.profile is not None:
        print(f"\nProfiles of the server's event loop in {args.profile}:")
        for n, label in marks.labels.items():
            print(f"- profile-{n}.txt, profile-{n}-flat.txt: {label}")
    print(f"\n{machine(load)}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
