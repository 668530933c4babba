"""One approver or one retrying agent in its own OS process (tests/store/test_approval_processes.py).

`python -m tests.store.approval_worker URL TENANT decide APPROVAL_ID COUNT` makes COUNT concurrent decisions
(approve and deny in turn) on the approval; `... retry SESSION AMOUNT COUNT` makes COUNT concurrent payment
authorizations of AMOUNT. Each opens the store and a governor, prints `ready`, waits for `go` on stdin, and
prints one JSON object: how many of its attempts succeeded and how many were refused, by error code.
"""

from __future__ import annotations

import sys
from collections import Counter

import anyio
import anyio.to_thread

from haldir.clock import SystemClock
from haldir.core.keys import Principal
from haldir.errors import HaldirError
from haldir.runtime import wire
from haldir.store.sql import SqlStore
from tests.store.processes import report, started

RUN_LIMIT_S = 60.0


async def attempt_all(url: str, tenant: str, mode: str, target: str, *rest: str) -> dict[str, int]:
    store = SqlStore.open(url, pool_size=4)
    governor = wire(store=store, clock=SystemClock())
    principal = Principal.operator(tenant)
    outcomes: Counter[str] = Counter()
    async with started(store):

        async def once(number: int) -> None:
            try:
                if mode == "decide":
                    decide = governor.approvals.approve if number % 2 == 0 else governor.approvals.deny
                    await decide(principal, target)
                else:
                    await governor.budgets.authorize_payment(principal, session_id=target, amount=rest[0])
                outcomes["ok"] += 1
            except HaldirError as exc:
                outcomes[exc.code] += 1

        count = int(rest[-1])
        with anyio.fail_after(RUN_LIMIT_S):
            async with anyio.create_task_group() as tg:
                for number in range(count):
                    tg.start_soon(once, number)
    return dict(outcomes)


def main() -> None:
    url, tenant, mode, target, *rest = sys.argv[1:]
    report(lambda: attempt_all(url, tenant, mode, target, *rest))


if __name__ == "__main__":
    main()
