"""What every command shares: the `--json` option, JSON on stdout, and the consoles."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

JSON_MODE = "haldir.json"  # in the click context's meta: a command asked for JSON, errors included

console = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def _remember_json(ctx: typer.Context, value: bool) -> bool:
    if value:
        ctx.meta[JSON_MODE] = True
    return value


AsJson = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print the result as JSON on stdout; an error as one JSON object on stderr.",
        callback=_remember_json,
    ),
]


def print_json(data: Any) -> None:
    """One JSON document on one line of stdout."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()
