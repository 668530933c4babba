"""Test workers in their own OS processes: started together, told to go at once, each printing one
line of JSON when done (see tests/store/ledger_worker.py and payment_worker.py). `run_workers` is the
test's side; `started` and `report` are each worker's."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from haldir.store.sql import SqlStore

ROOT = Path(__file__).resolve().parents[2]
START_LIMIT_S = 60.0
RUN_LIMIT_S = 90.0


@dataclass
class Worker:
    number: int
    process: Process
    stdout: BufferedByteReceiveStream
    stderr: Path

    async def line(self) -> str:
        """The next line the worker printed (without its newline), or "" if it closed its output first."""
        try:
            return (await self.stdout.receive_until(b"\n", 1 << 20)).decode()
        except (anyio.IncompleteRead, anyio.EndOfStream):
            return ""

    def failure(self, what: str) -> str:
        return f"worker {self.number} {what}; its stderr:\n{self.stderr.read_text()[-4000:]}"


async def run_workers(commands: list[list[str]], tmp_path: Path) -> list[str]:
    """Run `python -m <module> <args>` for each command; wait until all print `ready`, send `go` to all,
    and return the last line each printed (its result). A worker that fails fails the test."""
    async with AsyncExitStack() as stack:
        workers = []
        for number, command in enumerate(commands):
            stderr = tmp_path / f"worker-{number}.err"
            process = await anyio.open_process(
                [sys.executable, "-m", *command], cwd=ROOT, stderr=stack.enter_context(stderr.open("wb"))
            )
            stack.push_async_callback(_stop, process)
            assert process.stdout is not None
            workers.append(Worker(number, process, BufferedByteReceiveStream(process.stdout), stderr))

        with anyio.fail_after(START_LIMIT_S):
            for worker in workers:
                assert await worker.line() == "ready", worker.failure("did not get ready")
        for worker in workers:
            assert worker.process.stdin is not None
            await worker.process.stdin.send(b"go\n")

        outputs = [""] * len(workers)

        async def finish(worker: Worker) -> None:
            outputs[worker.number] = await worker.line()
            assert await worker.process.wait() == 0, worker.failure("failed")

        with anyio.fail_after(RUN_LIMIT_S):
            async with anyio.create_task_group() as tg:
                for worker in workers:
                    tg.start_soon(finish, worker)
    return outputs


async def _stop(process: Process) -> None:
    """Kill a worker still running (after a timeout or another failure), then reap it."""
    if process.returncode is None:
        process.kill()
    with anyio.CancelScope(shield=True), anyio.fail_after(10):
        await process.aclose()


@asynccontextmanager
async def started(store: SqlStore) -> AsyncIterator[None]:
    """A worker's start: once its store answers it prints `ready` and waits for the test's `go`; the store
    is closed when the block ends."""
    try:
        await store.ping()
        print("ready", flush=True)
        if (await anyio.to_thread.run_sync(sys.stdin.readline)).strip() != "go":
            raise SystemExit("the test went away before saying go")
        yield
    finally:
        await store.close()


def report(run: Callable[[], Awaitable[object]]) -> None:
    """A worker's end: run it and print its result as one line of JSON; on failure exit 1, with the
    causes last on stderr (the test shows the end of it), after the traceback."""
    try:
        result = anyio.run(run)
    except Exception as exc:
        traceback.print_exc()
        print("\n".join(["failed:", *sorted(causes(exc))]), file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result), flush=True)


def causes(exc: BaseException) -> set[str]:
    """One line per distinct failure inside `exc` (task groups nest them), with what caused it."""
    if isinstance(exc, BaseExceptionGroup):
        return set().union(*(causes(inner) for inner in exc.exceptions))
    line = f"{type(exc).__name__}: {exc}"
    if exc.__cause__ is not None:
        line += f" (caused by {type(exc.__cause__).__name__}: {exc.__cause__})"
    return {line[:500]}
