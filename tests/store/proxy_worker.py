"""One proxy caller in its own OS process, started by tests/test_proxy_concurrency.py.

`python -m tests.store.proxy_worker URL TENANT COUNT SESSION...` opens the store and a governor, prints
`ready`, waits for `go` on stdin, admits COUNT concurrent calls of the tool `search` spread over the
sessions, and prints one JSON object: how many were admitted and how many refused, by error code.
"""

from __future__ import annotations

import sys
from collections import Counter

import anyio
import anyio.to_thread

from haldir.clock import SystemClock
from haldir.core.keys import Principal
from haldir.errors import BudgetExceeded, RateLimited
from haldir.runtime import wire
from haldir.store.sql import SqlStore
from tests.store.processes import report, started

RUN_LIMIT_S = 60.0


async def call_all(url: str, tenant: str, count: int, sessions: list[str]) -> dict[str, object]:
    store = SqlStore.open(url, pool_size=4)
    governor = wire(store=store, clock=SystemClock())
    principal = Principal.operator(tenant)
    outcomes: Counter[str] = Counter()
    async with started(store):

        async def call(session_id: str) -> None:
            try:
                await governor.proxy.admit_call(principal, session_id=session_id, tool="search", arguments={})
                outcomes["admitted"] += 1
            except (BudgetExceeded, RateLimited) as refused:
                outcomes[refused.code] += 1

        with anyio.fail_after(RUN_LIMIT_S):
            async with anyio.create_task_group() as tg:
                for n in range(count):
                    tg.start_soon(call, sessions[n % len(sessions)])
    return dict(outcomes)


def main() -> None:
    url, tenant, count, *sessions = sys.argv[1:]
    report(lambda: call_all(url, tenant, int(count), sessions))


if __name__ == "__main__":
    main()
