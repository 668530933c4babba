"""The app in-process for the blocking client: run the client's code with `blocking(...)` and each of its
requests is served by the app on the test's event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx
from anyio.from_thread import BlockingPortal
from fastapi import FastAPI

T = TypeVar("T")


class AppTransport(httpx.BaseTransport):
    """`httpx.ASGITransport` for `httpx.Client`: usable in `blocking(...)`, or from any thread when given
    a `portal` to the test's event loop."""

    def __init__(self, app: FastAPI, *, portal: BlockingPortal | None = None) -> None:
        self._asgi = httpx.ASGITransport(app=app)
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def served() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
            return httpx.Response(response.status_code, headers=response.headers, content=raw)

        if self._portal is not None:
            return self._portal.call(served)
        return anyio.from_thread.run(served)


async def blocking(run: Callable[[], T]) -> T:
    """`run()` in a worker thread, so that a blocking client in it can reach the app on this event loop."""
    with anyio.fail_after(60):
        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
