"""HTTP conventions: the error envelope, request ids, security headers, body limits, auth headers."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from haldir.http.middleware import MAX_BODY_BYTES, SECURITY_HEADERS
from tests.conftest import Api

pytestmark = pytest.mark.anyio


@pytest.fixture
def store_url(sqlite_url: str) -> str:
    """Conventions live above the store: one backend is enough here."""
    return sqlite_url


ENVELOPE = {"error", "code", "request_id"}


def _assert_envelope(response: object, status: int, code: str) -> dict[str, object]:
    import httpx

    assert isinstance(response, httpx.Response)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= ENVELOPE
    assert body["code"] == code
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert isinstance(body["error"], str)
    assert body["error"]
    return dict(body)


async def test_error_shape_is_pinned(api: Api) -> None:
    response = await api.client.get("/v1/sessions/ses_missing", headers=api.auth(api.admin_key))
    body = _assert_envelope(response, 404, "not_found")
    assert set(body) == ENVELOPE


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "malformed_json"),
        (b'{"agent_id": 5}', "invalid_request"),
        (b'{"scopes": ["read"]}', "invalid_request"),
        (b'{"agent_id": "a", "ttl": "soon"}', "invalid_request"),
        (b'{"agent_id": "a", "ttl": true}', "invalid_request"),
        (b'{"agent_id": "a", "unexpected": 1}', "invalid_request"),
        (b"[]", "invalid_request"),
        (b"", "invalid_request"),
        (b'{"agent_id": "a", "scopes": "read"}', "invalid_request"),
    ],
)
async def test_bad_input_gets_a_400_envelope_never_a_500(api: Api, raw: bytes, code: str) -> None:
    headers = {**api.auth(api.admin_key), "Content-Type": "application/json"}
    response = await api.client.post("/v1/sessions", content=raw, headers=headers)
    _assert_envelope(response, 400, code)


async def test_a_body_that_is_not_utf8_is_malformed_json(api: Api) -> None:
    # Found by the schema fuzzer: FastAPI's own "error parsing the body" answered `http_error`.
    headers = {**api.auth(api.admin_key), "Content-Type": "application/json"}
    response = await api.client.post("/v1/sessions", content=b'{"agent_id": "\xca"}', headers=headers)
    _assert_envelope(response, 400, "malformed_json")


@pytest.mark.parametrize("raw", [b"{not json", b"\xca", b'{"agent_id": 5}'])
async def test_a_bad_body_without_a_key_gets_401_not_400(api: Api, raw: bytes) -> None:
    # Found by the schema fuzzer: the body was read and refused before the key was asked for.
    response = await api.client.post(
        "/v1/sessions", content=raw, headers={"Content-Type": "application/json"}
    )
    _assert_envelope(response, 401, "unauthenticated")
    wrong = await api.client.post(
        "/v1/sessions", content=raw, headers={**api.auth("hld_nope"), "Content-Type": "application/json"}
    )
    _assert_envelope(wrong, 401, "invalid_api_key")


async def test_bodies_over_one_mebibyte_get_413(api: Api) -> None:
    big = b'{"agent_id": "' + b"a" * MAX_BODY_BYTES + b'"}'
    headers = {**api.auth(api.admin_key), "Content-Type": "application/json"}
    response = await api.client.post("/v1/sessions", content=big, headers=headers)
    _assert_envelope(response, 413, "payload_too_large")


async def test_streamed_bodies_over_the_limit_get_413_without_a_content_length(api: Api) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"agent_id": "'
        for _ in range(20):
            yield b"a" * 65536
        yield b'"}'

    headers = {**api.auth(api.admin_key), "Content-Type": "application/json"}
    response = await api.client.post("/v1/sessions", content=chunks(), headers=headers)
    _assert_envelope(response, 413, "payload_too_large")


async def test_non_json_bodies_get_415(api: Api) -> None:
    headers = {**api.auth(api.admin_key), "Content-Type": "application/x-www-form-urlencoded"}
    response = await api.client.post("/v1/sessions", content=b"agent_id=a", headers=headers)
    _assert_envelope(response, 415, "unsupported_media_type")


async def test_a_body_without_content_type_is_read_as_json(api: Api) -> None:
    response = await api.client.post(
        "/v1/sessions", content=b'{"agent_id": "a"}', headers=api.auth(api.admin_key)
    )
    assert response.status_code == 201, response.text


async def test_unknown_routes_and_methods_use_the_envelope(api: Api) -> None:
    _assert_envelope(await api.client.get("/v1/nothing-here"), 404, "not_found")
    _assert_envelope(
        await api.client.put("/v1/sessions", headers=api.auth(api.admin_key)), 405, "method_not_allowed"
    )


async def test_a_405_names_every_method_of_its_path_in_allow(api: Api) -> None:
    # Found by the schema fuzz: the 405 carried no Allow (the envelope dropped it), then only the methods
    # of the first route of the path (GET and POST /v1/keys are two routes).
    response = await api.client.put("/v1/keys", headers=api.auth(api.admin_key))
    _assert_envelope(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "GET, POST"


async def test_every_response_carries_a_request_id_and_security_headers(api: Api) -> None:
    for response in (
        await api.client.get("/livez"),
        await api.client.get("/v1/sessions"),
        await api.client.get("/v1/sessions", headers=api.auth(api.admin_key)),
    ):
        assert response.headers["X-Request-ID"]
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value


async def test_a_safe_client_request_id_is_kept_and_an_unsafe_one_replaced(api: Api) -> None:
    kept = await api.client.get("/livez", headers={"X-Request-ID": "trace-42.a_b"})
    assert kept.headers["X-Request-ID"] == "trace-42.a_b"
    replaced = await api.client.get("/livez", headers={"X-Request-ID": "bad id\u00e9<script>".encode()})
    assert replaced.headers["X-Request-ID"].startswith("req_")


async def test_missing_key_is_401_with_a_bearer_challenge(api: Api) -> None:
    response = await api.client.get("/v1/sessions")
    _assert_envelope(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "presented",
    ["nope", "hld_" + "x" * 48, "hld_short", "Bearer", "hld_" + "é" * 48, "hld_" + "é" * 24],
)
async def test_unknown_or_malformed_keys_are_401(api: Api, presented: str) -> None:
    response = await api.client.get("/v1/sessions", headers={"X-API-Key": presented.encode()})
    _assert_envelope(response, 401, "invalid_api_key")


async def test_a_key_with_the_right_prefix_but_wrong_secret_is_401(api: Api) -> None:
    forged = api.admin_key[:12] + "0" * (len(api.admin_key) - 12)
    response = await api.client.get("/v1/sessions", headers=api.auth(forged))
    _assert_envelope(response, 401, "invalid_api_key")


async def test_both_auth_headers_work(api: Api) -> None:
    bearer = await api.client.get("/v1/sessions", headers={"Authorization": f"Bearer {api.admin_key}"})
    header = await api.client.get("/v1/sessions", headers={"X-API-Key": api.admin_key})
    assert bearer.status_code == header.status_code == 200
    # The scheme name is case-insensitive; another scheme in Authorization leaves X-API-Key in charge.
    lower = await api.client.get("/v1/sessions", headers={"Authorization": f"bearer {api.admin_key}"})
    basic = await api.client.get(
        "/v1/sessions", headers={"Authorization": "Basic dXNlcjpwYXNz", "X-API-Key": api.admin_key}
    )
    assert lower.status_code == basic.status_code == 200
    empty = await api.client.get(
        "/v1/sessions", headers={"Authorization": "Bearer ", "X-API-Key": api.admin_key}
    )
    assert empty.status_code == 200


async def test_health_probes_answer_without_a_key(api: Api) -> None:
    assert (await api.client.get("/livez")).json() == {"status": "ok"}
    for path in ("/readyz", "/healthz"):
        body = (await api.client.get(path)).json()
        assert body["status"] == "ok"
        assert body["schema_revision"] == body["schema_head"]


async def test_readiness_fails_when_the_schema_falls_behind(api: Api) -> None:
    store = api.app.state.store
    async with store.engines.write.begin() as conn:
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = 'older'"))
    for path in ("/readyz", "/healthz"):
        response = await api.client.get(path)
        assert response.status_code == 503
        assert "haldir migrate up" in response.json()["error"]
    assert (await api.client.get("/livez")).status_code == 200


async def test_openapi_31_documents_request_and_response_schemas_for_every_route(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            success = [code for code in operation["responses"] if code.startswith("2")]
            assert success, (method, path)
            content = operation["responses"][success[0]]["content"]
            media = "text/plain" if path in ("/v1/audit/checkpoint", "/llms.txt") else "application/json"
            assert "schema" in content[media], (method, path)
            if method in ("post", "put", "patch"):
                assert "requestBody" in operation, (method, path)
            if not path.startswith("/v1/"):
                continue
            assert "400" in operation["responses"] or "401" in operation["responses"], (method, path)


async def test_openapi_declares_both_ways_to_present_a_key_on_every_authenticated_route(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert {
        name: {k: v for k, v in scheme.items() if k != "description"} for name, scheme in schemes.items()
    } == {
        "HTTPBearer": {"type": "http", "scheme": "bearer"},
        "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/v1/"):
                assert operation["security"] == [{"HTTPBearer": []}, {"APIKeyHeader": []}], (method, path)
            else:  # health probes answer without a key
                assert "security" not in operation, (method, path)
