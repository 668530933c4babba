"""`haldir-mcp`: the governance MCP server over stdio, for MCP clients that start it as a command.

With `HALDIR_URL` set it calls that Haldir server with `HALDIR_API_KEY`; without, it opens the local store
(`HALDIR_DATA_DIR` or `HALDIR_DATABASE_URL`, as `haldir serve` does) and acts for `HALDIR_API_KEY`.
Standard output carries MCP messages only: logs and errors go to standard error.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

import anyio
import structlog
from mcp.server.stdio import stdio_server
from pydantic import ValidationError

from haldir.client import AsyncHaldirClient
from haldir.errors import ConfigurationError, HaldirError, Unauthenticated
from haldir.logging import configure_logging
from haldir.mcp.backends import GovernanceBackend, LocalBackend, remote_backend
from haldir.mcp.governance import build_governance_server
from haldir.runtime import open_runtime
from haldir.settings import ClientSettings, Settings


def main() -> None:
    try:
        settings, client = Settings(), ClientSettings()
    except ValidationError as exc:
        _fail(ConfigurationError(f"invalid HALDIR_* setting: {_problems(exc)}"))
    configure_logging(level=settings.log_level, json=settings.log_json, stream=sys.stderr)
    try:
        anyio.run(serve, settings, client)
    except HaldirError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        pass


async def serve(settings: Settings, client: ClientSettings) -> None:
    """Serve MCP on this process's stdin and stdout until the client closes them."""
    async with _backend(settings, client) as backend:
        server = build_governance_server(lambda ctx: backend)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())


@asynccontextmanager
async def _backend(settings: Settings, client: ClientSettings) -> AsyncIterator[GovernanceBackend]:
    if not client.api_key:
        raise Unauthenticated(
            "HALDIR_API_KEY is not set: give haldir-mcp an API key (hld_…), e.g. from 'haldir keys create'"
        )
    if "url" in client.model_fields_set:
        async with AsyncHaldirClient(client.url, client.api_key) as remote:
            yield remote_backend(remote)  # the server checks the key on each call
        return
    async with open_runtime(settings, vault=True) as runtime:
        if runtime.generated_master_key is not None:
            structlog.get_logger("haldir").warning(
                "vault.master_key_generated",
                path=runtime.generated_master_key,
                advice="back this file up: without it no secret can be read",
            )
        try:
            principal = await runtime.governor.authenticate(client.api_key)
        except Unauthenticated as exc:
            raise type(exc)(
                f"HALDIR_API_KEY is not a usable key of {_store(settings)} ({exc.message}): check it, or set "
                "HALDIR_URL to use it against a Haldir server"
            ) from None
        yield LocalBackend(runtime.governor, principal)


def _store(settings: Settings) -> str:
    # Never the database URL itself: it may hold a password.
    return (
        "the database at HALDIR_DATABASE_URL"
        if settings.database_url
        else f"the store in {settings.data_dir}"
    )


def _fail(exc: HaldirError) -> NoReturn:
    print(f"haldir-mcp: error: {exc.message}", file=sys.stderr)
    sys.exit(exc.exit_code)


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
