"""A sample request for every authenticated route, so that walkers can call each one."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

PUBLIC = {("GET", "/livez"), ("GET", "/readyz"), ("GET", "/healthz")}

# (method, path) -> (required key scope, JSON body or None)
SAMPLES: dict[tuple[str, str], tuple[str, Any]] = {
    ("POST", "/v1/keys"): ("admin:write", {"name": "k", "scopes": ["admin:read"]}),
    ("GET", "/v1/keys"): ("admin:read", None),
    ("DELETE", "/v1/keys/{prefix}"): ("admin:write", None),
    ("POST", "/v1/sessions"): ("sessions:write", {"agent_id": "a", "scopes": ["read"]}),
    ("GET", "/v1/sessions"): ("sessions:read", None),
    ("GET", "/v1/sessions/{session_id}"): ("sessions:read", None),
    ("DELETE", "/v1/sessions/{session_id}"): ("sessions:write", None),
    ("POST", "/v1/sessions/{session_id}/check"): ("sessions:read", {"scope": "read"}),
}


def api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, HEAD and OPTIONS aside."""
    found = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            found += [
                (method, route.path) for method in sorted(route.methods) if method not in ("HEAD", "OPTIONS")
            ]
    return found


def fill(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no sample id for a parameter of {path}: add it to the walker"
    return path
