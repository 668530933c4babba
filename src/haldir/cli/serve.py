"""`haldir serve`: run the API server on the configured store."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from haldir.cli.operator import open_governor, run
from haldir.core.keys import NewKey
from haldir.governor import DEFAULT_TENANT
from haldir.http.app import create_app
from haldir.logging import configure_logging
from haldir.settings import Settings


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default HALDIR_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default HALDIR_PORT).")] = None,
) -> None:
    """Serve the API. On first start, create the default tenant's admin key and print it once."""
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    configure_logging(level=settings.log_level, json=settings.log_json)

    async def bootstrap() -> NewKey | None:
        async with open_governor(settings) as gov:
            return await gov.bootstrap(DEFAULT_TENANT)

    new = run(bootstrap)
    base = f"http://{settings.host}:{settings.port}"
    if new is not None:
        console = Console(highlight=False, soft_wrap=True)
        console.rule("Haldir first start")
        console.print(
            f"Admin API key for tenant '{DEFAULT_TENANT}' (shown once, store it now):\n\n"
            f"  [bold]{new.value}[/]\n\n"
            "Use it as a bearer token, for example:\n"
            f"  curl -H 'Authorization: Bearer {new.value}' {base}/v1/sessions\n\n"
            "Make narrower keys with 'haldir keys create --scopes sessions:write'."
        )
        console.rule()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
    )
