"""What the sync and async clients share: settings, how each method becomes a request, how answers come back.

Each method of the API is a function returning a `Call`; the two clients only send it. Bodies are encoded
here, so a `Decimal` anywhere in one travels as its exact decimal string; money in an answer comes back as
`Decimal` (`haldir.client.money`). An error response
`{"error", "code", "request_id"}` becomes the `HaldirError` subclass of its code, and a failed connection
becomes `ServerUnavailable`: callers never see a raw httpx error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx

from haldir.client import money
from haldir.core.evidence import parse_document
from haldir.errors import ApprovalRequired, HaldirError, ServerUnavailable, error_classes
from haldir.settings import ClientSettings

T = TypeVar("T")
Json = dict[str, Any]
Amount = Decimal | int | float | str
Time = datetime | str
Order = Literal["asc", "desc"]

DEFAULT_TIMEOUT = 30.0
MAX_PAGE = 200


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its successful response. `body` is any JSON value, `Decimal`s
    included; None sends no body."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, str] | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def content(self) -> bytes | None:
        return None if self.body is None else encode(self.body)

    @property
    def request_headers(self) -> dict[str, str]:
        if self.body is None:
            return self.headers
        return {"Content-Type": "application/json", **self.headers}

    def result(self, response: httpx.Response) -> T:
        if not response.is_success or _held(response):
            raise error_from(response)
        return self.parse(response)


def _held(response: httpx.Response) -> bool:
    """A 202 that is an error body (`approval_required`: held for a person, nothing ran), not a resource
    accepted for later (a queued webhook delivery)."""
    if response.status_code != 202:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("code") == ApprovalRequired.code and "error" in body


def resolve(api_key: str | None, base_url: str | None, url: str | None) -> tuple[str, str | None]:
    """The server URL and API key: the arguments, or else `HALDIR_URL` and `HALDIR_API_KEY`.

    `url` is the older name of `base_url`; giving both, different, is a mistake worth refusing.
    """
    if base_url is not None and url is not None and base_url != url:
        raise TypeError(f"give the server URL once, as base_url (got base_url={base_url!r} and url={url!r})")
    base_url = url if base_url is None else base_url
    if api_key is not None and "://" in api_key:
        raise TypeError(
            f"api_key looks like a URL ({api_key!r}): the first positional argument is the API key; "
            "pass the server as base_url=..."
        )
    if base_url is None or api_key is None:
        settings = ClientSettings()
        base_url = settings.url if base_url is None else base_url
        api_key = settings.api_key if api_key is None else api_key
    return base_url.rstrip("/"), api_key or None


def headers(api_key: str | None) -> dict[str, str]:
    found = {"Accept": "application/json"}
    if api_key:
        found["Authorization"] = f"Bearer {api_key}"
    return found


@contextmanager
def mapped_errors(url: str) -> Iterator[None]:
    """Turn httpx's exceptions raised while sending into Haldir's."""
    try:
        yield
    except httpx.TransportError as exc:
        raise ServerUnavailable(
            f"cannot reach the Haldir server at {url}: {exc or type(exc).__name__}; "
            "check that it is running and that HALDIR_URL points at it"
        ) from None
    except httpx.HTTPError as exc:
        raise HaldirError(f"request to {url} failed: {exc or type(exc).__name__}") from None


def error_from(response: httpx.Response) -> HaldirError:
    """The `HaldirError` an error response stands for: its code's class, or the base class for codes
    this client does not know (with the HTTP status in `details["status"]`)."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if not (
        isinstance(body, dict) and isinstance(body.get("code"), str) and isinstance(body.get("error"), str)
    ):
        excerpt = response.text[:200]
        if status in (502, 503, 504):
            return ServerUnavailable(f"the server at {response.url.host} answered {status}: {excerpt}")
        return HaldirError(f"the server answered {status} without an error body: {excerpt}", status=status)
    code, message = body["code"], body["error"]
    extra = {key: value for key, value in body.items() if key not in ("error", "code", "message")}
    cls = error_classes().get(code)
    if cls is None:
        return HaldirError(message, status=status, code=code, **extra)
    return cls(message, **extra)


def json_object(response: httpx.Response) -> Json:
    """The answer's JSON object, money as `Decimal`."""
    found = _json(response)
    if not isinstance(found, dict):
        raise HaldirError(f"expected a JSON object from {response.url.path}, got {response.text[:200]!r}")
    result: Json = money.with_money(found)
    return result


def any_json(response: httpx.Response) -> Any:
    """The answer's JSON value, money as `Decimal`; None for an empty body."""
    if not response.content:
        return None
    found = _json(response)
    if found is None and response.content.strip() != b"null":
        raise HaldirError(f"expected JSON from {response.url.path}, got {response.text[:200]!r}")
    return money.with_money(found)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def text(response: httpx.Response) -> str:
    return response.text


def encode(body: Any) -> bytes:
    """A request body as JSON, each `Decimal` in it as its exact decimal string (a JSON string)."""
    return json.dumps(
        body, default=_encode_default, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode()


def _encode_default(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"a request body holds JSON values and Decimal, not {type(value).__name__}: {value!r}")


def _query(values: Mapping[str, object]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            params[name] = "true" if value else "false"
        elif isinstance(value, datetime):
            params[name] = value.isoformat()
        elif isinstance(value, Decimal | float):
            params[name] = _amount(value)
        else:
            params[name] = str(value)
    return params


def _amount(value: Amount) -> str:
    """Amounts travel as exact decimal strings, never as floats: a float as the decimal its repr writes."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        value = Decimal(repr(value))
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def _segment(value: str) -> str:
    return quote(value, safe="")


def _idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}


def request(method: str, path: str, *, json: Any, params: Mapping[str, object] | None) -> Call[Any]:
    """Any request to the server, for the routes the clients have no method for."""
    if httpx.URL(path).is_absolute_url:
        raise ValueError(
            f"request() takes a path on the Haldir server, such as '/v1/audit', not a URL: {path!r} "
            "(the API key is sent with it)"
        )
    return Call(method.upper(), path, any_json, params=_query(params or {}), body=json)


# sessions


def create_session(
    *,
    agent_id: str,
    scopes: Sequence[str],
    ttl: int | None,
    spend_limit: Amount | None,
    idempotency_key: str | None,
) -> Call[Json]:
    if isinstance(scopes, str):  # a str is a Sequence[str] too, of one-letter scopes
        raise TypeError(f"scopes is a list of scopes, such as [{scopes!r}], not a string")
    body: Json = {"agent_id": agent_id, "scopes": list(scopes)}
    if ttl is not None:
        body["ttl"] = ttl
    if spend_limit is not None:
        body["spend_limit"] = _amount(spend_limit)
    return Call("POST", "/v1/sessions", json_object, body=body, headers=_idempotency(idempotency_key))


def get_session(session_id: str) -> Call[Json]:
    return Call("GET", f"/v1/sessions/{_segment(session_id)}", json_object)


def list_sessions(*, agent_id: str | None, active: bool | None, limit: int, cursor: str | None) -> Call[Json]:
    params = _query({"agent_id": agent_id, "active": active, "limit": limit, "cursor": cursor})
    return Call("GET", "/v1/sessions", json_object, params=params)


def revoke_session(session_id: str) -> Call[Json]:
    return Call("DELETE", f"/v1/sessions/{_segment(session_id)}", json_object)


def check_permission(session_id: str, scope: str) -> Call[Json]:
    return Call("POST", f"/v1/sessions/{_segment(session_id)}/check", json_object, body={"scope": scope})


# secrets


def store_secret(*, name: str, value: str, scope_required: str, idempotency_key: str | None) -> Call[Json]:
    body: Json = {"name": name, "value": value, "scope_required": scope_required}
    return Call("POST", "/v1/secrets", json_object, body=body, headers=_idempotency(idempotency_key))


def get_secret(name: str, *, session_id: str, version: int | None) -> Call[Json]:
    path = f"/v1/secrets/{_segment(name)}"
    params = _query({"version": version})
    return Call("GET", path, json_object, params=params, headers={"X-Session-ID": session_id})


def secret_info(name: str) -> Call[Json]:
    return Call("GET", f"/v1/secrets/{_segment(name)}", json_object)


def list_secrets(*, limit: int, cursor: str | None) -> Call[Json]:
    return Call("GET", "/v1/secrets", json_object, params=_query({"limit": limit, "cursor": cursor}))


def delete_secret(name: str) -> Call[Json]:
    return Call("DELETE", f"/v1/secrets/{_segment(name)}", json_object)


# payments


def authorize_payment(
    *,
    session_id: str,
    amount: Amount,
    currency: str,
    description: str,
    idempotency_key: str | None,
) -> Call[Json]:
    body: Json = {
        "session_id": session_id,
        "amount": _amount(amount),
        "currency": currency,
        "description": description,
    }
    headers = _idempotency(idempotency_key)
    return Call("POST", "/v1/payments/authorize", json_object, body=body, headers=headers)


def capture_payment(payment_id: str, *, amount: Amount | None) -> Call[Json]:
    body: Json = {} if amount is None else {"amount": _amount(amount)}
    return Call("POST", f"/v1/payments/{_segment(payment_id)}/capture", json_object, body=body)


def void_payment(payment_id: str) -> Call[Json]:
    return Call("POST", f"/v1/payments/{_segment(payment_id)}/void", json_object)


def get_payment(payment_id: str) -> Call[Json]:
    return Call("GET", f"/v1/payments/{_segment(payment_id)}", json_object)


def list_payments(*, session_id: str | None, limit: int, cursor: str | None) -> Call[Json]:
    params = _query({"session_id": session_id, "limit": limit, "cursor": cursor})
    return Call("GET", "/v1/payments", json_object, params=params)


# audit


def log_action(
    *,
    session_id: str,
    tool: str,
    action: str,
    cost_usd: Amount,
    details: Json | None,
    status: str,
    authorization_id: str | None,
) -> Call[Json]:
    body: Json = {
        "session_id": session_id,
        "tool": tool,
        "action": action,
        "cost_usd": _amount(cost_usd),
        "details": details or {},
        "status": status,
    }
    if authorization_id is not None:
        body["authorization_id"] = authorization_id
    return Call("POST", "/v1/audit", json_object, body=body)


def get_entry(entry_id: str) -> Call[Json]:
    return Call("GET", f"/v1/audit/entries/{_segment(entry_id)}", json_object)


def list_entries(
    *,
    session_id: str | None,
    agent_id: str | None,
    tool: str | None,
    status: str | None,
    flagged: bool | None,
    since: Time | None,
    until: Time | None,
    limit: int,
    cursor: str | None,
    order: Order,
) -> Call[Json]:
    params = _query(
        {
            "session_id": session_id,
            "agent_id": agent_id,
            "tool": tool,
            "status": status,
            "flagged": flagged,
            "since": since,
            "until": until,
            "limit": limit,
            "cursor": cursor,
            "order": order,
        }
    )
    return Call("GET", "/v1/audit", json_object, params=params)


def current_key() -> Call[Json]:
    return Call("GET", "/v1/keys/current", json_object)


def usage(*, since: date | None, until: date | None) -> Call[Json]:
    return Call("GET", "/v1/usage", json_object, params=_query({"since": since, "until": until}))


def metrics() -> Call[Json]:
    return Call("GET", "/v1/metrics", json_object)


def status() -> Call[Json]:
    return Call("GET", "/v1/status", json_object)


def checkpoint() -> Call[str]:
    return Call("GET", "/v1/audit/checkpoint", text, headers={"Accept": "text/plain"})


def tree_head() -> Call[Json]:
    return Call("GET", "/v1/audit/tree-head", json_object)


def log_key() -> Call[Json]:
    return Call("GET", "/v1/audit/log-key", json_object)


def inclusion_proof(entry_id: str, *, tree_size: int | None) -> Call[Json]:
    path = f"/v1/audit/inclusion-proof/{_segment(entry_id)}"
    return Call("GET", path, json_object, params=_query({"tree_size": tree_size}))


def consistency_proof(*, first: int, second: int) -> Call[Json]:
    params = _query({"first": first, "second": second})
    return Call("GET", "/v1/audit/consistency-proof", json_object, params=params)


def verify_log() -> Call[Json]:
    return Call("GET", "/v1/audit/verify", json_object)


def spend(
    *, session_id: str | None, agent_id: str | None, since: Time | None, until: Time | None
) -> Call[Json]:
    params = _query({"session_id": session_id, "agent_id": agent_id, "since": since, "until": until})
    return Call("GET", "/v1/audit/spend", json_object, params=params)


# compliance


def compliance_evidence(*, since: Time | date | None, until: Time | date | None, format: str) -> Call[str]:
    """The signed evidence pack, exactly as the server wrote it (its bytes are what is signed)."""
    if format not in ("json", "md"):
        raise ValueError(f"format is 'json' or 'md', got {format!r}")
    params = _query({"since": since, "until": until, "format": format})
    accept = "text/markdown" if format == "md" else "application/json"
    return Call("GET", "/v1/compliance/evidence", text, params=params, headers={"Accept": accept})


def check_evidence_manifest(pack: Json | str | bytes) -> Call[Json]:
    """Ask the server about a pack: its JSON object, or a document in either form (a Markdown one is
    checked here against the pack it carries first)."""
    body = pack if isinstance(pack, dict) else parse_document(pack)[0]
    return Call("POST", "/v1/compliance/evidence/manifest", json_object, body=body)


# webhooks


def create_webhook(*, url: str, events: Sequence[str], description: str) -> Call[Json]:
    body = {"url": url, "events": list(events), "description": description}
    return Call("POST", "/v1/webhooks", json_object, body=body)


def list_webhooks() -> Call[Json]:
    return Call("GET", "/v1/webhooks", json_object)


def get_webhook(webhook_id: str) -> Call[Json]:
    return Call("GET", f"/v1/webhooks/{_segment(webhook_id)}", json_object)


def delete_webhook(webhook_id: str) -> Call[Json]:
    return Call("DELETE", f"/v1/webhooks/{_segment(webhook_id)}", json_object)


def rotate_secret(webhook_id: str) -> Call[Json]:
    return Call("POST", f"/v1/webhooks/{_segment(webhook_id)}/rotate-secret", json_object)


def enable_webhook(webhook_id: str) -> Call[Json]:
    return Call("POST", f"/v1/webhooks/{_segment(webhook_id)}/enable", json_object)


def test_webhook(webhook_id: str) -> Call[Json]:
    return Call("POST", f"/v1/webhooks/{_segment(webhook_id)}/test", json_object)


def list_deliveries(
    *, webhook_id: str | None, status: str | None, limit: int, cursor: str | None
) -> Call[Json]:
    params = _query({"webhook_id": webhook_id, "status": status, "limit": limit, "cursor": cursor})
    return Call("GET", "/v1/webhooks/deliveries", json_object, params=params)


def redeliver(delivery_id: str) -> Call[Json]:
    return Call("POST", f"/v1/webhooks/deliveries/{_segment(delivery_id)}/redeliver", json_object)


# proxy


def register_upstream(
    *,
    name: str,
    url: str | None,
    headers: Mapping[str, str] | None,
    command: str | None,
    args: list[str] | None,
    env: Mapping[str, str] | None,
) -> Call[Json]:
    body = {"name": name, "url": url, "headers": headers, "command": command, "args": args, "env": env}
    body = {key: value for key, value in body.items() if value is not None}
    return Call("POST", "/v1/proxy/upstreams", json_object, body=body)


def list_upstreams() -> Call[Json]:
    return Call("GET", "/v1/proxy/upstreams", json_object)


def delete_upstream(name: str) -> Call[Json]:
    return Call("DELETE", f"/v1/proxy/upstreams/{_segment(name)}", json_object)


def refresh_upstream(name: str) -> Call[Json]:
    return Call("POST", f"/v1/proxy/upstreams/{_segment(name)}/refresh", json_object)


def list_proxy_tools() -> Call[Json]:
    return Call("GET", "/v1/proxy/tools", json_object)


def approve_tool(name: str) -> Call[Json]:
    return Call("POST", f"/v1/proxy/tools/{_segment(name)}/approve", json_object)


def create_policy(spec: Json) -> Call[Json]:
    return Call("POST", "/v1/proxy/policies", json_object, body=spec)


def list_policies() -> Call[Json]:
    return Call("GET", "/v1/proxy/policies", json_object)


def delete_policy(policy_id: str) -> Call[Json]:
    return Call("DELETE", f"/v1/proxy/policies/{_segment(policy_id)}", json_object)


def call_tool(*, session_id: str, tool: str, arguments: Json | None) -> Call[Json]:
    body = {"session_id": session_id, "tool": tool, "arguments": arguments or {}}
    return Call("POST", "/v1/proxy/call", json_object, body=body)


def begin_tool_call(
    session_id: str, tool: str, arguments: Json | None, *, cost_usd: Amount | None
) -> Call[Json]:
    body: Json = {"session_id": session_id, "arguments": arguments or {}}
    if cost_usd is not None:
        body["cost_usd"] = _amount(cost_usd)
    return Call("POST", f"/v1/tools/{_segment(tool)}/begin", json_object, body=body)


def finish_tool_call(call_id: str, *, status: str, error: str | None, latency_ms: float | None) -> Call[Json]:
    body: Json = {"status": status}
    if error is not None:
        body["error"] = error
    if latency_ms is not None:
        body["latency_ms"] = latency_ms
    return Call("POST", f"/v1/tools/calls/{_segment(call_id)}/finish", json_object, body=body)


def create_approval_rule(spec: Json) -> Call[Json]:
    return Call("POST", "/v1/approvals/rules", json_object, body=spec)


def list_approval_rules() -> Call[Json]:
    return Call("GET", "/v1/approvals/rules", json_object)


def delete_approval_rule(rule_id: str) -> Call[Json]:
    return Call("DELETE", f"/v1/approvals/rules/{_segment(rule_id)}", json_object)


def request_approval(
    *, session_id: str, tool: str, amount: Amount, reason: str, arguments_sha256: str | None
) -> Call[Json]:
    body: dict[str, Any] = {
        "session_id": session_id,
        "tool": tool,
        "amount": _amount(amount),
        "reason": reason,
    }
    if arguments_sha256 is not None:
        body["arguments_sha256"] = arguments_sha256
    return Call("POST", "/v1/approvals/request", json_object, body=body)


def get_approval(approval_id: str) -> Call[Json]:
    return Call("GET", f"/v1/approvals/{_segment(approval_id)}", json_object)


def list_pending_approvals(*, limit: int, cursor: str | None) -> Call[Json]:
    return Call(
        "GET", "/v1/approvals/pending", json_object, params=_query({"limit": limit, "cursor": cursor})
    )


def decide_approval(approval_id: str, *, verb: str, note: str | None) -> Call[Json]:
    body = None if note is None else {"note": note}
    return Call("POST", f"/v1/approvals/{_segment(approval_id)}/{verb}", json_object, body=body)
