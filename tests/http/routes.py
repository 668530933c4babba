"""A sample request for every authenticated route, so that walkers can call each one."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

PUBLIC = {("GET", "/livez"), ("GET", "/readyz"), ("GET", "/healthz")}

# (method, path) -> (required key scope, JSON body or None); "{name}" in a body is filled like a path.
SAMPLES: dict[tuple[str, str], tuple[str, Any]] = {
    ("POST", "/v1/keys"): ("admin:write", {"name": "k", "scopes": ["admin:read"]}),
    ("GET", "/v1/keys"): ("admin:read", None),
    ("DELETE", "/v1/keys/{prefix}"): ("admin:write", None),
    ("POST", "/v1/sessions"): ("sessions:write", {"agent_id": "a", "scopes": ["read"]}),
    ("GET", "/v1/sessions"): ("sessions:read", None),
    ("GET", "/v1/sessions/{session_id}"): ("sessions:read", None),
    ("DELETE", "/v1/sessions/{session_id}"): ("sessions:write", None),
    ("POST", "/v1/sessions/{session_id}/check"): ("sessions:read", {"scope": "read"}),
    ("POST", "/v1/audit"): ("audit:write", {"session_id": "{session_id}", "tool": "t", "action": "a"}),
    ("GET", "/v1/audit"): ("audit:read", None),
    ("GET", "/v1/audit/entries/{entry_id}"): ("audit:read", None),
    ("GET", "/v1/audit/log-key"): ("audit:read", None),
    ("GET", "/v1/audit/checkpoint"): ("audit:read", None),
    ("GET", "/v1/audit/tree-head"): ("audit:read", None),
    ("GET", "/v1/audit/inclusion-proof/{entry_id}"): ("audit:read", None),
    ("GET", "/v1/audit/consistency-proof"): ("audit:read", None),
    ("GET", "/v1/audit/verify"): ("audit:read", None),
    ("GET", "/v1/audit/spend"): ("audit:read", None),
    ("POST", "/v1/audit/rules"): ("audit:write", {"type": "tool_match", "pattern": "delete_*"}),
    ("GET", "/v1/audit/rules"): ("audit:read", None),
    ("DELETE", "/v1/audit/rules/{rule_id}"): ("audit:write", None),
}

# Query strings a route needs to get past validation and reach its scope check.
QUERIES = {("GET", "/v1/audit/consistency-proof"): "?first=1&second=1"}


def api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app documents in its OpenAPI description: the routes clients can call."""
    paths = app.openapi()["paths"]
    found = [(method.upper(), path) for path, operations in paths.items() for method in operations]
    assert found, "the app documents no routes"
    return found


def fill(method: str, path: str, ids: dict[str, str]) -> str:
    url = path + QUERIES.get((method, path), "")
    for name, value in ids.items():
        url = url.replace("{" + name + "}", value)
    assert "{" not in url, f"no sample id for a parameter of {path}: add it to the walker"
    return url


def body_for(method: str, path: str, ids: dict[str, str]) -> Any:
    body = SAMPLES[(method, path)][1]
    if isinstance(body, dict):
        return {k: v.format_map(_Keep(ids)) if isinstance(v, str) else v for k, v in body.items()}
    return body


class _Keep(dict[str, str]):
    """Leaves a placeholder that has no id as it is."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
