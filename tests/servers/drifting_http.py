"""tests/proxy/drifting_tools.py's server over Streamable HTTP at `/mcp`: one `greet` whose definition
`drift` changes, shared by every client, so several Haldir replicas see the same drift.

Run: `python -m tests.servers.drifting_http --port 8124` from the repository's root.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from starlette.applications import Starlette
from starlette.routing import Route
from tests.proxy.drifting_tools import build


def app() -> Starlette:
    manager = StreamableHTTPSessionManager(app=build())

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with manager.run():
            yield

    return Starlette(routes=[Route("/mcp", endpoint=StreamableHTTPASGIApp(manager))], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    uvicorn.run(app(), host="127.0.0.1", port=parser.parse_args().port, log_level="warning")


if __name__ == "__main__":
    main()
