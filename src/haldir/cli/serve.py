"""`haldir serve`: run the API server on the configured store."""

from __future__ import annotations

import os
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from haldir.cli.operator import run
from haldir.cli.output import AsJson, print_json
from haldir.core.keys import NewKey
from haldir.governor import DEFAULT_TENANT
from haldir.http.metrics import prepare_multiprocess
from haldir.logging import configure_logging
from haldir.runtime import open_runtime
from haldir.settings import Settings

WORKER_PING_SECONDS = 60


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default HALDIR_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default HALDIR_PORT).")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default HALDIR_WORKERS: one per CPU).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Serve the API. On first start, create the default tenant's admin key and print it once.

    With --json, logs are JSON lines (as HALDIR_LOG_JSON=true) and the first start's key is printed as one
    JSON object.
    """
    overrides = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    if as_json:
        overrides["log_json"] = True
    settings = Settings(**overrides)  # type: ignore[arg-type]
    configure_logging(level=settings.log_level, json=settings.log_json)

    async def bootstrap() -> tuple[NewKey | None, str | None]:
        # Opening the Vault here refuses a wrong or missing master key before the server starts.
        async with open_runtime(settings, pool_size=2, vault=True) as runtime:
            return await runtime.governor.keys.bootstrap(DEFAULT_TENANT), runtime.generated_master_key

    new, generated_key = run(bootstrap)
    base = f"http://{settings.host}:{settings.port}"
    if as_json:
        _print_json_start(new, generated_key, base)
    elif generated_key is not None:
        Console(highlight=False, soft_wrap=True).print(
            f"Generated the Vault's master key into {generated_key} (mode 0600). Back it up: without it no "
            "secret can be read. On several servers, set HALDIR_ENCRYPTION_KEY instead."
        )
    if new is not None and not as_json:
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
    if as_json:
        os.environ["HALDIR_LOG_JSON"] = "true"  # the workers read their settings from the environment
    # Each worker process builds its own app, store connections and caches from the same HALDIR_*
    # environment (the workers count included, so `--workers` reaches them too).
    os.environ["HALDIR_WORKERS"] = str(settings.workers)
    if settings.metrics and settings.workers > 1:
        prepare_multiprocess(settings.data_dir)
    uvicorn.run(
        "haldir.http.app:app_from_environment",
        factory=True,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        # The supervisor kills a worker that does not answer its ping in time, dropping every request in
        # flight: on saturated cores 5 s (uvicorn's default) killed busy, healthy workers.
        timeout_worker_healthcheck=WORKER_PING_SECONDS,
    )


def _print_json_start(new: NewKey | None, generated_key: str | None, base: str) -> None:
    if new is not None or generated_key is not None:
        print_json(
            {
                "url": base,
                "tenant_id": DEFAULT_TENANT if new is not None else None,
                "admin_api_key": new.value if new is not None else None,
                "master_key_generated": generated_key,
            }
        )
