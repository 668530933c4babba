"""Load benchmark: webhook events from commit to receiver, against a real `haldir serve` and a local receiver.

Each scenario sends N requests at a concurrency (32 by default) whose commit records an event: `POST
/v1/webhooks/{id}/test` (one `webhook.test` event and its delivery), and `POST /v1/audit` of an entry an
anomaly rule flags (the entry, an `audit.flagged` event). The server's delivery workers fan the events out,
sign and POST them to a receiver on 127.0.0.1 (uvicorn, in this process) that answers 204. Reported: the
requests' own rate and latency, events delivered per second (from the first request sent to the last
event received), and each event's latency from its request's answer (sent after the commit) to its
arrival: negative when the delivery reached the receiver before the answer reached the client. A
baseline scenario (`POST /v1/audit` of entries nothing flags: no event) gives the same server's request
rate without webhooks.

Run `python bench/webhooks.py --help`; see bench/README.md for recorded results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from common import (
    HOST,
    Result,
    drive,
    free_port,
    haldir,
    http_client,
    machine,
    percentile_ms,
    require_no_failures,
    running_server,
    scratch_database,
    server_env,
    wait_ready,
)

DELIVERY_WAIT_S = 120.0
SESSIONS = 100  # the baseline's requests are spread over these


@dataclass
class Arrivals:
    """When each event (by `webhook-id`) reached the receiver, and what it was."""

    at: dict[str, float] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)
    duplicates: int = 0
    signed: int = 0
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_until(self, done: Callable[[], bool], timeout: float) -> None:
        """Block (a thread) until `done()` holds, or `timeout` seconds."""
        with self.arrived:
            self.arrived.wait_for(done, timeout=timeout)

    def of(self, scenario: Scenario) -> dict[str, float]:
        """Arrival times of the scenario's events, by the key its requests answered with."""
        with self.arrived:
            found = {}
            for message_id, at in self.at.items():
                body = json.loads(self.bodies[message_id])
                if body["type"] == scenario.event_type:
                    key = message_id if scenario.event_type == "webhook.test" else body["data"]["entry_id"]
                    if key in scenario.committed:
                        found[key] = at
            return found


def receiver_app(arrivals: Arrivals) -> Callable[..., Awaitable[None]]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        message_id = headers.get("webhook-id", "")
        with arrivals.arrived:
            if message_id in arrivals.at:
                arrivals.duplicates += 1
            else:
                arrivals.at[message_id] = time.perf_counter()
                arrivals.bodies[message_id] = body
            arrivals.signed += headers.get("webhook-signature", "").startswith("v1,")
            arrivals.arrived.notify_all()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


class Receiver:
    def __init__(self, arrivals: Arrivals) -> None:
        self.port = free_port()
        config = uvicorn.Config(receiver_app(arrivals), host=HOST, port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hook"

    def __enter__(self) -> Receiver:
        self._thread.start()
        while not self._server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@dataclass
class Scenario:
    name: str
    event_type: str
    result: Result
    committed: dict[str, float]  # event key -> when its request answered
    first_sent: float = math.inf
    delivered_per_s: float = math.nan
    latencies: list[float] = field(default_factory=list)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000, help="Requests (events) per scenario.")
    parser.add_argument("--concurrency", type=int, default=32, help="Requests in flight at once.")
    parser.add_argument(
        "--workers", type=int, default=None, help="Server worker processes (default: per CPU)."
    )
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL server URL; default SQLite in a temp dir."
    )
    args = parser.parse_args()
    if args.events < 1 or args.concurrency < 1:
        parser.error("--events and --concurrency must be >= 1")
    return args


async def run(
    base: str, key: str, receiver_url: str, arrivals: Arrivals, args: argparse.Namespace
) -> tuple[Result, list[Scenario]]:
    async with http_client(base, key, connections=args.concurrency) as client:
        created = await client.post("/v1/webhooks", json={"url": receiver_url, "events": ["audit.flagged"]})
        created.raise_for_status()
        webhook_id = created.json()["webhook_id"]
        rule = await client.post("/v1/audit/rules", json={"type": "tool_match", "pattern": "flag_*"})
        rule.raise_for_status()
        sessions = []
        for _ in range(SESSIONS):
            session = await client.post("/v1/sessions", json={"agent_id": "bench", "scopes": ["read"]})
            session.raise_for_status()
            sessions.append(session.json()["session_id"])
        session_id = sessions[0]

        baseline = Result("POST /v1/audit (not flagged: no event)")

        async def send_plain(c: httpx.AsyncClient, i: int) -> httpx.Response:
            # Spread over sessions, so that no session's burst of actions is flagged (and makes events).
            body = {"session_id": sessions[i % SESSIONS], "tool": "plain", "action": f"a{i}"}
            return await c.post("/v1/audit", json=body)

        await drive(
            client, baseline, send=send_plain, expect=201, count=args.events, concurrency=args.concurrency
        )
        require_no_failures([baseline])
        tests = Scenario("POST /v1/webhooks/{id}/test", "webhook.test", Result("webhook.test"), {})
        flagged = Scenario("POST /v1/audit (flagged)", "audit.flagged", Result("audit.flagged"), {})

        async def send_test(c: httpx.AsyncClient, i: int) -> httpx.Response:
            tests.first_sent = min(tests.first_sent, time.perf_counter())
            response = await c.post(f"/v1/webhooks/{webhook_id}/test")
            if response.status_code == 202:
                tests.committed[response.json()["event_id"]] = time.perf_counter()
            return response

        async def send_flagged(c: httpx.AsyncClient, i: int) -> httpx.Response:
            flagged.first_sent = min(flagged.first_sent, time.perf_counter())
            body = {"session_id": session_id, "tool": "flag_me", "action": f"a{i}"}
            response = await c.post("/v1/audit", json=body)
            if response.status_code == 201:
                flagged.committed[response.json()["entry_id"]] = time.perf_counter()
            return response

        for scenario, send, expect in ((tests, send_test, 202), (flagged, send_flagged, 201)):
            await drive(
                client,
                scenario.result,
                send=send,
                expect=expect,
                count=args.events,
                concurrency=args.concurrency,
            )
            require_no_failures([scenario.result])

            def complete(scenario: Scenario = scenario) -> bool:
                return len(arrivals.of(scenario)) >= args.events

            await asyncio.to_thread(arrivals.wait_until, complete, DELIVERY_WAIT_S)
            mine = arrivals.of(scenario)
            if len(mine) < args.events:
                raise SystemExit(f"{scenario.name}: {len(mine)} of {args.events} events arrived")
            scenario.delivered_per_s = len(mine) / (max(mine.values()) - scenario.first_sent)
            scenario.latencies = [at - scenario.committed[key] for key, at in mine.items()]
        return baseline, [tests, flagged]


def table(scenarios: list[Scenario]) -> str:
    lines = [
        "| scenario | events | requests/s | request p50 ms | delivered events/s "
        "| answer→receiver p50 ms | p90 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scenarios:
        requests = sorted(s.result.latencies)
        ordered = sorted(s.latencies)
        cells = [
            f"`{s.name}`",
            str(len(s.latencies)),
            f"{s.result.requests / s.result.elapsed:.0f}",
            f"{percentile_ms(requests, 50):.1f}",
            f"{s.delivered_per_s:.0f}",
            *(f"{percentile_ms(ordered, p):.1f}" for p in (50, 90, 99)),
        ]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    load = os.getloadavg()
    arrivals = Arrivals()
    with (
        tempfile.TemporaryDirectory(prefix="haldir-bench-") as tmp,
        scratch_database(args.database_url) as url,
    ):
        data_dir = Path(tmp)
        env = server_env(data_dir, url)
        env["HALDIR_OUTBOUND_ALLOW"] = "127.0.0.0/8"
        if args.workers:
            env["HALDIR_WORKERS"] = str(args.workers)
        haldir(env, "migrate", "up")
        key = json.loads(haldir(env, "keys", "create", "--json", "--name", "bench", "--scopes", "*"))["key"]
        port, log = free_port(), data_dir / "server.log"
        base = f"http://{HOST}:{port}"
        with Receiver(arrivals) as receiver, running_server(env, port, log) as proc:
            ready = wait_ready(proc, base, log)
            baseline, scenarios = asyncio.run(run(base, key, receiver.url, arrivals, args))
    print(
        f"haldir {ready['version']}, store {ready['store']}, concurrency {args.concurrency}, "
        f"{args.events} events per scenario, {time.strftime('%Y-%m-%d %H:%M')}\n"
    )
    print(table(scenarios))
    rate = baseline.requests / baseline.elapsed
    p50 = percentile_ms(sorted(baseline.latencies), 50)
    print(f"\nbaseline `{baseline.name}`: {rate:.0f} requests/s, p50 {p50:.1f} ms")
    print(f"\nduplicates received: {arrivals.duplicates}; signed deliveries: {arrivals.signed}")
    print(f"\n{machine(load)}")


if __name__ == "__main__":
    main()
