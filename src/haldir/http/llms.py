"""`/llms.txt` (the llms.txt convention: an H1, a summary blockquote, sections of links and notes), written
from the OpenAPI document and the MCP server card, so that it names exactly the routes and tools served."""

from __future__ import annotations

from typing import Any

from haldir.mcp.card import GATEWAY_PATH, GOVERNANCE_PATH, META, REPOSITORY

OPTIONAL_TAGS = ("health", "discovery")  # what an agent can skip: listed last, under "Optional"


def render_llms(openapi: dict[str, Any], card: dict[str, Any], *, base: str, paths: dict[str, str]) -> str:
    """The text; `base` starts every link, `paths` names the discovery documents (`card`, `plugin`)."""
    info = openapi["info"]
    gateway = card["_meta"][f"{META}/gateway"]
    lines = [
        f"# {info['title']}",
        "",
        f"> {info.get('summary') or info.get('description', '')}",
        "",
        f"{card['description']}",
        "",
        f"Version {info['version']}. Routes answer JSON. Send an API key (`hld_…`) on every `/v1` route "
        "and MCP endpoint, as `Authorization: Bearer hld_…` or `X-API-Key: hld_…`; an operator makes keys "
        "with `haldir keys create` and gives each only the scopes it needs (`sessions:write`, …). "
        "A key without a route's scope gets 403 `insufficient_scope` naming the scope. Every error is "
        '`{"error", "code", "request_id"}`. A request held for a person\'s approval answers 202 '
        "`approval_required` with an `approval_id`: nothing ran; once it is approved, make the same request "
        "again, unchanged, and it runs once.",
        "",
        "## How an agent is governed",
        "",
        "- An operator creates a session for the agent: scopes, a TTL and a spend limit "
        "(`POST /v1/sessions`, or the `createSession` tool).",
        f"- The agent calls its tools through the MCP gateway ({base}{GATEWAY_PATH} with its session in "
        "`X-Session-ID`) or `POST /v1/proxy/call`: each call is checked against the session's scopes, the "
        "tenant's policies and the budget, forwarded with secrets injected by reference, and recorded.",
        "- It may ask first (`POST /v1/sessions/{session_id}/check`), reserve a cost "
        "(`POST /v1/payments/authorize`) and log what it did itself (`POST /v1/audit`).",
        "- Every decision is in the tamper-evident ledger (`GET /v1/audit`), provable against signed "
        "checkpoints.",
        "",
        "## MCP",
        "",
        f"- [Governance server]({base}{GOVERNANCE_PATH}): Streamable HTTP with the API key. Tools: "
        f"{_names(card['tools'])}. Prompts: {_names(card['prompts'])}.",
        f"- [Gateway]({base}{GATEWAY_PATH}): Streamable HTTP with the API key and `X-Session-ID`. Its own "
        f"tools: {_names(gateway['tools'])}; the tenant's upstream tools join them, each under its own name "
        "(`<upstream>__<tool>` when two upstreams share one).",
        "- Over stdio: `haldir-mcp` (or `haldir mcp`) serves the governance server and `haldir proxy` the "
        "gateway, calling the server at `HALDIR_URL` with `HALDIR_API_KEY`.",
        f"- [Server card]({base}{paths['card']}): both servers' transports, tools and prompts.",
        "",
        "## Docs",
        "",
        f"- [OpenAPI 3.1]({base}/openapi.json): every route's request, response and error bodies.",
        f"- [Plugin manifest]({base}{paths['plugin']})",
        f"- [API reference]({REPOSITORY}/blob/main/docs/api.md): scopes, fields and status codes per route.",
        f"- [MCP guide]({REPOSITORY}/blob/main/docs/mcp.md)",
    ]
    sections = _operations_by_tag(openapi)
    descriptions = {tag["name"]: tag.get("description", "") for tag in openapi.get("tags", [])}
    for tag, operations in sections.items():
        if tag not in OPTIONAL_TAGS:
            lines += ["", f"## API: {tag.capitalize()}", "", descriptions.get(tag, ""), "", *operations]
    lines += ["", "## Optional", ""]
    for tag in OPTIONAL_TAGS:
        lines += sections.get(tag, [])
    return "\n".join(lines) + "\n"


def _operations_by_tag(openapi: dict[str, Any]) -> dict[str, list[str]]:
    """One line per operation, grouped by its first tag, in the order the app serves them."""
    sections: dict[str, list[str]] = {}
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            tag = (operation.get("tags") or ["other"])[0]
            sections.setdefault(tag, []).append(f"- `{method.upper()} {path}`: {_line(operation)}")
    return sections


def _line(operation: dict[str, Any]) -> str:
    """The operation's description up to its first full stop, else its summary."""
    text = " ".join(str(operation.get("description") or "").split())
    first = text.split(". ", 1)[0].rstrip(".")
    return f"{first}." if first else f"{operation.get('summary', '')}."


def _names(items: list[dict[str, Any]]) -> str:
    return ", ".join(f"`{item['name']}`" for item in items) or "none"
