"""Load benchmark: create and read sessions against a real `haldir serve` process on 127.0.0.1.

Run `python bench/sessions.py --help`; see bench/README.md for what is measured and recorded results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HALDIR = str(Path(sys.executable).with_name("haldir"))
HOST = "127.0.0.1"
READY_WAIT_S = 30.0
STOP_WAIT_S = 10.0
REQUEST_TIMEOUT_S = 10.0
SCENARIO_LIMIT_S = 300.0
CLI_TIMEOUT_S = 60.0

Send = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="Measured requests per scenario.")
    parser.add_argument("--concurrency", type=int, default=32, help="Requests in flight at once.")
    parser.add_argument("--warmup", type=int, default=300, help="Unmeasured requests before measuring.")
    parser.add_argument(
        "--database-url", default=None, help="Store URL (e.g. postgresql://…); default SQLite in a temp dir."
    )
    args = parser.parse_args()
    if args.requests < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--requests and --concurrency must be >= 1, --warmup >= 0")
    return args


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
def running_server(env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start `haldir serve` and always stop it: terminate, then kill after STOP_WAIT_S."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [HALDIR, "serve", "--host", HOST, "--port", str(port)],
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


async def drive(
    client: httpx.AsyncClient, result: Result, *, send: Send, expect: int, count: int, concurrency: int
) -> None:
    """Send `count` requests from `concurrency` workers pulling indexes from one shared counter."""
    counter = itertools.count()

    async def worker() -> None:
        while (i := next(counter)) < count:
            start = time.perf_counter()
            try:
                response = await send(client, i)
            except httpx.HTTPError as exc:
                result.failures.append(f"#{i}: {type(exc).__name__}: {exc}")
                continue
            if response.status_code == expect:
                result.latencies.append(time.perf_counter() - start)
            else:
                result.failures.append(f"#{i}: HTTP {response.status_code}: {response.text[:300]}")

    began = time.perf_counter()
    async with asyncio.timeout(SCENARIO_LIMIT_S):
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - began


def create_sender(prefix: str, ids: list[str]) -> Send:
    """POST /v1/sessions; store each created session id at its request index."""

    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        body = {
            "agent_id": f"{prefix}-{i}",
            "scopes": ["read", "execute"],
            "ttl": 3600,
            "spend_limit": "10.00",
        }
        response = await client.post("/v1/sessions", json=body)
        if response.status_code == 201:
            ids[i] = response.json()["session_id"]
        return response

    return send


def read_sender(ids: list[str]) -> Send:
    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.get(f"/v1/sessions/{ids[i % len(ids)]}")

    return send


async def run_scenarios(base: str, key: str, *, count: int, warmup: int, concurrency: int) -> list[Result]:
    """Warm up, then create `count` sessions and read each back; stop at the first scenario with failures."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=REQUEST_TIMEOUT_S, trust_env=False
    ) as client:
        warm = Result("warm-up")
        send = create_sender("warmup", [""] * warmup)
        await drive(client, warm, send=send, expect=201, count=warmup, concurrency=concurrency)
        require_no_failures([warm])
        ids = [""] * count
        create = Result("POST /v1/sessions")
        send = create_sender("bench", ids)
        await drive(client, create, send=send, expect=201, count=count, concurrency=concurrency)
        require_no_failures([create])
        read = Result("GET /v1/sessions/{id}")
        await drive(client, read, send=read_sender(ids), expect=200, count=count, concurrency=concurrency)
    return [create, read]


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


def report(results: list[Result]) -> str:
    lines = [
        "| scenario | requests | errors | req/s | p50 ms | p90 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ordered = sorted(r.latencies)
        rate = r.requests / r.elapsed if r.elapsed else math.nan
        cells = [f"`{r.name}`", str(r.requests), str(len(r.failures)), f"{rate:.0f}"]
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


def bench(args: argparse.Namespace, data_dir: Path) -> tuple[dict[str, Any], list[Result]]:
    """Migrate, create a key, serve, and run the scenarios; the server is stopped on every path."""
    env = server_env(data_dir, args.database_url)
    haldir(env, "migrate", "up")
    created = haldir(env, "keys", "create", "--json", "--name", "bench", "--scopes", "sessions:write")
    key: str = json.loads(created)["key"]
    port, log = free_port(), data_dir / "server.log"
    base = f"http://{HOST}:{port}"
    with running_server(env, port, log) as proc:
        ready = wait_ready(proc, base, log)
        scenarios = run_scenarios(
            base, key, count=args.requests, warmup=args.warmup, concurrency=args.concurrency
        )
        results = asyncio.run(scenarios)
        require_no_failures(results)
    return ready, results


def main() -> None:
    args = parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="haldir-bench-") as tmp:
        ready, results = bench(args, Path(tmp))
    print(
        f"haldir {ready['version']}, store {ready['store']}, concurrency {args.concurrency}, "
        f"{args.warmup} warm-up requests, {time.strftime('%Y-%m-%d')}\n"
    )
    print(report(results))
    print(f"\n{machine(load)}")


if __name__ == "__main__":
    main()
