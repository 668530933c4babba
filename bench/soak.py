"""Soak: a real `haldir serve` under mixed load for a long time, sampled each minute for growth.

wrk (`-t2 -c32` by default) drives one mixed script for `--minutes` back-to-back one-minute runs: ledger
writes (`POST /v1/audit`), governed local calls (`POST /v1/tools/add/begin`, then its `finish` on the same
wrk thread), session reads, secret releases under a session and audit pages, rotating over 64 sessions.
After each minute it records the minute's rate, p50 and p99 latency and non-2xx answers (wrk's), and of
the server (all its processes, from /proc) its resident memory, all of it and its anonymous part, its
open file descriptors and its data directory's size. At the end it fits a least-squares line to each
over the minutes after the first (warm-up) and prints each slope per minute and as a share of the mean,
so that growth shows as a trend.

Run `python bench/soak.py --help`; see bench/README.md for recorded results. Needs `wrk` (Debian package).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    HOST,
    free_port,
    haldir,
    machine,
    running_server,
    scratch_database,
    server_env,
    wait_ready,
)
from hotpath import Endpoint, parse_wrk, prepare
from hotpath import _wrk as run_wrk

# Each wrk thread keeps the call ids its begins answered and finishes them before anything else.
LUA = """
local sessions = {%(sessions)s}
local headers = {["Authorization"] = "Bearer %(key)s", ["Content-Type"] = "application/json"}
local kinds = {"audit", "begin", "session", "audit", "begin", "secret", "audit", "begin", "page", "session"}
local open_calls = {}
local n = 0
request = function()
  n = n + 1
  if #open_calls > 0 then
    local call = table.remove(open_calls)
    return wrk.format("POST", "/v1/tools/calls/" .. call .. "/finish", headers,
      '{"status": "ok", "latency_ms": 1}')
  end
  local sid = sessions[(n %% #sessions) + 1]
  local kind = kinds[(n %% #kinds) + 1]
  headers["X-Session-ID"] = nil
  if kind == "audit" then
    return wrk.format("POST", "/v1/audit", headers,
      '{"session_id": "' .. sid .. '", "tool": "search", "action": "query", "cost_usd": "0"}')
  elseif kind == "begin" then
    return wrk.format("POST", "/v1/tools/add/begin", headers,
      '{"session_id": "' .. sid .. '", "arguments": {"a": 1, "b": 2}, "cost_usd": "0.000001"}')
  elseif kind == "session" then
    return wrk.format("GET", "/v1/sessions/" .. sid, headers)
  elseif kind == "secret" then
    headers["X-Session-ID"] = sid
    return wrk.format("GET", "/v1/secrets/stripe_key", headers)
  end
  return wrk.format("GET", "/v1/audit?limit=20", headers)
end
response = function(status, headers, body)
  local call = body:match('"call_id":"([^"]+)","tool"')
  if call then table.insert(open_calls, call) end
end
"""
MIX = Endpoint("soak", "mixed", "POST", "/")


@dataclass(frozen=True)
class Minute:
    minute: int
    rate: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    rss_mib: float
    anon_mib: float
    fds: int
    data_mib: float


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=30, help="one-minute wrk runs, sampled after each")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (-c)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (-t)")
    parser.add_argument(
        "--timeout",
        type=int,
        default=30,
        help="wrk's timeout per request, seconds (a timeout is a socket error)",
    )
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server for a scratch database")
    return parser.parse_args()


def tree(root: int) -> list[int]:
    """`root` and every process below it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def rss_mib(pids: list[int], field: str = "VmRSS") -> float:
    """The processes' resident memory (`VmRSS`), or a part of it (`RssAnon`: heap and stacks; the rest is
    mostly file pages, such as SQLite's memory-mapped database, which grow with the file, not a leak)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def open_fds(pids: list[int]) -> int:
    count = 0
    for pid in pids:
        try:
            count += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return count


def size_mib(directory: Path) -> float:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file()) / 1024**2


def slope(values: list[float]) -> float:
    """Least-squares slope per sample."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
    return covariance / sum((x - mean_x) ** 2 for x in range(n))


def report(minutes: list[Minute]) -> str:
    lines = [
        "| minute | req/s | p50 ms | p99 ms | non-2xx | socket errors | RSS MiB | anon MiB | open fds "
        "| data MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in minutes:
        lines.append(
            f"| {m.minute} | {m.rate:.0f} | {m.p50_ms:.1f} | {m.p99_ms:.1f} | {m.non_2xx} | "
            f"{m.socket_errors} | {m.rss_mib:.1f} | {m.anon_mib:.1f} | {m.fds} | {m.data_mib:.1f} |"
        )
    steady = minutes[1:] or minutes
    lines.append("")
    lines.append("Trend over minutes 2 onwards (least-squares slope):")
    for label, values in (
        ("RSS MiB", [m.rss_mib for m in steady]),
        ("anonymous RSS MiB", [m.anon_mib for m in steady]),
        ("open fds", [float(m.fds) for m in steady]),
        ("p99 ms", [m.p99_ms for m in steady]),
        ("req/s", [m.rate for m in steady]),
    ):
        mean = sum(values) / len(values)
        per_minute = slope(values)
        share = per_minute / mean * 100 if mean else 0.0
        lines.append(f"- {label}: {per_minute:+.3f} per minute ({share:+.2f}% of the mean {mean:.1f})")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    load = os.getloadavg()
    minutes: list[Minute] = []
    with (
        tempfile.TemporaryDirectory(prefix="haldir-soak-") as tmp,
        scratch_database(args.database_url) as database_url,
    ):
        data_dir = Path(tmp)
        env = server_env(data_dir, database_url)
        haldir(env, "migrate", "up")
        key = json.loads(haldir(env, "keys", "create", "--json", "--name", "soak", "--scopes", "*"))["key"]
        port, log = free_port(), data_dir / "server.log"
        base = f"http://{HOST}:{port}"
        with running_server(env, port, log) as proc:
            wait_ready(proc, base, log)
            sessions = prepare(base, key, ttl=args.minutes * 60 + 3600, spend_limit="1000000")
            with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
                script.write(LUA % {"sessions": ", ".join(f'"{s}"' for s in sessions), "key": key})
            try:
                command = [
                    "wrk",
                    f"-t{args.threads}",
                    f"-c{args.connections}",
                    "-d60s",
                    "--timeout",
                    f"{args.timeout}s",
                    "-s",
                    script.name,
                ]
                for minute in range(1, args.minutes + 1):
                    measured = parse_wrk(MIX, run_wrk([*command, "--latency", base]), 0.0)
                    pids = tree(proc.pid)
                    minutes.append(
                        Minute(
                            minute=minute,
                            rate=measured.rate,
                            p50_ms=measured.p50_ms,
                            p99_ms=measured.p99_ms,
                            non_2xx=measured.non_2xx,
                            socket_errors=measured.errors,
                            rss_mib=rss_mib(pids),
                            anon_mib=rss_mib(pids, "RssAnon"),
                            fds=open_fds(pids),
                            data_mib=size_mib(data_dir),
                        )
                    )
                    print(f"minute {minute}: {minutes[-1]}", file=sys.stderr, flush=True)
                    time.sleep(0.5)
            finally:
                os.unlink(script.name)
    print(report(minutes))
    print()
    print(f"store: {'SQLite (default settings)' if not args.database_url else 'PostgreSQL'}")
    print(machine(load))
    if any(m.non_2xx or m.socket_errors for m in minutes):
        sys.exit("some requests failed (non-2xx or socket errors): see the table")


if __name__ == "__main__":
    main()
