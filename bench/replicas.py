"""Throughput of a mixed governed workload against one `haldir serve` and against two and three replicas
on the same PostgreSQL database, driven by wrk.

Each replica is a `haldir serve` of its own (one worker by default, `--workers`) with a data dir of its own
and the first one's keys, as on separate machines. For each replica count: the replicas start on one
scratch database, then one wrk per replica (`-t1`, the `--connections` shared among them) runs a 3 s
warm-up and a measured run at once. Every request is one of four governed operations, in turn: a session
check, a secret release, a ledger append and a $0.01 payment authorization, rotating over 64 sessions
(of one tenant, or spread over `--tenants`, each with a ledger of its own).
The table sums the wrks' requests/s and non-2xx answers, gives the worst replica's p50 and p99, and the
CPU seconds the replicas and PostgreSQL used per request.

Run `python bench/replicas.py --help`; see bench/README.md for recorded results. Needs `wrk` and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from common import (
    HOST,
    free_port,
    haldir,
    machine,
    running_server,
    scratch_database,
    server_env,
    tree_cpu_seconds,
    wait_ready,
)
from haldir.logkey import KEY_FILE as LOG_KEY_FILE
from haldir.vaultkey import KEY_FILE as VAULT_KEY_FILE
from hotpath import postgres_roots

SESSIONS = 64
STATS_FLUSH_S = 1.5
OPERATIONS = ("check", "secret", "audit", "authorize")  # the workload's requests, in turn
KEY_FILES = (VAULT_KEY_FILE, LOG_KEY_FILE)  # what every replica of a deployment shares

# One script for every replica's wrk: request n is operation n mod len(kinds), for session n mod SESSIONS.
LUA = """
local sessions = {%(sessions)s}  -- {session id, its tenant's key}
local kinds = {%(kinds)s}
local n = 0
request = function()
  n = n + 1
  local session = sessions[(n %% #sessions) + 1]
  local sid = session[1]
  local headers = {["Authorization"] = "Bearer " .. session[2], ["Content-Type"] = "application/json"}
  local kind = kinds[(n %% #kinds) + 1]
  if kind == 0 then
    return wrk.format("POST", "/v1/sessions/" .. sid .. "/check", headers, '{"scope": "read"}')
  elseif kind == 1 then
    headers["X-Session-ID"] = sid
    return wrk.format("GET", "/v1/secrets/stripe_key", headers, nil)
  elseif kind == 2 then
    return wrk.format("POST", "/v1/audit", headers,
      '{"session_id": "' .. sid .. '", "tool": "search", "action": "query", "cost_usd": "0"}')
  end
  return wrk.format("POST", "/v1/payments/authorize", headers,
    '{"session_id": "' .. sid .. '", "amount": "0.01"}')
end
"""


@dataclass
class Run:
    replicas: int
    requests: int
    rate: float
    p50_ms: float  # the slowest replica's
    p99_ms: float
    failed: int  # non-2xx answers and socket errors, all replicas
    server_cpu_s: float
    database_cpu_s: float
    commits: int  # transactions PostgreSQL committed in the database during the run
    rollbacks: int

    def per_request_ms(self, seconds: float) -> float:
        return seconds * 1000 / self.requests if self.requests else float("nan")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="A PostgreSQL URL: the run makes (and drops) a scratch database on that server.",
    )
    parser.add_argument("--replicas", default="1,2,3", help="Comma-separated replica counts to measure.")
    parser.add_argument("--workers", type=int, default=1, help="HALDIR_WORKERS of each replica.")
    parser.add_argument("--duration", type=int, default=10, help="Measured seconds per replica count.")
    parser.add_argument("--warmup", type=int, default=3, help="Unmeasured seconds before each measured run.")
    parser.add_argument(
        "--tenants", type=int, default=1, help="Tenants the sessions are spread over (each its own ledger)."
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections, over all replicas.")
    parser.add_argument(
        "--operations", default=",".join(OPERATIONS), help=f"The mix, taken in turn: {', '.join(OPERATIONS)}."
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    counts = [int(n) for n in args.replicas.split(",")]
    load = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="haldir-bench-replicas-") as tmp,
        scratch_database(args.database_url) as database_url,
    ):
        assert database_url is not None
        first = Path(tmp) / "replica-0"
        env = server_env(first, database_url) | {"HALDIR_WORKERS": str(args.workers)}
        haldir(env, "migrate", "up")
        keys = [
            json.loads(haldir(env, "keys", "create", "--json", "--tenant", f"bench-{n}", "--scopes", "*"))[
                "key"
            ]
            for n in range(args.tenants)
        ]
        script = Path(tmp) / "mixed.lua"
        runs = []
        for count in counts:
            with replicas(Path(tmp), env, count) as started:
                if not script.exists():
                    sessions = [(s, key) for key in keys for s in prepare(started[0].base, key, args.tenants)]
                    kinds = ", ".join(str(OPERATIONS.index(name)) for name in args.operations.split(","))
                    quoted = ", ".join(f'{{"{s}", "{key}"}}' for s, key in sessions)
                    script.write_text(LUA % {"sessions": quoted, "kinds": kinds})
                runs.append(measure(started, script, database_url, args))
    print(table(runs))
    print()
    print(machine(load))
    if any(run.failed for run in runs):
        sys.exit("some requests failed (non-2xx or socket errors): see the table")


@dataclass(frozen=True)
class Replica:
    base: str
    pid: int


@contextlib.contextmanager
def replicas(tmp: Path, env: dict[str, str], count: int) -> Iterator[list[Replica]]:
    """`count` replicas on the database of `env`, each with a data dir of its own, until the block ends."""
    first = Path(env["HALDIR_DATA_DIR"])
    with contextlib.ExitStack() as stack:
        started = []
        for n in range(count):
            data_dir = tmp / f"replica-{n}"
            if n:  # the first start generated the keys: the others are given them, as on other machines
                data_dir.mkdir(exist_ok=True)
                for name in KEY_FILES:
                    shutil.copy2(first / name, data_dir / name)
            port = free_port()
            log = tmp / f"replica-{n}-{count}.log"
            proc = stack.enter_context(running_server(env | {"HALDIR_DATA_DIR": str(data_dir)}, port, log))
            base = f"http://{HOST}:{port}"
            wait_ready(proc, base, log)
            started.append(Replica(base, proc.pid))
        yield started


def prepare(base: str, key: str, tenants: int) -> list[str]:
    """Sessions with `read`, `spend` and a budget no run uses up, and the secret the workload releases."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30, trust_env=False) as client:
        client.post("/v1/secrets", json={"name": "stripe_key", "value": "sk_live_bench"}).raise_for_status()
        made = []
        for i in range(SESSIONS // tenants):
            body = {"agent_id": f"agent-{i}", "scopes": ["read", "spend"], "spend_limit": "1000000.00"}
            response = client.post("/v1/sessions", json=body)
            response.raise_for_status()
            made.append(response.json()["session_id"])
        return made


def measure(started: list[Replica], script: Path, database_url: str, args: argparse.Namespace) -> Run:
    per_replica = max(1, args.connections // len(started))
    pids = [replica.pid for replica in started]

    def wrks(seconds: int) -> list[str]:
        commands = [
            [
                "wrk",
                "-t1",
                f"-c{per_replica}",
                f"-d{seconds}s",
                "--timeout",
                "30s",
                "-s",
                str(script),
                "--latency",
                base,
            ]
            for base in (replica.base for replica in started)
        ]
        running = [
            subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands
        ]
        outputs = []
        for proc in running:
            out, err = proc.communicate(timeout=seconds + 120)
            if proc.returncode != 0:
                sys.exit(f"wrk failed:\n{out}{err}")
            outputs.append(out)
        return outputs

    if args.warmup:
        wrks(args.warmup)
    databases = postgres_roots()
    before = sum(tree_cpu_seconds(pid) for pid in pids)
    database_before = sum(tree_cpu_seconds(root) for root in databases)
    transactions_before = asyncio.run(transactions(database_url))
    outputs = wrks(args.duration)
    server_cpu = sum(tree_cpu_seconds(pid) for pid in pids) - before
    database_cpu = sum(tree_cpu_seconds(root) for root in databases) - database_before
    time.sleep(STATS_FLUSH_S)  # PostgreSQL publishes its counters of a backend's transactions within this
    commits, rollbacks = (
        after - before
        for after, before in zip(asyncio.run(transactions(database_url)), transactions_before, strict=True)
    )
    parsed = [parse_wrk(output) for output in outputs]
    requests = sum(p["requests"] for p in parsed)
    return Run(
        replicas=len(started),
        requests=int(requests),
        rate=sum(p["rate"] for p in parsed),
        p50_ms=max(p["p50"] for p in parsed),
        p99_ms=max(p["p99"] for p in parsed),
        failed=int(sum(p["failed"] for p in parsed)),
        server_cpu_s=server_cpu,
        database_cpu_s=database_cpu,
        commits=commits,
        rollbacks=rollbacks,
    )


async def transactions(database_url: str) -> tuple[int, int]:
    """The database's committed and rolled back transactions so far."""
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row["xact_commit"]), int(row["xact_rollback"])


def parse_wrk(output: str) -> dict[str, float]:
    def search(pattern: str) -> str:
        found = re.search(pattern, output)
        if found is None:
            sys.exit(f"unexpected wrk output (no {pattern!r}):\n{output}")
        return found.group(1)

    def ms(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "requests": float(search(r"(\d+) requests in")),
        "rate": float(search(r"Requests/sec:\s+([\d.]+)")),
        "p50": ms(search(r"\s50%\s+(\S+)")),
        "p99": ms(search(r"\s99%\s+(\S+)")),
        "failed": (int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(int(n) for n in errors.groups()) if errors else 0),
    }


def table(runs: list[Run]) -> str:
    one = next((run.rate for run in runs if run.replicas == 1), None)
    lines = [
        "| replicas | requests/s | vs one server | p50 ms | p99 ms | non-2xx | replicas' CPU ms/request "
        "| PostgreSQL CPU ms/request | commits/request | rollbacks |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        ratio = f"{run.rate / one:.2f}x" if one else "n/a"
        lines.append(
            f"| {run.replicas} | {run.rate:,.0f} | {ratio} | {run.p50_ms:.1f} | {run.p99_ms:.1f} "
            f"| {run.failed} | {run.per_request_ms(run.server_cpu_s):.2f} "
            f"| {run.per_request_ms(run.database_cpu_s):.2f} | {run.commits / max(run.requests, 1):.2f} "
            f"| {run.rollbacks} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
