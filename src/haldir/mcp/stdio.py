"""`haldir-mcp`: the governance MCP server over stdio, for MCP clients that start it as a command.

It calls a Haldir server with `HALDIR_API_KEY`: the one at `HALDIR_URL`, by default http://127.0.0.1:8000
(what `make run` serves), and refuses to start when nothing answers there. Only when `HALDIR_URL` is unset
and `HALDIR_DATA_DIR` or `HALDIR_DATABASE_URL` is set does it open that local store itself (as `haldir
serve` does) and act for the key there; it never creates a store the environment does not name.
Standard output carries MCP messages only: logs and errors go to standard error.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

import anyio
import httpx
import structlog
from mcp.server.stdio import stdio_server
from pydantic import ValidationError

from haldir.client import AsyncHaldirClient
from haldir.errors import ConfigurationError, HaldirError, ServerUnavailable, Unauthenticated
from haldir.logging import configure_logging
from haldir.mcp.backends import GovernanceBackend, LocalBackend, remote_backend
from haldir.mcp.governance import build_governance_server
from haldir.runtime import open_runtime
from haldir.settings import ClientSettings, Settings

PROBE_TIMEOUT = 10.0  # seconds to wait for the server's `/livez` at start
log = structlog.get_logger("haldir")


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
    if not uses_local_store(settings, client):
        await _require_server(client)
        log.info("mcp.remote", url=client.url)
        async with AsyncHaldirClient(api_key=client.api_key, base_url=client.url) as remote:
            yield remote_backend(remote)  # the server checks the key on each call
        return
    log.info("mcp.local", store=_store(settings))
    async with open_runtime(settings, vault=True) as runtime:
        if runtime.generated_master_key is not None:
            log.warning(
                "vault.master_key_generated",
                path=runtime.generated_master_key,
                advice="back this file up: without it no secret can be read",
            )
        try:
            principal = await runtime.governor.keys.authenticate(client.api_key)
        except Unauthenticated as exc:
            raise type(exc)(
                f"HALDIR_API_KEY is not a usable key of {_store(settings)} ({exc.message}): check it, or set "
                "HALDIR_URL to use it against a Haldir server"
            ) from None
        yield LocalBackend(runtime.governor, principal)


def uses_local_store(settings: Settings, client: ClientSettings) -> bool:
    """Whether to open the local store rather than call a server: only when the environment names a
    store (HALDIR_DATA_DIR or HALDIR_DATABASE_URL) and no server (HALDIR_URL)."""
    if "url" in client.model_fields_set:
        return False
    return bool({"data_dir", "database_url"} & settings.model_fields_set)


async def _require_server(client: ClientSettings) -> None:
    """Refuse to start when nothing answers at the server's URL, saying where that URL came from."""
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT) as http:
            await http.get(f"{client.url.rstrip('/')}/livez")
    except httpx.HTTPError as exc:
        source = (
            "HALDIR_URL"
            if "url" in client.model_fields_set
            else "the default, as HALDIR_URL is not set and neither HALDIR_DATA_DIR nor HALDIR_DATABASE_URL "
            "names a local store"
        )
        raise ServerUnavailable(
            f"cannot reach the Haldir server at {client.url} ({source}): {exc or type(exc).__name__}; start "
            "it (`haldir serve`), set HALDIR_URL to the server's URL, or set HALDIR_DATA_DIR to use a "
            "local store"
        ) from None


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
