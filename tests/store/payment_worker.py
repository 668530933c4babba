"""One payer in its own OS process, started by tests/store/test_budgets.py.

`python -m tests.store.payment_worker URL TENANT SESSION COUNT` opens the store and a governor, prints
`ready`, waits for `go` on stdin, sends COUNT concurrent $1.00 authorizations against SESSION, and prints
one JSON object: the authorization ids it got and how many were refused for budget.
"""

from __future__ import annotations

import sys

import anyio
import anyio.to_thread

from haldir.clock import SystemClock
from haldir.core.keys import Principal
from haldir.errors import BudgetExceeded
from haldir.runtime import wire
from haldir.store.sql import SqlStore
from tests.store.processes import report, started

RUN_LIMIT_S = 60.0


async def pay_all(url: str, tenant: str, session_id: str, count: int) -> dict[str, object]:
    store = SqlStore.open(url, pool_size=4)
    governor = wire(store=store, clock=SystemClock())
    principal = Principal.operator(tenant)
    authorized: list[str] = []
    refused = 0
    async with started(store):

        async def pay() -> None:
            nonlocal refused
            try:
                outcome = await governor.budgets.authorize_payment(
                    principal, session_id=session_id, amount="1.00"
                )
                authorized.append(outcome.value.payment.payment_id)
            except BudgetExceeded:
                refused += 1

        with anyio.fail_after(RUN_LIMIT_S):
            async with anyio.create_task_group() as tg:
                for _ in range(count):
                    tg.start_soon(pay)
    return {"authorized": authorized, "refused": refused}


def main() -> None:
    url, tenant, session_id, count = sys.argv[1:]
    report(lambda: pay_all(url, tenant, session_id, int(count)))


if __name__ == "__main__":
    main()
