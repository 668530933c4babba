"""What tenant quotas cost a request: `Limits.admit_request` in-process, for an unlimited tenant, a tenant
with an actions quota (a write request reads the month's counters; a read request reads nothing), and a
tenant with a requests-per-second quota (a lease from the store every tenth of the limit).

Run `python bench/limits.py [--database-url postgresql://…]`; see bench/README.md for recorded results.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from common import scratch_database
from haldir.core.keys import Principal
from haldir.runtime import open_runtime
from haldir.settings import Settings
from haldir.store.migrate import upgrade
from haldir.store.sql import SqlStore


async def measure(url: str | None, requests: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="haldir-bench-limits-"))
    settings = Settings(data_dir=data_dir, database_url=url)
    store = SqlStore.open(settings.store_url, pool_size=1)
    try:
        await upgrade(store)
    finally:
        await store.close()
    async with open_runtime(settings) as runtime:
        listening = asyncio.create_task(runtime.store.changes.listen())  # as a server does (PostgreSQL)
        while runtime.store.changes.epoch() is None:  # noqa: ASYNC110 - polling the listener task
            await asyncio.sleep(0.01)
        limits = runtime.governor.limits
        operator = Principal.operator("acme")
        await limits.set_quota(operator, agents=1)  # the tenant exists, with a quota row...
        await limits.set_quota(operator, agents=0)  # ...that limits nothing

        async def run(label: str, *, records: bool, n: int = requests) -> None:
            began = time.perf_counter()
            for _ in range(n):
                release = await limits.admit_request("acme", records=records)
                if release is not None:
                    release()
            print(f"{label:<48} {(time.perf_counter() - began) / n * 1e6:8.1f} µs/request")

        await run("unlimited tenant", records=True)
        await limits.set_quota(operator, actions_per_month=10**9)
        await run("actions quota, a write request", records=True, n=max(1, requests // 4))
        await run("actions quota, a read request", records=False)
        await limits.set_quota(operator, actions_per_month=0, requests_per_second=10**6)
        await run("requests-per-second quota (leases of 100,000)", records=False)
        listening.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=None, help="A PostgreSQL URL (a scratch database is made).")
    parser.add_argument("--requests", type=int, default=20_000, help="Requests admitted per measurement.")
    args = parser.parse_args()
    with scratch_database(args.database_url) as url:
        asyncio.run(measure(url, args.requests))


if __name__ == "__main__":
    main()
