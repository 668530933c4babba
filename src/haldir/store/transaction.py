"""A write transaction as the store's modules see it: statements, and ledger entries queued to be
appended (judged and chained) at the end, after every other change, so the tenant's ledger head is
always the last row a transaction locks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    ParamSpec,
    Protocol,
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


class Writing:
    """One write transaction: run statements with `execute`; queue ledger entries with `append`."""

    __slots__ = ("_conn", "pending")

    def __init__(self, conn: Executes, pending: list[PendingEntry]) -> None:
        self._conn = conn
        self.pending = pending

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
