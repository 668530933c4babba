"""A secret's value leaves the Vault only in a release: never in the database, logs, errors or ledger."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import sqlalchemy as sa

from haldir.store.schema import metadata
from haldir.store.sql import SqlStore
from tests.conftest import Api

pytestmark = pytest.mark.anyio

VALUE = "sk_live_Z9qV1aT7mPz4LxR8wNc2"  # distinctive enough that any copy of it is found


async def _exercise(api: Api) -> list[str]:
    """Every Vault path a value travels, with the bodies of all answers except the one release."""
    owner = api.auth(api.admin_key)
    seen: list[str] = []
    for body in (
        {"name": "stripe_key", "value": VALUE, "scope_required": "stripe"},
        {"name": "stripe_key", "value": VALUE + "-v2", "scope_required": "stripe"},
        {"name": "bad name", "value": VALUE},  # refused: the error must not echo the value
        {"name": "x", "value": VALUE, "scope_required": "nonsense"},
        {"name": "x", "value": VALUE, "extra": VALUE},
        {"name": 7, "value": VALUE},
    ):
        response = await api.client.post("/v1/secrets", json=body, headers=owner)
        seen.append(response.text)
    allowed = await api.client.post(
        "/v1/sessions", json={"agent_id": "a", "scopes": ["stripe"]}, headers=owner
    )
    denied = await api.client.post("/v1/sessions", json={"agent_id": "b", "scopes": ["read"]}, headers=owner)
    released = await api.client.get(
        "/v1/secrets/stripe_key",
        params={"version": 1},
        headers={**owner, "X-Session-ID": allowed.json()["session_id"]},
    )
    assert released.json()["value"] == VALUE  # the one place the value may appear
    for headers in ({"X-Session-ID": denied.json()["session_id"]}, {}):
        seen.append((await api.client.get("/v1/secrets/stripe_key", headers={**owner, **headers})).text)
    seen.append((await api.client.get("/v1/secrets", headers=owner)).text)
    seen.append((await api.client.get("/v1/audit", params={"limit": 200}, headers=owner)).text)
    seen.append((await api.client.get("/v1/audit/verify", headers=owner)).text)
    return seen


async def _stored_text(store: SqlStore, data_dir: Path) -> bytes:
    """Every byte the store holds: the SQLite database and WAL files (free pages included), or every row
    of every table on PostgreSQL."""
    if store.backend == "sqlite":
        return b"".join(path.read_bytes() for path in sorted(data_dir.glob("haldir.db*")))  # noqa: ASYNC240
    chunks = []
    async with store.read_connection() as conn:
        for table in metadata.sorted_tables:
            rows = await conn.execute(sa.text(f'SELECT t::text FROM "{table.name}" t'))  # noqa: S608 - names from our own schema
            chunks.extend(row[0].encode() for row in rows)
    return b"\n".join(chunks)


async def test_a_secret_value_is_never_in_the_database_the_logs_the_errors_or_the_ledger(
    api: Api, json_logs: io.StringIO, tmp_path: Path
) -> None:
    answers = await _exercise(api)
    assert all(VALUE not in answer for answer in answers)
    logs = json_logs.getvalue()
    assert "secrets" in logs  # the requests were logged, just not the value
    assert VALUE not in logs
    store: SqlStore = api.app.state.store
    held = await _stored_text(store, tmp_path)
    assert len(held) > 2_000  # the store was really read
    assert VALUE.encode() not in held
    assert VALUE.encode("utf-16-le") not in held
