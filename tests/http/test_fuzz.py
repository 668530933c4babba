"""Whatever arrives in a path, query or body, the answer is a 4xx or a success, never a 500."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Api

pytestmark = pytest.mark.anyio

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(
    ident=st.text(min_size=1, max_size=80).filter(lambda t: t not in (".", ".."))
)  # dot segments are paths
async def test_any_id_in_a_path_gets_a_client_error(api: Api, ident: str) -> None:
    path_id = quote(ident, safe="")
    headers = api.auth(api.admin_key)
    for method, path in (
        ("GET", f"/v1/sessions/{path_id}"),
        ("DELETE", f"/v1/sessions/{path_id}"),
        ("DELETE", f"/v1/keys/{path_id}"),
    ):
        response = await api.client.request(method, path, headers=headers)
        # An id of "/" turns the path into the collection's with a trailing slash: a redirect, not a row.
        assert 300 <= response.status_code < 500, (method, ident, response.text)
    check = await api.client.post(f"/v1/sessions/{path_id}/check", json={"scope": "read"}, headers=headers)
    assert check.status_code < 500


@FUZZ
@given(agent=st.text(max_size=50), cursor=st.text(max_size=50), active=st.text(max_size=6))
async def test_any_query_gets_a_client_error_or_a_page(
    api: Api, agent: str, cursor: str, active: str
) -> None:
    params = {"agent_id": agent, "cursor": cursor, "active": active}
    response = await api.client.get("/v1/sessions", params=params, headers=api.auth(api.admin_key))
    assert response.status_code in (200, 400), response.text


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "agent_id": json_values,
            "scopes": json_values,
            "ttl": json_values,
            "spend_limit": json_values,
        },
    )
)
async def test_any_session_body_gets_a_client_error_or_a_session(api: Api, body: dict[str, object]) -> None:
    raw = json.dumps(body).encode()  # NaN and Infinity tokens included, as a careless client sends them
    response = await api.client.post("/v1/sessions", content=raw, headers=api.auth(api.admin_key))
    assert response.status_code in (201, 400), response.text


async def test_an_encoded_slash_as_an_id_never_reaches_a_row(api: Api) -> None:
    response = await api.client.get("/v1/sessions/%2F", headers=api.auth(api.admin_key))
    assert response.status_code in (307, 404)
