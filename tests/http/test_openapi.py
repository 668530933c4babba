"""The OpenAPI document is complete: every operation documents its success body, its request body and every
error status it can answer with the envelope, and real answers match what it documents."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from haldir.core.anomalies import RULE_TYPES
from haldir.core.policies import POLICY_TYPES
from haldir.errors import error_classes
from haldir.http.app import create_app
from haldir.http.discovery import CARD_PATH, LLMS_PATH, PLUGIN_PATH
from haldir.http.openapi import ERROR_SCHEMA, TAGS
from haldir.settings import Settings
from tests.conftest import Api
from tests.http.routes import TIME_COMMAND

pytestmark = pytest.mark.anyio

ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}


@pytest.fixture
def store_url(sqlite_url: str) -> str:
    """The document lives above the store: one backend is enough here."""
    return sqlite_url


def _spec() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def _walk(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def test_every_operation_documents_its_success_body_and_every_error_it_can_answer() -> None:
    spec = _spec()
    problems = []
    for method, path, operation in _walk(spec):
        where = f"{method.upper()} {path}"
        responses = operation["responses"]
        success = [status for status in responses if status.startswith("2")]
        if not success:
            problems.append(f"{where}: no success response")
        for status in success:
            content = responses[status].get("content", {})
            if not content or not all("schema" in media for media in content.values()):
                problems.append(f"{where}: {status} has no schema")
        errors = [status for status in responses if status[0] in "45"]
        if "500" not in errors:
            problems.append(f"{where}: no 500")
        for status in errors:
            schemas = [media.get("schema") for media in responses[status].get("content", {}).values()]
            if not schemas or None in schemas:
                problems.append(f"{where}: {status} has no schema")
        if operation.get("security") and not {"401", "403"} <= set(errors):
            problems.append(f"{where}: authenticated but documents no 401 and 403")
        if "requestBody" in operation:
            body = operation["requestBody"]["content"].get("application/json", {})
            if "schema" not in body:
                problems.append(f"{where}: a request body without a JSON schema")
            if not {"400", "413", "415"} <= set(errors):
                problems.append(f"{where}: a request body but no 400, 413 and 415")
        if (
            any(parameter["in"] == "path" for parameter in operation.get("parameters", []))
            and "404" not in errors
        ):
            problems.append(f"{where}: a path parameter but no 404")
        if method in ("post", "put", "patch") and "requestBody" not in operation:
            problems.append(f"{where}: no request body documented")
        if not set(operation.get("tags", ())) <= set(TAGS):
            problems.append(
                f"{where}: tag {operation.get('tags')} has no description in haldir.http.openapi.TAGS"
            )
    assert problems == []


def test_error_responses_are_the_envelope_as_json_and_name_their_codes() -> None:
    spec = _spec()
    envelope = spec["components"]["schemas"][ERROR_SCHEMA]
    assert set(envelope["required"]) == {"error", "code", "request_id"}
    assert envelope["additionalProperties"] is True
    by_status: dict[int, set[str]] = {}
    for code, cls in error_classes().items():
        if cls.http_status >= 400 and code != "haldir_error":
            by_status.setdefault(cls.http_status, set()).add(code)
    for method, path, operation in _walk(spec):
        for status, response in operation["responses"].items():
            if status[0] not in "45" or path.endswith("z") or path == "/health":
                continue  # the readiness probes answer 503 with their own body
            assert response["content"] == {"application/json": {"schema": ERROR_REF}}, (method, path, status)
            for code in by_status.get(int(status), ()):
                assert f"`{code}`" in response["description"], (method, path, status, code)


def test_the_approval_held_answers_document_their_202_body() -> None:
    spec = _spec()
    held = {
        f"{method.upper()} {path}"
        for method, path, operation in _walk(spec)
        if "202" in operation["responses"]
        and operation["responses"]["202"]["content"]["application/json"]["schema"]
        == {"$ref": "#/components/schemas/ApprovalRequiredBody"}
    }
    assert {"POST /v1/payments/authorize", "POST /v1/proxy/call"} <= held
    body = spec["components"]["schemas"]["ApprovalRequiredBody"]
    assert {"approval_id", "expires_at", "next", "code", "request_id"} <= set(body["required"])


class Documented:
    """Validates answers against the schema the document gives their operation and status."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.checked: list[str] = []

    def check(self, response: httpx.Response, method: str, path: str) -> None:
        operation = self.spec["paths"][path][method.lower()]
        status = str(response.status_code)
        assert status in operation["responses"], f"{method} {path} answered {status}, not documented"
        media = response.headers["content-type"].split(";")[0]
        schema = operation["responses"][status]["content"][media]["schema"]
        validator = Draft202012Validator({**schema, "components": self.spec["components"]})
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(_body(response))
        ]
        assert errors == [], f"{method} {path} {status}: {errors}"
        self.checked.append(f"{method} {path} {status}")


@pytest.mark.parametrize(
    ("path", "body_schema", "good", "bad"),
    [
        ("/v1/secrets/{name}", "SecretCreate", ["a", "A.b_c-9", "x" * 128], ["", "-a", "a/b", "x" * 129]),
        (
            "/v1/proxy/upstreams/{name}",
            "UpstreamCreate",
            ["a", "git-hub_2", "x" * 32],
            ["", "A", "-a", "x" * 33],
        ),
    ],
)
def test_names_document_the_shape_the_server_accepts(
    path: str, body_schema: str, good: list[str], bad: list[str]
) -> None:
    # Found by fuzzing from the document: any text was documented, so valid-looking requests got 400.
    spec = _spec()
    in_path = next(p for p in spec["paths"][path]["delete"]["parameters"] if p["name"] == "name")
    in_body = spec["components"]["schemas"][body_schema]["properties"]["name"]
    for schema in (in_path["schema"], in_body):
        assert all(re.search(schema["pattern"], name) for name in good), schema
        assert not any(re.search(schema["pattern"], name) for name in bad), schema


def test_rule_and_policy_types_and_local_tool_names_are_documented() -> None:
    # Found by fuzzing from the document: any `type` and any tool name were documented as acceptable.
    spec = _spec()
    schemas = spec["components"]["schemas"]
    assert schemas["haldir__http__routes__audit_rules__RuleCreate"]["properties"]["type"]["enum"] == sorted(
        RULE_TYPES
    )
    policy = spec["paths"]["/v1/proxy/policies"]["post"]["requestBody"]["content"]["application/json"]
    assert policy["schema"]["required"] == ["type"]
    assert policy["schema"]["properties"]["type"]["enum"] == sorted(POLICY_TYPES)
    tool = spec["paths"]["/v1/tools/{tool}/begin"]["post"]["parameters"][0]["schema"]["pattern"]
    assert re.search(tool, "lookup.v2")
    assert not re.search(tool, "a/b")


def _body(response: httpx.Response) -> Any:
    return response.text if response.headers["content-type"].startswith("text/") else response.json()


async def test_real_answers_match_their_documented_schemas(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    doc = Documented(spec)
    owner = api.auth(api.admin_key)
    c = api.client
    doc.check(await c.get("/livez"), "GET", "/livez")
    doc.check(await c.get("/readyz"), "GET", "/readyz")
    for path in (LLMS_PATH, PLUGIN_PATH, CARD_PATH):
        doc.check(await c.get(path), "GET", path)
    created = await c.post(
        "/v1/sessions", json={"agent_id": "a", "scopes": ["spend"], "spend_limit": "10"}, headers=owner
    )
    doc.check(created, "POST", "/v1/sessions")
    session_id = created.json()["session_id"]
    doc.check(await c.get(f"/v1/sessions/{session_id}", headers=owner), "GET", "/v1/sessions/{session_id}")
    doc.check(await c.get("/v1/sessions", headers=owner), "GET", "/v1/sessions")
    doc.check(await c.get("/v1/sessions/ses_missing", headers=owner), "GET", "/v1/sessions/{session_id}")
    doc.check(await c.get("/v1/sessions"), "GET", "/v1/sessions")
    doc.check(await c.post("/v1/sessions", json={"scopes": 5}, headers=owner), "POST", "/v1/sessions")
    narrow = api.auth(await api.key("audit:read"))
    doc.check(await c.post("/v1/sessions", json={"agent_id": "a"}, headers=narrow), "POST", "/v1/sessions")
    form = {**owner, "Content-Type": "text/plain"}
    doc.check(await c.post("/v1/sessions", content=b"x", headers=form), "POST", "/v1/sessions")
    doc.check(
        await c.post(
            f"/v1/sessions/{session_id}/check",
            json={"scope": "spend"},
            headers=owner,
        ),
        "POST",
        "/v1/sessions/{session_id}/check",
    )
    doc.check(
        await c.post("/v1/secrets", json={"name": "k", "value": "v"}, headers=owner), "POST", "/v1/secrets"
    )
    doc.check(await c.get("/v1/secrets/k", headers=owner), "GET", "/v1/secrets/{name}")
    logged = await c.post(
        "/v1/audit",
        json={"session_id": session_id, "tool": "t", "action": "a", "cost_usd": "1.5"},
        headers=owner,
    )
    doc.check(logged, "POST", "/v1/audit")
    doc.check(await c.get("/v1/audit", headers=owner), "GET", "/v1/audit")
    doc.check(await c.get("/v1/audit/spend", headers=owner), "GET", "/v1/audit/spend")
    doc.check(await c.get("/v1/audit/checkpoint", headers=owner), "GET", "/v1/audit/checkpoint")
    doc.check(
        await c.post("/v1/approvals/rules", json={"type": "spend_over", "threshold": "2"}, headers=owner),
        "POST",
        "/v1/approvals/rules",
    )
    held = await c.post(
        "/v1/payments/authorize", json={"session_id": session_id, "amount": "5"}, headers=owner
    )
    assert held.status_code == 202, held.text
    doc.check(held, "POST", "/v1/payments/authorize")
    over = await c.post(
        "/v1/payments/authorize", json={"session_id": session_id, "amount": "1.9"}, headers=owner
    )
    doc.check(over, "POST", "/v1/payments/authorize")
    doc.check(await c.get("/v1/status", headers=owner), "GET", "/v1/status")
    assert {
        "GET /v1/sessions 401",
        "POST /v1/sessions 403",
        "POST /v1/sessions 415",
        "POST /v1/payments/authorize 202",
    } <= set(doc.checked)


async def test_a_proxied_call_answers_the_documented_call_tool_result(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    doc = Documented(spec)
    owner = api.auth(api.admin_key)
    registered = await api.client.post(
        "/v1/proxy/upstreams", json={"name": "clock", "command": TIME_COMMAND}, headers=owner
    )
    doc.check(registered, "POST", "/v1/proxy/upstreams")
    doc.check(await api.client.get("/v1/proxy/tools", headers=owner), "GET", "/v1/proxy/tools")
    session = await api.client.post(
        "/v1/sessions", json={"agent_id": "a", "scopes": ["execute"]}, headers=owner
    )
    call = {"session_id": session.json()["session_id"], "tool": "get_current_time"}
    answered = await api.client.post(
        "/v1/proxy/call", json={**call, "arguments": {"timezone": "UTC"}}, headers=owner
    )
    assert answered.status_code == 200, answered.text
    doc.check(answered, "POST", "/v1/proxy/call")
    await api.client.post(
        "/v1/proxy/policies", json={"type": "deny", "tools": ["get_current_time"]}, headers=owner
    )
    refused = await api.client.post("/v1/proxy/call", json={**call, "arguments": {}}, headers=owner)
    assert refused.json()["code"] == "tool_denied", refused.text
    doc.check(refused, "POST", "/v1/proxy/call")
