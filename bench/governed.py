"""Benchmark: what governing a local tool call adds, through the Python SDK, against the bare tool.

A real `haldir serve` on 127.0.0.1 (SQLite in a temporary directory unless `--database-url`), blocking
`HaldirClient`s, calls one at a time. Each iteration calls the bare tool (a function adding two numbers)
and then the same tool through `haldir.governed.governed_call` (begin: session, scope, policies, cost
reserved, admission durable; run; finish: outcome durable), with a declared cost so the budget path
runs; then, in a block of its own, the same with a client made with `background_finish=True`, whose
finish leaves the caller's path (sent by the client's thread during the agent's next step: the calls
are `--think-ms` apart, the model's turn in an agent loop, not timed). A third
scenario times `begin_tool_call` and `finish_tool_call` on their own; two references time, on the same
server, an HTTP round trip that does no work (`GET /livez`) and one durable ledger write
(`POST /v1/audit`). Prints a Markdown table and the machine.

Run `python bench/governed.py --help`; see bench/README.md for recorded results.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    HOST,
    free_port,
    haldir,
    machine,
    percentile_ms,
    running_server,
    server_env,
    wait_ready,
)
from haldir import HaldirClient
from haldir.governed import governed_call


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=3000, help="measured calls per scenario")
    parser.add_argument("--warmup", type=int, default=300, help="unmeasured governed calls first")
    parser.add_argument(
        "--think-ms",
        type=float,
        default=10.0,
        help="pause between governed calls, as an agent's model step (not timed); 0 for back to back",
    )
    parser.add_argument("--database-url", default=None, help="store URL; unset means SQLite in a temp dir")
    return parser.parse_args()


def add(arguments: dict[str, Any]) -> dict[str, Any]:
    return {"sum": arguments["a"] + arguments["b"]}


def measure(
    client: HaldirClient,
    background: HaldirClient,
    session_id: str,
    *,
    calls: int,
    warmup: int,
    think_s: float,
) -> dict[str, list[float]]:
    def governed(i: int, via: HaldirClient = client) -> None:
        result = governed_call(
            via,
            session_id=session_id,
            tool="add",
            arguments={"a": i, "b": 1},
            run=add,
            cost_usd="0.000001",
        )
        assert result == {"sum": i + 1}

    for i in range(warmup):
        governed(i)
    times: dict[str, list[float]] = {
        "bare": [],
        "governed": [],
        "governed, background finish": [],
        "begin": [],
        "finish": [],
        "reference: GET /livez": [],
        "reference: POST /v1/audit": [],
    }
    for scenario, via in (("governed", client), ("governed, background finish", background)):
        for i in range(
            calls
        ):  # each scenario in a block of its own: background finishes overlap only their own
            started = time.perf_counter()
            assert add({"a": i, "b": 1}) == {"sum": i + 1}
            times["bare"].append(time.perf_counter() - started)
            started = time.perf_counter()
            governed(i, via)
            times[scenario].append(time.perf_counter() - started)
            time.sleep(think_s)
        assert via.flush(timeout=60)
    for i in range(calls):
        started = time.perf_counter()
        begun = client.begin_tool_call(session_id, "add", {"a": i, "b": 1}, cost_usd="0.000001")
        times["begin"].append(time.perf_counter() - started)
        started = time.perf_counter()
        client.finish_tool_call(begun["call_id"], latency_ms=0.001)
        times["finish"].append(time.perf_counter() - started)
    for i in range(calls):  # references: one HTTP round trip doing no work, and one durable ledger write
        started = time.perf_counter()
        client.request("GET", "/livez")
        times["reference: GET /livez"].append(time.perf_counter() - started)
        started = time.perf_counter()
        client.log_action(session_id, "add", "bench", 0, {"i": i})
        times["reference: POST /v1/audit"].append(time.perf_counter() - started)
    return times


def report(times: dict[str, list[float]], calls: int) -> str:
    lines = ["| scenario | calls | p50 ms | p90 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
    ordered = {name: sorted(values) for name, values in times.items()}
    for name, values in ordered.items():
        cells = [f"{percentile_ms(values, p):.3f}" for p in (50, 90, 99)]
        lines.append(f"| `{name}` | {len(values)} | {' | '.join(cells)} |")
    for scenario in ("governed", "governed, background finish"):
        bare = times["bare"][:calls] if scenario == "governed" else times["bare"][calls:]
        added = sorted(g - b for g, b in zip(times[scenario], bare, strict=True))
        cells = [f"{percentile_ms(added, p):.3f}" for p in (50, 90, 99)]
        lines.append(f"| **added** ({scenario} − bare, per call) | {len(added)} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="haldir-bench-") as tmp:
        data_dir = Path(tmp)
        env = server_env(data_dir, args.database_url)
        haldir(env, "migrate", "up")
        created = haldir(
            env,
            "keys",
            "create",
            "--json",
            "--name",
            "bench",
            "--scopes",
            "sessions:write,proxy:write,audit:write",
        )
        key = json.loads(created)["key"]
        port, log = free_port(), data_dir / "server.log"
        base = f"http://{HOST}:{port}"
        with running_server(env, port, log) as proc:
            wait_ready(proc, base, log)
            with (
                HaldirClient(key, base) as client,
                HaldirClient(key, base, background_finish=True) as background,
            ):
                session = client.create_session("bench-agent", ["execute"], 3600, "1000")
                times = measure(
                    client,
                    background,
                    session["session_id"],
                    calls=args.calls,
                    warmup=args.warmup,
                    think_s=args.think_ms / 1000,
                )
    print(report(times, args.calls))
    print()
    print(f"store: {'SQLite (default settings)' if not args.database_url else 'PostgreSQL'}")
    print(f"think time between governed calls: {args.think_ms} ms")
    print(machine(load))


if __name__ == "__main__":
    main()
