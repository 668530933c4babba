"""HTTP throughput of the governed hot path, driven by wrk against a real `haldir serve`.

For each endpoint: a 3 s warm-up, then `wrk -t2 -c32 -d10s --latency`, counting non-2xx answers and the
server's CPU seconds (all its processes) over the measured run. `/livez` (no auth, no store) runs in
the same server as the baseline: every other endpoint is also given as a share of its rate.

Run `python bench/hotpath.py --help`; see bench/README.md for recorded results. Needs `wrk` (Debian package).
"""

from __future__ import annotations

import argparse
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

# With --show-errors: the first non-2xx answers of each wrk thread, printed (costs wrk some speed).
ERRORS_LUA = """
local shown = 0
response = function(status, headers, body)
  if status >= 300 and shown < 5 then
    shown = shown + 1
    io.write("non-2xx " .. status .. " " .. body .. "\\n")
  end
end
"""
SESSIONS = 64  # governed requests rotate over this many sessions, as a fleet of agents would
ENDPOINTS = ("livez", "healthz", "check", "secret", "audit", "sessions")

# One wrk script for every endpoint: the request is built per call, rotating over the sessions.
LUA = """
local sessions = {%(sessions)s}
local method, template, body_template = "%(method)s", "%(path)s", %(body)s
local headers = {["Authorization"] = "Bearer %(key)s", ["Content-Type"] = "application/json"}
local n = 0
request = function()
  n = n + 1
  local sid = sessions[(n %% #sessions) + 1]
  local path = template:gsub("{sid}", sid)
  if %(session_header)s then headers["X-Session-ID"] = sid end
  local body = nil
  if body_template then body = body_template:gsub("{sid}", sid) end
  return wrk.format(method, path, headers, body)
end
%(errors)s
"""


@dataclass(frozen=True)
class Endpoint:
    name: str
    label: str
    method: str
    path: str
    body: dict[str, object] | None = None
    session_header: bool = False


def endpoints() -> dict[str, Endpoint]:
    return {
        e.name: e
        for e in (
            Endpoint("livez", "GET /livez", "GET", "/livez"),
            Endpoint("healthz", "GET /healthz", "GET", "/healthz"),
            Endpoint(
                "check", "POST /v1/sessions/{id}/check", "POST", "/v1/sessions/{sid}/check", {"scope": "read"}
            ),
            Endpoint(
                "secret", "GET /v1/secrets/{name}", "GET", "/v1/secrets/stripe_key", session_header=True
            ),
            Endpoint(
                "audit",
                "POST /v1/audit",
                "POST",
                "/v1/audit",
                {"session_id": "{sid}", "tool": "search", "action": "query", "cost_usd": "0"},
            ),
            Endpoint(
                "sessions",
                "POST /v1/sessions",
                "POST",
                "/v1/sessions",
                {"agent_id": "bench", "scopes": ["read", "execute"], "ttl": 3600, "spend_limit": "10.00"},
            ),
        )
    }


@dataclass
class Measured:
    endpoint: Endpoint
    requests: int
    rate: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int
    cpu_s: float
    database_cpu_s: float | None  # PostgreSQL's processes on this machine, when the store is PostgreSQL

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_s * 1000 / self.requests if self.requests else float("nan")

    @property
    def database_cpu_ms_per_request(self) -> float | None:
        if self.database_cpu_s is None or not self.requests:
            return None
        return self.database_cpu_s * 1000 / self.requests


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--database-url",
        default=None,
        help="A PostgreSQL URL: the run makes (and drops) a scratch database on that server. "
        "Default: SQLite in a temporary directory.",
    )
    parser.add_argument("--duration", type=int, default=10, help="Measured seconds per endpoint.")
    parser.add_argument("--warmup", type=int, default=3, help="Unmeasured seconds before each endpoint.")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (-c).")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (-t).")
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS), help=f"Comma-separated: {ENDPOINTS}.")
    parser.add_argument("--serve-args", default="", help="Extra arguments for `haldir serve`.")
    parser.add_argument("--show-errors", action="store_true", help="Print the first non-2xx answers.")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="Folder for a py-spy profile (collapsed stacks, all workers) of each endpoint's measured run.",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    chosen = [endpoints()[name] for name in args.endpoints.split(",")]
    load = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="haldir-bench-http-") as tmp,
        scratch_database(args.database_url) as database_url,
    ):
        data_dir = Path(tmp)
        env = server_env(data_dir, database_url)
        haldir(env, "migrate", "up")
        key = json.loads(haldir(env, "keys", "create", "--json", "--name", "bench", "--scopes", "*"))["key"]
        port, log = free_port(), data_dir / "server.log"
        base = f"http://{HOST}:{port}"
        command = [str(Path(sys.executable).with_name("haldir")), "serve", *args.serve_args.split()]
        with running_server(env, port, log, command=command) as proc:
            wait_ready(proc, base, log)
            sessions = prepare(base, key)
            results = [measure(proc.pid, base, key, sessions, endpoint, args) for endpoint in chosen]
    print(table(results))
    print()
    print(machine(load))
    if any(r.non_2xx or r.errors for r in results):
        sys.exit("some requests failed (non-2xx or socket errors): see the table")


def prepare(base: str, key: str, *, ttl: int | None = None, spend_limit: str = "100.00") -> list[str]:
    """Sessions with `read` and budget (and `ttl` seconds, else the default), and the secret the release
    scenario reads."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30, trust_env=False) as client:
        stored = client.post("/v1/secrets", json={"name": "stripe_key", "value": "sk_live_bench"})
        stored.raise_for_status()
        made = []
        for i in range(SESSIONS):
            body: dict[str, object] = {
                "agent_id": f"agent-{i}",
                "scopes": ["read", "execute"],
                "spend_limit": spend_limit,
            }
            if ttl is not None:
                body["ttl"] = ttl
            response = client.post("/v1/sessions", json=body)
            response.raise_for_status()
            made.append(response.json()["session_id"])
        return made


def measure(
    pid: int, base: str, key: str, sessions: list[str], endpoint: Endpoint, args: argparse.Namespace
) -> Measured:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        body = "nil" if endpoint.body is None else _lua_string(json.dumps(endpoint.body))
        script.write(
            LUA
            % {
                "sessions": ", ".join(f'"{s}"' for s in sessions),
                "method": endpoint.method,
                "path": endpoint.path,
                "body": body,
                "key": key,
                "session_header": "true" if endpoint.session_header else "false",
                "errors": ERRORS_LUA if args.show_errors else "",
            }
        )
    try:
        common = ["wrk", f"-t{args.threads}", f"-c{args.connections}", "-s", script.name, "--latency", base]
        if args.warmup:
            _wrk([*common[:1], f"-d{args.warmup}s", *common[1:]])
        databases = postgres_roots() if args.database_url else []
        before = tree_cpu_seconds(pid)
        database_before = sum(tree_cpu_seconds(root) for root in databases)
        with _profiling(pid, endpoint, args):
            output = _wrk([*common[:1], f"-d{args.duration}s", *common[1:]])
        for line in output.splitlines():
            if line.startswith("non-2xx"):
                print(f"{endpoint.label}: {line}", file=sys.stderr)
        cpu = tree_cpu_seconds(pid) - before
        database_cpu = sum(tree_cpu_seconds(root) for root in databases) - database_before
    finally:
        os.unlink(script.name)
    return parse_wrk(endpoint, output, cpu, database_cpu if databases else None)


def postgres_roots() -> list[int]:
    """The pids of local PostgreSQL servers (a `postgres` process whose parent is not one): their trees
    hold the backends serving the benchmark. None when PostgreSQL runs elsewhere."""
    names: dict[int, tuple[str, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            names[int(entry.name)] = (stat[stat.index("(") + 1 : stat.rindex(")")], int(fields[1]))
    return [
        pid
        for pid, (name, parent) in names.items()
        if name == "postgres" and names.get(parent, ("", 0))[0] != "postgres"
    ]


@contextlib.contextmanager
def _profiling(pid: int, endpoint: Endpoint, args: argparse.Namespace) -> Iterator[None]:
    """py-spy over the server and its workers while wrk runs (its own CPU is small next to 100 Hz samples)."""
    if args.profile is None:
        yield
        return
    args.profile.mkdir(parents=True, exist_ok=True)
    out = args.profile / f"{endpoint.name}.txt"
    beside = Path(sys.executable).with_name("py-spy")  # `.venv/bin/pip install py-spy` puts it here
    spy_bin = str(beside) if beside.exists() else "py-spy"
    command = [
        spy_bin,
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    spy = subprocess.Popen([*command, "--duration", str(args.duration)], stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.wait(timeout=60)


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _wrk(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def parse_wrk(endpoint: Endpoint, output: str, cpu: float, database_cpu: float | None = None) -> Measured:
    requests = int(_search(r"(\d+) requests in", output))
    rate = float(_search(r"Requests/sec:\s+([\d.]+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return Measured(
        endpoint=endpoint,
        requests=requests,
        rate=rate,
        p50_ms=_ms(_search(r"\s50%\s+(\S+)", output)),
        p99_ms=_ms(_search(r"\s99%\s+(\S+)", output)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=sum(int(n) for n in errors.groups()) if errors else 0,
        cpu_s=cpu,
        database_cpu_s=database_cpu,
    )


def _search(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    if found is None:
        sys.exit(f"unexpected wrk output (no {pattern!r}):\n{text}")
    return found.group(1)


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def table(results: list[Measured]) -> str:
    baseline = next((r.rate for r in results if r.endpoint.name == "livez"), None)
    database = any(r.database_cpu_s is not None for r in results)
    extra = " PostgreSQL CPU ms/request |" if database else ""
    lines = [
        "| endpoint | requests/s | p50 ms | p99 ms | non-2xx | server CPU ms/request |"
        f"{extra} share of /livez |",
        "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if database else ""),
    ]
    for r in results:
        share = f"{r.rate / baseline:.0%}" if baseline else "n/a"
        db = r.database_cpu_ms_per_request
        db_cell = (f" {db:.2f} |" if db is not None else " n/a |") if database else ""
        lines.append(
            f"| `{r.endpoint.label}` | {r.rate:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
            f"{r.non_2xx + r.errors} | {r.cpu_ms_per_request:.2f} |{db_cell} {share} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    main()
    print(f"- run started {started}")
