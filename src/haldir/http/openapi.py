"""The OpenAPI document completed: every error status an operation can answer, each with the error envelope
and the codes it carries, and a description of each capability (tag)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from haldir.errors import error_classes

ERROR_SCHEMA = "ErrorBody"
_ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}

# Codes the HTTP edge answers itself, beside the errors' own (see haldir.http.errors and .middleware).
EDGE_CODES = {
    400: ("malformed_json",),
    404: ("not_found",),
    405: ("method_not_allowed",),
    413: ("payload_too_large",),
    415: ("unsupported_media_type",),
    500: ("internal_error",),
}

TAGS = {
    "health": "Liveness and readiness probes; no key.",
    "discovery": "Documents that describe this server to agents and registries; no key.",
    "keys": "API keys and the scopes they carry.",
    "sessions": "Agent sessions: scoped, expiring grants with a spend limit; permission checks.",
    "secrets": "The Vault: encrypted secrets, released only to a session that holds their scope.",
    "payments": "Payment authorizations reserved against a session's budget, captured or voided.",
    "audit": "The tamper-evident ledger: actions, spend, inclusion and consistency proofs, signed "
    "checkpoints, anomaly rules.",
    "proxy": "Upstream MCP servers, their pinned tools, policies, and tool calls governed end to end.",
    "tools": "An agent's own tools, governed: begin a call (checked, its cost reserved), then finish it.",
    "approvals": "Human approval: rules that hold requests, the requests, and their decisions.",
    "webhooks": "Signed event deliveries to your endpoints, their retries and redeliveries.",
    "compliance": "Signed compliance evidence packs and their verification.",
    "usage": "Usage, the overview's metrics and the status of each component.",
}


def document_errors(app: FastAPI) -> None:
    """Complete the app's OpenAPI document once, when it is first built (see `complete`)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        built = app.openapi_schema is not None
        schema = build()  # FastAPI builds the document once and keeps it in app.openapi_schema
        if not built:
            complete(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(schema: dict[str, Any]) -> None:
    """Add the error statuses every operation can answer by its shape, give each error status the envelope
    as JSON (whatever the success's media type) and the list of its codes, and describe the tags."""
    codes = codes_by_status()
    used: set[str] = set()
    for operations in schema["paths"].values():
        for operation in operations.values():
            used.update(operation.get("tags", ()))
            responses = operation.setdefault("responses", {})
            for status in shape_statuses(operation):
                responses.setdefault(str(status), {})
            for status, response in responses.items():
                if status[0] in "45" and _is_envelope(response):
                    response["content"] = {"application/json": {"schema": _ERROR_REF}}
                    response["description"] = describe_status(int(status), codes)
    schema["tags"] = [{"name": tag, "description": TAGS.get(tag, tag)} for tag in sorted(used)]


def shape_statuses(operation: dict[str, Any]) -> list[int]:
    """What any operation of this shape can answer: 500 always; with a key, 401, 403 and 503 (a key is
    read from the store); with input, 400; with a body, 413 and 415; with a path parameter, 404."""
    statuses = [500]
    parameters = operation.get("parameters", [])
    if operation.get("security"):
        statuses += [401, 403, 503]
    if parameters or "requestBody" in operation:
        statuses.append(400)
    if "requestBody" in operation:
        statuses += [413, 415]
    if any(parameter.get("in") == "path" for parameter in parameters):
        statuses.append(404)
    return statuses


def codes_by_status() -> dict[int, list[str]]:
    """Every error code the server answers, by HTTP status."""
    found: dict[int, set[str]] = {status: set(codes) for status, codes in EDGE_CODES.items()}
    for code, cls in error_classes().items():
        if cls.http_status >= 400 and code != "haldir_error":
            found.setdefault(cls.http_status, set()).add(code)
    return {status: sorted(codes) for status, codes in found.items()}


def describe_status(status: int, codes: dict[int, list[str]]) -> str:
    known = ", ".join(f"`{code}`" for code in codes.get(status, ["http_error"]))
    return f"The error envelope; `code` is one of {known}."


def _is_envelope(response: dict[str, Any]) -> bool:
    """Whether an error response is (or should be) the envelope: undocumented, or documented with it."""
    content = response.get("content")
    if not content:
        return True
    return any(media.get("schema") == _ERROR_REF for media in content.values())
