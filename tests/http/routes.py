"""A sample request for every authenticated route, so that walkers can call each one."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tests.mcp_servers import BIN, time_server_params

TIME_COMMAND = str(BIN / "mcp-server-time")

PUBLIC = {
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/healthz"),
    ("GET", "/health"),
    ("GET", "/llms.txt"),
    ("GET", "/.well-known/ai-plugin.json"),
    ("GET", "/.well-known/mcp/server-card.json"),
}
# Routes any valid key may call: they answer about the key itself, nothing of the tenant's data.
AUTHENTICATED = {("GET", "/v1/keys/current")}

# (method, path) -> (required key scopes, space-separated, the first checked first; JSON body or None);
# "{name}" in a body is filled like a path.
# A public address (the walker's servers allow no private network) on a port nothing answers on.
WALKER_HOOK_URL = "https://1.1.1.1:9/haldir-walker"

SAMPLES: dict[tuple[str, str], tuple[str, Any]] = {
    ("POST", "/v1/keys"): ("admin:write", {"name": "k", "scopes": ["admin:read"]}),
    ("GET", "/v1/keys"): ("admin:read", None),
    ("DELETE", "/v1/keys/{prefix}"): ("admin:write", None),
    ("POST", "/v1/sessions"): ("sessions:write", {"agent_id": "a", "scopes": ["read"]}),
    ("GET", "/v1/sessions"): ("sessions:read", None),
    ("GET", "/v1/sessions/{session_id}"): ("sessions:read", None),
    ("DELETE", "/v1/sessions/{session_id}"): ("sessions:write", None),
    ("POST", "/v1/sessions/{session_id}/check"): ("sessions:read", {"scope": "read"}),
    ("POST", "/v1/secrets"): ("vault:write", {"name": "walker-stored", "value": "v"}),
    ("GET", "/v1/secrets"): ("vault:read", None),
    ("GET", "/v1/secrets/{name}"): ("vault:read", None),
    ("DELETE", "/v1/secrets/{name}"): ("vault:write", None),
    ("POST", "/v1/payments/authorize"): (
        "payments:write",
        {"session_id": "{spend_session_id}", "amount": "0.50"},
    ),
    ("GET", "/v1/payments"): ("payments:read", None),
    ("GET", "/v1/payments/{authorization_id}"): ("payments:read", None),
    ("POST", "/v1/payments/{authorization_id}/capture"): ("payments:write", {"amount": "0.25"}),
    ("POST", "/v1/payments/{authorization_id}/void"): ("payments:write", None),
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
    ("GET", "/v1/audit/anomaly-settings"): ("audit:read", None),
    ("PUT", "/v1/audit/anomaly-settings"): ("audit:write", {"burst_max_actions": 100}),
    ("POST", "/v1/proxy/upstreams"): (  # a stdio upstream runs a command on the server: admin only
        "proxy:write admin:write",
        {"name": "walker-new", "command": TIME_COMMAND},
    ),
    ("GET", "/v1/proxy/upstreams"): ("proxy:read", None),
    ("DELETE", "/v1/proxy/upstreams/{name}"): ("proxy:write", None),
    ("POST", "/v1/proxy/upstreams/{name}/refresh"): ("proxy:write", None),
    ("GET", "/v1/proxy/tools"): ("proxy:read", None),
    ("POST", "/v1/proxy/tools/{name}/approve"): ("proxy:write", None),
    ("POST", "/v1/proxy/policies"): ("proxy:write", {"type": "deny", "tools": ["drop_database"]}),
    ("GET", "/v1/proxy/policies"): ("proxy:read", None),
    ("DELETE", "/v1/proxy/policies/{policy_id}"): ("proxy:write", None),
    ("POST", "/v1/webhooks"): ("webhooks:write", {"url": WALKER_HOOK_URL, "events": ["budget.threshold"]}),
    ("GET", "/v1/webhooks"): ("webhooks:read", None),
    ("GET", "/v1/webhooks/deliveries"): ("webhooks:read", None),
    ("POST", "/v1/webhooks/deliveries/{delivery_id}/redeliver"): ("webhooks:write", None),
    ("GET", "/v1/webhooks/{webhook_id}"): ("webhooks:read", None),
    ("DELETE", "/v1/webhooks/{webhook_id}"): ("webhooks:write", None),
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): ("webhooks:write", None),
    ("POST", "/v1/webhooks/{webhook_id}/enable"): ("webhooks:write", None),
    ("POST", "/v1/webhooks/{webhook_id}/test"): ("webhooks:write", None),
    ("POST", "/v1/proxy/call"): (
        "proxy:write",
        {"session_id": "{execute_session_id}", "tool": "{tool}", "arguments": {"timezone": "UTC"}},
    ),
    ("POST", "/v1/tools/{tool}/begin"): (
        "proxy:write",
        {"session_id": "{execute_session_id}", "arguments": {"q": "walker"}, "cost_usd": "0"},
    ),
    ("POST", "/v1/tools/calls/{call_id}/finish"): ("proxy:write", {"status": "ok"}),
    ("POST", "/v1/approvals/rules"): ("approvals:write", {"type": "tool", "tool": "send_*"}),
    ("GET", "/v1/approvals/rules"): ("approvals:read", None),
    ("DELETE", "/v1/approvals/rules/{rule_id}"): ("approvals:write", None),
    ("POST", "/v1/approvals/request"): (
        "sessions:write",
        {"session_id": "{spend_session_id}", "tool": "wire_transfer", "amount": "5"},
    ),
    ("GET", "/v1/approvals/pending"): ("approvals:read", None),
    ("GET", "/v1/approvals/{approval_id}"): ("approvals:read", None),
    ("POST", "/v1/approvals/{approval_id}/approve"): ("approvals:write", None),
    ("POST", "/v1/approvals/{approval_id}/deny"): ("approvals:write", None),
    ("GET", "/v1/compliance/evidence"): ("admin:read", None),
    ("POST", "/v1/compliance/evidence/manifest"): ("audit:read", {"format": "not a pack"}),
    ("GET", "/v1/usage"): ("audit:read", None),
    ("GET", "/v1/metrics"): ("audit:read", None),
    ("GET", "/v1/status"): ("audit:read", None),
}

# Query strings a route needs to get past validation and reach its scope check.
QUERIES = {("GET", "/v1/audit/consistency-proof"): "?first=1&second=1"}

# A route that settles what another route needs intact takes its id from another sample resource:
# capture and void each get an authorization of their own.
ALIASES = {
    ("POST", "/v1/payments/{authorization_id}/void"): {"authorization_id": "voidable_authorization_id"},
    ("DELETE", "/v1/proxy/upstreams/{name}"): {"name": "deletable_upstream"},
    ("POST", "/v1/proxy/upstreams/{name}/refresh"): {"name": "upstream"},
    ("POST", "/v1/proxy/tools/{name}/approve"): {"name": "tool"},
    ("POST", "/v1/tools/{tool}/begin"): {"tool": "local_tool"},
    ("POST", "/v1/approvals/{approval_id}/deny"): {"approval_id": "deniable_approval_id"},
    ("DELETE", "/v1/approvals/rules/{rule_id}"): {"rule_id": "approval_rule_id"},
    ("DELETE", "/v1/webhooks/{webhook_id}"): {"webhook_id": "deletable_webhook_id"},
}

SAMPLE_SECRET = "walker-secret"
SAMPLE_UPSTREAM = "walker-time"
DELETABLE_UPSTREAM = "walker-gone"
LOCAL_TOOL = "walker_lookup"


async def seed(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, str]:
    """The ids the Vault and payment samples name, owned by the tenant of `headers`: a secret, a session
    that may spend, and two authorizations of it (one to capture, one to void)."""
    stored = await client.post(
        "/v1/secrets", json={"name": SAMPLE_SECRET, "value": "s3cret"}, headers=headers
    )
    assert stored.status_code == 201, stored.text
    session = await client.post(
        "/v1/sessions", json={"agent_id": "a", "scopes": ["spend"], "spend_limit": "10"}, headers=headers
    )
    assert session.status_code == 201, session.text
    spend_session_id = session.json()["session_id"]
    authorized = []
    for _ in range(2):
        response = await client.post(
            "/v1/payments/authorize", json={"session_id": spend_session_id, "amount": "1"}, headers=headers
        )
        assert response.status_code == 201, response.text
        authorized.append(response.json()["authorization_id"])
    time_command = str(time_server_params().command)  # fails the test when the server is missing
    for upstream in (SAMPLE_UPSTREAM, DELETABLE_UPSTREAM):
        registered = await client.post(
            "/v1/proxy/upstreams", json={"name": upstream, "command": time_command}, headers=headers
        )
        assert registered.status_code == 201, registered.text
    policy = await client.post("/v1/proxy/policies", json={"type": "deny", "tools": ["x"]}, headers=headers)
    assert policy.status_code == 201, policy.text
    approvals = []
    for tool in ("walker_approve", "walker_deny"):
        asked = await client.post(
            "/v1/approvals/request",
            json={"session_id": spend_session_id, "tool": tool, "amount": "2"},
            headers=headers,
        )
        assert asked.status_code == 201, asked.text
        approvals.append(asked.json()["approval_id"])
    approval_rule = await client.post(
        "/v1/approvals/rules", json={"type": "spend_over", "threshold": "1000"}, headers=headers
    )
    assert approval_rule.status_code == 201, approval_rule.text
    executor = await client.post(
        "/v1/sessions", json={"agent_id": "a", "scopes": ["execute"]}, headers=headers
    )
    local_call = await client.post(
        f"/v1/tools/{LOCAL_TOOL}/begin",
        json={"session_id": executor.json()["session_id"], "arguments": {}},
        headers=headers,
    )
    assert local_call.status_code == 201, local_call.text
    hooks = []
    for _ in range(2):
        hook = await client.post(
            "/v1/webhooks", json={"url": WALKER_HOOK_URL, "events": ["budget.threshold"]}, headers=headers
        )
        assert hook.status_code == 201, hook.text
        hooks.append(hook.json()["webhook_id"])
    tested = await client.post(f"/v1/webhooks/{hooks[0]}/test", headers=headers)
    assert tested.status_code == 202, tested.text
    return {
        "webhook_id": hooks[0],
        "deletable_webhook_id": hooks[1],
        "delivery_id": tested.json()["delivery_id"],
        "upstream": SAMPLE_UPSTREAM,
        "deletable_upstream": DELETABLE_UPSTREAM,
        "tool": f"{SAMPLE_UPSTREAM}__get_current_time",
        "policy_id": policy.json()["policy_id"],
        "execute_session_id": executor.json()["session_id"],
        "local_tool": LOCAL_TOOL,
        "call_id": local_call.json()["call_id"],
        "name": SAMPLE_SECRET,
        "spend_session_id": spend_session_id,
        "authorization_id": authorized[0],
        "voidable_authorization_id": authorized[1],
        "approval_id": approvals[0],
        "deniable_approval_id": approvals[1],
        "approval_rule_id": approval_rule.json()["rule_id"],
    }


def api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app documents in its OpenAPI description: the routes clients can call."""
    paths = app.openapi()["paths"]
    found = [(method.upper(), path) for path, operations in paths.items() for method in operations]
    assert found, "the app documents no routes"
    return found


def fill(method: str, path: str, ids: dict[str, str]) -> str:
    aliases = ALIASES.get((method, path), {})
    ids = {**ids, **{name: ids[alias] for name, alias in aliases.items() if alias in ids}}
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
