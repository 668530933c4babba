"""Group commit: concurrent submissions share one transaction, and each learns its result only after
that transaction is durable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommitWriter(Generic[T, R]):
    """Batches `submit` calls: while one batch commits, the next one gathers.

    `commit` receives a batch and returns one result per item, in order, after its transaction has
    committed. If it raises, every item of that batch fails with the same error and nothing of it
    was committed. No timer is involved: under no load a submission commits alone, at once.
    """

    def __init__(
        self, commit: Callable[[Sequence[T]], Awaitable[Sequence[R]]], *, max_batch: int = 500
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, item: T) -> R:
        if self._closed:
            raise RuntimeError("the writer is closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="haldir-group-commit")
        return await asyncio.shield(future)

    async def aclose(self) -> None:
        """Commit what is pending, then stop."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while self._pending or not self._closed:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            try:
                results = await self._commit([item for item, _ in batch])
            except BaseException as exc:  # every waiter learns its batch failed, then the writer goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
