"""Load benchmark: secret release and payment authorization against a real `haldir serve` process.

Each request is a full governed operation: a release checks the session's scope, opens the sealed value
and commits its ledger entry before answering; an authorization reserves budget with one conditional
update and commits the payment and its ledger entry in the same transaction. A session read runs in
the same server as a baseline, so the ratios hold on any machine.

Run `python bench/vault.py --help`; see bench/README.md for recorded results.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import httpx

from common import (
    Result,
    Send,
    drive,
    http_client,
    machine,
    report,
    require_no_failures,
    serve_and_measure,
)

SESSIONS = 32  # requests spread over this many sessions, as concurrent agents would be


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="Measured requests per scenario.")
    parser.add_argument("--concurrency", type=int, default=32, help="Requests in flight at once.")
    parser.add_argument("--warmup", type=int, default=200, help="Unmeasured requests before measuring.")
    parser.add_argument(
        "--database-url", default=None, help="Store URL (e.g. postgresql://…); default SQLite in a temp dir."
    )
    args = parser.parse_args()
    if args.requests < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--requests and --concurrency must be >= 1, --warmup >= 0")
    return args


def release_sender(sessions: list[str]) -> Send:
    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.get(
            "/v1/secrets/stripe_key", headers={"X-Session-ID": sessions[i % len(sessions)]}
        )

    return send


def authorize_sender(sessions: list[str]) -> Send:
    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        body = {"session_id": sessions[i % len(sessions)], "amount": "0.01", "description": f"bench {i}"}
        return await client.post("/v1/payments/authorize", json=body)

    return send


def session_sender(sessions: list[str]) -> Send:
    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.get(f"/v1/sessions/{sessions[i % len(sessions)]}")

    return send


async def setup(client: httpx.AsyncClient) -> list[str]:
    """A secret and SESSIONS sessions with the scopes and budget every scenario needs."""
    stored = await client.post("/v1/secrets", json={"name": "stripe_key", "value": "sk_live_" + "x" * 24})
    stored.raise_for_status()
    sessions = []
    for n in range(SESSIONS):
        body = {"agent_id": f"agent-{n}", "scopes": ["read", "spend"], "spend_limit": "1000000"}
        created = await client.post("/v1/sessions", json=body)
        created.raise_for_status()
        sessions.append(created.json()["session_id"])
    return sessions


async def run_scenarios(base: str, key: str, *, count: int, warmup: int, concurrency: int) -> list[Result]:
    async with http_client(base, key, connections=concurrency) as client:
        sessions = await setup(client)
        scenarios = [
            (Result("GET /v1/sessions/{id} (baseline)"), session_sender(sessions), 200),
            (Result("GET /v1/secrets/{name} (release)"), release_sender(sessions), 200),
            (Result("POST /v1/payments/authorize"), authorize_sender(sessions), 201),
        ]
        for result, send, expect in scenarios:
            warm = Result(f"warm-up {result.name}")
            await drive(client, warm, send=send, expect=expect, count=warmup, concurrency=concurrency)
            require_no_failures([warm])
            await drive(client, result, send=send, expect=expect, count=count, concurrency=concurrency)
            require_no_failures([result])
    return [result for result, _, _ in scenarios]


def main() -> None:
    args = parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="haldir-bench-") as tmp:
        ready, results = serve_and_measure(args, Path(tmp), scopes="*", scenarios=run_scenarios)
    print(
        f"haldir {ready['version']}, store {ready['store']}, concurrency {args.concurrency}, "
        f"{SESSIONS} sessions, {args.warmup} warm-up requests per scenario, {time.strftime('%Y-%m-%d')}\n"
    )
    print(report(results))
    print(f"\n{machine(load)}")


if __name__ == "__main__":
    main()
