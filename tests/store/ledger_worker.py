"""One ledger appender in its own OS process, started by tests/store/test_ledger_processes.py.

`python -m tests.store.ledger_worker URL TENANT WORKER COUNT TASKS` opens the store, prints `ready`,
waits for `go` on stdin, appends COUNT entries from TASKS concurrent tasks, and prints one JSON object:
each entry id it appended with the leaf index the store gave it.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import anyio
import anyio.to_thread

from haldir.core.ledger import EntryDraft, draft_entry
from haldir.store.sql import SqlStore
from tests.store.processes import report, started

T0 = datetime(2026, 4, 5, 19, 0, tzinfo=UTC)
APPEND_LIMIT_S = 60.0


def entry_id(worker: int, n: int) -> str:
    return f"aud_w{worker}n{n}"


def new_entry(tenant: str, worker: int, n: int) -> EntryDraft:
    return draft_entry(
        entry_id=entry_id(worker, n),
        tenant_id=tenant,
        session_id=f"ses_w{worker}",
        agent_id=f"agent-{worker}",
        tool="stripe",
        action="charge",
        status="ok",
        cost_usd="0.000001",
        details={"worker": worker, "n": n},
        timestamp=T0,
    )


async def append_all(url: str, tenant: str, *, worker: int, count: int, tasks: int) -> dict[str, int]:
    store = SqlStore.open(url, pool_size=2)
    placed: dict[str, int] = {}
    async with started(store):
        numbers = iter(range(count))  # shared by the tasks: each number is appended once

        async def appender() -> None:
            for n in numbers:
                stored = await store.ledger.append(new_entry(tenant, worker, n))
                placed[stored.entry_id] = stored.leaf_index

        with anyio.fail_after(APPEND_LIMIT_S):
            async with anyio.create_task_group() as tg:
                for _ in range(tasks):
                    tg.start_soon(appender)
    return placed


def main() -> None:
    url, tenant, worker, count, tasks = sys.argv[1:]
    report(lambda: append_all(url, tenant, worker=int(worker), count=int(count), tasks=int(tasks)))


if __name__ == "__main__":
    main()
