"""Usage and overview on a big ledger: `GET /v1/usage` and `GET /v1/metrics` (the overview's counters) of a
tenant with a million entries, against the same routes of a tenant with none, in one server, driven by wrk.

The big log is bulk-loaded at schema revision 0008 (as `bench/ledger.py` loads it), then the store is
upgraded: migration 0009 fills the usage counters from the entries already there, which is timed too.
Counters, not scans: the two tenants' answers should cost the same.

Run `python bench/usage.py --help`; see bench/README.md for recorded results. Needs `wrk` (Debian package).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy.engine import make_url

from common import HOST, free_port, haldir, machine, running_server, scratch_database, server_env, wait_ready
from haldir.store.migrate import upgrade
from haldir.store.sql import SqlStore
from hotpath import Endpoint, Measured, measure
from ledger import BulkLog, load_postgres, load_sqlite, tenant_in

BEFORE_USAGE = "0008"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=None, help="A PostgreSQL URL (a scratch database is made).")
    parser.add_argument("--entries", type=int, default=1_000_000, help="Entries of the big tenant's log.")
    parser.add_argument("--duration", type=int, default=10, help="Measured seconds per endpoint.")
    parser.add_argument("--warmup", type=int, default=3, help="Unmeasured seconds before each endpoint.")
    parser.add_argument(
        "--connections", default="1,16", help="wrk connections (-c), comma-separated: one run each."
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (-t).")
    parser.add_argument("--workers", type=int, default=2, help="`haldir serve` worker processes.")
    args = parser.parse_args()
    args.show_errors, args.profile = False, None  # what hotpath.measure reads besides
    args.levels = [int(level) for level in args.connections.split(",")]
    return args


async def migrate(url: str, revision: str) -> float:
    store = SqlStore.open(url, pool_size=1)
    try:
        began = time.perf_counter()
        await upgrade(store, revision)
        return time.perf_counter() - began
    finally:
        await store.close()


def load(url: str, args: argparse.Namespace) -> tuple[str, str, list[str]]:
    """The big tenant (bulk-loaded, then the counters filled by the migration) and an empty one."""
    asyncio.run(migrate(url, BEFORE_USAGE))
    big = asyncio.run(tenant_in(url, "big"))
    log = BulkLog(big.principal.tenant_id)
    began = time.perf_counter()
    if make_url(url).get_backend_name() == "sqlite":
        load_sqlite(url, log, args.entries)
    else:
        asyncio.run(load_postgres(url, log, args.entries))
    loaded = time.perf_counter() - began
    upgraded = asyncio.run(migrate(url, "head"))
    empty = asyncio.run(tenant_in(url, "empty"))
    notes = [
        f"bulk load of {log.size:,} entries: {loaded:.0f} s",
        f"migration 0009 (usage counters from the {log.size:,} entries already there): {upgraded:.1f} s",
    ]
    return big.key, empty.key, notes


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    load_average = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="haldir-bench-usage-") as tmp,
        scratch_database(args.database_url) as database_url,
    ):
        data_dir = Path(tmp)
        url = database_url or f"sqlite:///{data_dir / 'haldir.db'}"
        env = {**server_env(data_dir, url), "HALDIR_WORKERS": str(args.workers)}
        big, empty, notes = load(url, args)
        haldir(env, "migrate", "status")
        port, log = free_port(), data_dir / "server.log"
        base = f"http://{HOST}:{port}"
        results: list[tuple[str, int, Measured]] = []
        with running_server(env, port, log) as proc:
            wait_ready(proc, base, log)
            for level in args.levels:
                args.connections, args.threads = level, min(level, 2)
                for endpoint in (
                    Endpoint("usage", "GET /v1/usage", "GET", "/v1/usage?since=2026-11-01&until=2026-11-30"),
                    Endpoint("metrics", "GET /v1/metrics", "GET", "/v1/metrics"),
                ):
                    # The two tenants one after the other, per endpoint: the nearest pair of runs.
                    for tenant, key in (("none", empty), (f"{args.entries:,}", big)):
                        measured = measure(proc.pid, base, key, ["-"], endpoint, args)
                        results.append((tenant, level, measured))
    print(f"store {'PostgreSQL' if database_url else 'SQLite'}, {args.workers} workers\n")
    print(
        "| endpoint | tenant's entries | connections | requests/s | p50 ms | p99 ms | non-2xx "
        "| server CPU ms/request |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for tenant, level, r in results:
        print(
            f"| `{r.endpoint.label}` | {tenant} | {level} | {r.rate:,.0f} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {r.non_2xx + r.errors} | {r.cpu_ms_per_request:.2f} |"
        )
    print()
    print("".join(f"- {note}\n" for note in notes))
    print(machine(load_average))
    if any(r.non_2xx or r.errors for _, _, r in results):
        sys.exit("some requests failed (non-2xx or socket errors): see the table")


if __name__ == "__main__":
    main()
