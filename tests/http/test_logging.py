"""Logs: one structured line per request with its request id and tenant, and never a key."""

from __future__ import annotations

import io
import json

import pytest

from tests.conftest import Api

pytestmark = pytest.mark.anyio


@pytest.fixture
def store_url(sqlite_url: str) -> str:
    return sqlite_url


async def test_each_request_logs_one_json_line_with_context_and_no_secrets(
    api: Api, json_logs: io.StringIO
) -> None:
    response = await api.client.post(
        "/v1/sessions",
        json={"agent_id": "a", "scopes": ["read"]},
        headers={**api.auth(api.admin_key), "X-Request-ID": "trace-1"},
    )
    assert response.status_code == 201
    await api.client.get("/v1/sessions", headers={"X-API-Key": api.admin_key})
    await api.client.get("/v1/sessions", headers={"X-API-Key": api.admin_key[:-1] + "X"})

    text = json_logs.getvalue()
    assert api.admin_key not in text
    assert api.admin_key[:-1] not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert len(requests) == 3
    first = requests[0]
    assert first["request_id"] == "trace-1"
    assert first["tenant_id"] == "acme"
    assert first["key"] == api.admin_key[:12]
    assert first["status"] == 201
    assert first["path"] == "/v1/sessions"
    assert first["method"] == "POST"
