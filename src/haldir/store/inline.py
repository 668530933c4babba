"""SQLite statements on the calling thread: a point statement takes microseconds, a hop to a driver
thread and back costs a hundred times more, so the hot path does not take it.

`InlineConnection` gives a synchronous SQLAlchemy connection the two coroutine methods the store uses
(`execute`, `run_sync`). Only what is short runs inline: point reads, and the statements of a write
transaction (their durable COMMIT runs on a thread); scans of the whole log keep a driver thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, TypeVarTuple, overload

from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.sql.base import Executable

if TYPE_CHECKING:
    from sqlalchemy.sql.selectable import TypedReturnsRows

P = ParamSpec("P")
R = TypeVar("R")
Ts = TypeVarTuple("Ts")


class InlineConnection:
    """The coroutine face of a synchronous connection, for code written against `AsyncConnection`.

    Awaiting `execute` runs the statement at once on this thread and returns its buffered result.
    """

    __slots__ = ("sync",)

    def __init__(self, sync: Connection) -> None:
        self.sync = sync

    @overload
    async def execute(
        self, statement: TypedReturnsRows[*Ts], parameters: Any = None
    ) -> CursorResult[*Ts]: ...

    @overload
    async def execute(
        self, statement: Executable, parameters: Any = None
    ) -> CursorResult[*tuple[Any, ...]]: ...

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[*tuple[Any, ...]]:
        return self.sync.execute(statement, parameters)

    async def run_sync(
        self, fn: Callable[Concatenate[Connection, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        return fn(self.sync, *args, **kwargs)
