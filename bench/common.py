"""What the benchmarks share: a `haldir serve` process on 127.0.0.1, load workers, percentiles, machine."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

HALDIR = str(Path(sys.executable).with_name("haldir"))
HOST = "127.0.0.1"
READY_WAIT_S = 30.0
STOP_WAIT_S = 10.0
REQUEST_TIMEOUT_S = 10.0
SCENARIO_LIMIT_S = 300.0
CLI_TIMEOUT_S = 60.0
# Below uvicorn's 5 s keep-alive timeout, so the client never sends on a connection the server is closing.
KEEPALIVE_EXPIRY_S = 2.0

Send = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]
Call = Callable[[int], Awaitable[str | None]]  # operation i; returns why it failed, or None


@dataclass
class Result:
    """Latencies and failures of one scenario."""

    name: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies) + len(self.failures)


def server_env(data_dir: Path, database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALDIR_")}
    env.update(HALDIR_DATA_DIR=str(data_dir), HALDIR_LOG_LEVEL="warning", HALDIR_HOST=HOST)
    if database_url:
        env["HALDIR_DATABASE_URL"] = database_url
    return env


def haldir(env: dict[str, str], *args: str) -> str:
    """Run one operator command and return its stdout; fail with its stderr."""
    done = subprocess.run(
        [HALDIR, *args], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        sys.exit(f"haldir {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running_server(
    env: dict[str, str], port: int, log: Path, *, command: list[str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `haldir serve` (or `command`, given `--host` and `--port`) and always stop it: terminate,
    then kill after STOP_WAIT_S."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*(command or [HALDIR, "serve"]), "--host", HOST, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        except BaseException:
            print(f"server log (tail):\n{log.read_text()[-4000:]}", file=sys.stderr)
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(proc: subprocess.Popen[bytes], base: str, log: Path) -> dict[str, Any]:
    """Poll GET /readyz until 200; fail if the server exits or READY_WAIT_S passes."""
    deadline = time.monotonic() + READY_WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode} before ready:\n{log.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(f"{base}/readyz", timeout=1.0, trust_env=False)
            if response.status_code == 200:
                ready: dict[str, Any] = response.json()
                return ready
        time.sleep(0.2)
    sys.exit(f"server not ready after {READY_WAIT_S:.0f} s:\n{log.read_text()}")


def http_client(base: str, key: str, *, connections: int) -> httpx.AsyncClient:
    """A client authenticated with `key`, with `connections` pooled connections, ignoring proxies."""
    limits = httpx.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
    )
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=REQUEST_TIMEOUT_S, trust_env=False
    )


async def measure(
    result: Result, call: Call, *, count: int, concurrency: int, budget_s: float | None = None
) -> None:
    """Run `count` operations from `concurrency` workers pulling indexes from one shared counter.

    With `budget_s`, workers start no new operation once that many seconds have passed, so a slow
    scenario reports fewer operations instead of running for hours.
    """
    counter = itertools.count()
    deadline = math.inf if budget_s is None else time.perf_counter() + budget_s

    async def worker() -> None:
        while (i := next(counter)) < count and time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                failure = await call(i)
            except Exception as exc:  # a failed operation is a result to report, not a crash
                failure = f"{type(exc).__name__}: {exc}"[:500]
            if failure is None:
                result.latencies.append(time.perf_counter() - start)
            else:
                result.failures.append(f"#{i}: {failure}")

    began = time.perf_counter()
    with anyio.fail_after(SCENARIO_LIMIT_S):
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
    result.elapsed = time.perf_counter() - began


async def drive(
    client: httpx.AsyncClient,
    result: Result,
    *,
    send: Send,
    expect: int,
    count: int,
    concurrency: int,
    budget_s: float | None = None,
) -> None:
    """Send `count` requests from `concurrency` workers; any status but `expect` is a failure."""

    async def call(i: int) -> str | None:
        try:
            response = await send(client, i)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if response.status_code != expect:
            return f"HTTP {response.status_code}: {response.text[:300]}"
        return None

    await measure(result, call, count=count, concurrency=concurrency, budget_s=budget_s)


def require_no_failures(results: list[Result]) -> None:
    failed = [r for r in results if r.failures]
    if not failed:
        return
    print(report(results), file=sys.stderr)
    for result in failed:
        print(f"\n{result.name}: {len(result.failures)} failed; first ones:", file=sys.stderr)
        print("\n".join(result.failures[:5]), file=sys.stderr)
    sys.exit(1)


def percentile_ms(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of sorted seconds, in milliseconds."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)] * 1000


def report(results: list[Result], *, counted: str = "requests", rate: str = "req/s") -> str:
    lines = [
        f"| scenario | {counted} | errors | {rate} | p50 ms | p90 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ordered = sorted(r.latencies)
        per_second = r.requests / r.elapsed if r.elapsed else math.nan
        cells = [f"`{r.name}`", str(r.requests), str(len(r.failures)), f"{per_second:.0f}"]
        cells += [f"{percentile_ms(ordered, p):.1f}" for p in (50, 90, 99)]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def proc_field(path: str, key: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    return None


def machine(load: tuple[float, float, float]) -> str:
    memory = proc_field("/proc/meminfo", "MemTotal")
    memory_gib = f"{int(memory.split()[0]) / 1024**2:.1f} GiB" if memory else "unknown"
    return "\n".join(
        [
            f"- CPU: {proc_field('/proc/cpuinfo', 'model name') or platform.processor() or 'unknown'}",
            f"- logical CPUs: {os.cpu_count()}, memory: {memory_gib}",
            f"- platform: {platform.platform()}",
            f"- Python {platform.python_version()} ({platform.python_implementation()})",
            f"- load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min)",
        ]
    )


Scenarios = Callable[..., Awaitable[list[Result]]]  # (base, key, *, count, warmup, concurrency) -> results


def serve_and_measure(
    args: Any, data_dir: Path, *, scopes: str, scenarios: Scenarios
) -> tuple[dict[str, Any], list[Result]]:
    """Migrate, create a key with `scopes`, serve, and run `scenarios` with the `--requests`, `--warmup`
    and `--concurrency` of `args`; the server is stopped on every path."""
    env = server_env(data_dir, args.database_url)
    haldir(env, "migrate", "up")
    created = haldir(env, "keys", "create", "--json", "--name", "bench", "--scopes", scopes)
    key: str = json.loads(created)["key"]
    port, log = free_port(), data_dir / "server.log"
    base = f"http://{HOST}:{port}"
    with running_server(env, port, log) as proc:
        ready = wait_ready(proc, base, log)
        work = scenarios(base, key, count=args.requests, warmup=args.warmup, concurrency=args.concurrency)
        results = asyncio.run(work)
        require_no_failures(results)
    return ready, results


def tree_cpu_seconds(root: int) -> float:
    """User plus system CPU seconds of process `root` and every process below it (a server's workers)."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid, ppid = int(entry.name), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        times[pid] = (int(fields[11]) + int(fields[12])) / ticks
    total, pending = 0.0, [root]
    while pending:
        pid = pending.pop()
        total += times.get(pid, 0.0)
        pending.extend(children.get(pid, []))
    return total


@contextlib.contextmanager
def scratch_database(url: str | None) -> Iterator[str | None]:
    """With a PostgreSQL URL: the URL of a new, empty database on that server, dropped afterwards.

    A fresh database per run, because a reused one keeps the Vault master key pinned by the first server
    that started on it, whose key file went with that run's temporary directory.
    """
    if url is None:
        yield None
        return
    import asyncpg

    parts = urlsplit(url)
    admin = parts._replace(scheme="postgresql").geturl()
    name = f"haldir_bench_{secrets.token_hex(4)}"

    async def execute(statement: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield parts._replace(path=f"/{name}").geturl()
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
