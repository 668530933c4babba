"""Load benchmark: create and read sessions against a real `haldir serve` process on 127.0.0.1.

Run `python bench/sessions.py --help`; see bench/README.md for what is measured and recorded results.
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
    async with http_client(base, key, connections=concurrency) as client:
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


def main() -> None:
    args = parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="haldir-bench-") as tmp:
        ready, results = serve_and_measure(args, Path(tmp), scopes="sessions:write", scenarios=run_scenarios)
    print(
        f"haldir {ready['version']}, store {ready['store']}, concurrency {args.concurrency}, "
        f"{args.warmup} warm-up requests, {time.strftime('%Y-%m-%d')}\n"
    )
    print(report(results))
    print(f"\n{machine(load)}")


if __name__ == "__main__":
    main()
