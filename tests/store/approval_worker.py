"""One approver or one retrying agent in its own OS process (tests/store/test_approval_processes.py).

`python -m tests.store.approval_worker URL TENANT decide APPROVAL_ID COUNT` makes COUNT concurrent decisions
(approve and deny in turn) on the approval; `... retry SESSION AMOUNT COUNT` makes COUNT concurrent payment
authorizations of AMOUNT. Each opens the store and a governor, prints `ready`, waits for `go` on stdin, and
prints one JSON object: how many of its attempts succeeded and how many were refused, by error code.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import anyio
import anyio.to_thread

from haldir.clock import SystemClock
from haldir.core.keys import Principal
from haldir.errors import HaldirError
from haldir.runtime import wire
from haldir.store.sql import SqlStore
from tests.store.ledger_worker import causes

RUN_LIMIT_S = 60.0


async def attempt_all(url: str, tenant: str, mode: str, target: str, *rest: str) -> dict[str, int]:
    store = SqlStore.open(url, pool_size=4)
    governor = wire(store=store, clock=SystemClock())
    principal = Principal.operator(tenant)
    outcomes: Counter[str] = Counter()
    try:
        await store.ping()
        print("ready", flush=True)
        if (await anyio.to_thread.run_sync(sys.stdin.readline)).strip() != "go":
            raise SystemExit("the test went away before saying go")

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
    finally:
        await store.close()
    return dict(outcomes)


def main() -> None:
    url, tenant, mode, target, *rest = sys.argv[1:]
    try:
        result = anyio.run(lambda: attempt_all(url, tenant, mode, target, *rest))
    except Exception as exc:
        print("\n".join(["failed:", *sorted(causes(exc))]), file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
