"""A write transaction as the store's modules see it: statements, and ledger entries queued to be
appended (judged and chained) at the end, after every other change, so the tenant's ledger head is
always the last row a transaction locks. Changes that many transactions make to one row (a secret's
release count) can be queued too, and run once per commit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    ParamSpec,
    Protocol,
    Self,
    TypeVar,
    TypeVarTuple,
    overload,
)

from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.sql.base import Executable

from haldir.core.ledger import EntryDraft, StoredEntry

if TYPE_CHECKING:
    from sqlalchemy.sql.selectable import TypedReturnsRows

P = ParamSpec("P")
R = TypeVar("R")
Ts = TypeVarTuple("Ts")


class Executes(Protocol):
    """What the store's modules use of a connection: `AsyncConnection`, an `InlineConnection`, or a
    `Writing`. `execute` is typed as `AsyncConnection.execute` is, so rows keep their column types."""

    @overload
    async def execute(
        self, statement: TypedReturnsRows[*Ts], parameters: Any = None
    ) -> CursorResult[*Ts]: ...

    @overload
    async def execute(
        self, statement: Executable, parameters: Any = None
    ) -> CursorResult[*tuple[Any, ...]]: ...

    async def run_sync(
        self, fn: Callable[Concatenate[Connection, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R: ...


@dataclass
class PendingEntry:
    """An entry queued in a transaction; `stored` once the transaction appended it (before it commits)."""

    draft: EntryDraft
    stored: StoredEntry | None = None

    def result(self) -> StoredEntry:
        if self.stored is None:
            raise RuntimeError(
                f"entry {self.draft.entry_id} was not appended: its transaction did not commit"
            )
        return self.stored


class Change(Protocol):
    """A change queued in a transaction, run after its other statements and before its entries are
    appended. A commit runs its queued changes in `key` order (so transactions lock rows in one order,
    the ledger head last: no deadlocks) and changes with equal keys once: the first is given them all."""

    @property
    def key(self) -> tuple[str, ...]: ...

    async def run(self, conn: Executes, alike: Sequence[Self]) -> None: ...


Queued = PendingEntry | Change


class Writing:
    """One write transaction: run statements with `execute`; queue ledger entries with `append` and
    changes with `queue`."""

    __slots__ = ("_conn", "pending", "wrote_events")

    def __init__(self, conn: Executes, pending: list[Queued]) -> None:
        self._conn = conn
        self.pending = pending
        self.wrote_events = False  # it recorded an outbox event: wake the delivery worker after the commit

    @overload
    async def execute(
        self, statement: TypedReturnsRows[*Ts], parameters: Any = None
    ) -> CursorResult[*Ts]: ...

    @overload
    async def execute(
        self, statement: Executable, parameters: Any = None
    ) -> CursorResult[*tuple[Any, ...]]: ...

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[*tuple[Any, ...]]:
        return await self._conn.execute(statement, parameters)

    async def run_sync(
        self, fn: Callable[Concatenate[Connection, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        return await self._conn.run_sync(fn, *args, **kwargs)

    def append(self, draft: EntryDraft) -> PendingEntry:
        """Queue `draft`: it is appended when the transaction's other work is done, and commits with it."""
        pending = PendingEntry(draft)
        self.pending.append(pending)
        return pending

    def queue(self, change: Change) -> None:
        """Queue `change`: it runs, merged with its kind of this commit, before the entries are appended."""
        self.pending.append(change)
