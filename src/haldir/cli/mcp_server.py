"""`haldir mcp`: the governance MCP server over stdio, as `haldir-mcp` serves it, under the main command."""

from __future__ import annotations

import os

from haldir.cli.output import AsJson
from haldir.mcp import stdio


def mcp(as_json: AsJson = False) -> None:
    """Serve the governance MCP server on stdin/stdout, as `haldir-mcp` does: it calls the server at
    HALDIR_URL with HALDIR_API_KEY. Logs go to stderr; with --json, as JSON lines."""
    if as_json:
        os.environ["HALDIR_LOG_JSON"] = "true"  # stdio.main reads its settings from the environment
    stdio.main()
