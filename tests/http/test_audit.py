"""Watch over HTTP: entries, the verifiability contract, proofs, checkpoints, verification, spend."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
import rfc8785
import sqlalchemy as sa

from haldir.core import merkle
from haldir.core.checkpoints import Verifier, parse_checkpoint
from tests.conftest import Api

pytestmark = pytest.mark.anyio


async def _session(api: Api, **body: Any) -> str:
    response = await api.client.post(
        "/v1/sessions",
        json={"agent_id": "agent-7", "scopes": ["execute"], "spend_limit": "100000", **body},
        headers=api.auth(api.admin_key),
    )
    return str(response.json()["session_id"])


async def _log(api: Api, session_id: str, **body: Any) -> dict[str, Any]:
    payload = {"session_id": session_id, "tool": "stripe", "action": "charge", "cost_usd": "29.99", **body}
    response = await api.client.post("/v1/audit", json=payload, headers=api.auth(api.admin_key))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _get(api: Api, path: str, **params: Any) -> Any:
    response = await api.client.get(path, params=params, headers=api.auth(api.admin_key))
    assert response.status_code == 200, response.text
    return response.json()


async def test_an_appended_entry_follows_the_verifiability_contract(api: Api) -> None:
    session_id = await _session(api)
    first = await _log(api, session_id, details={"charge": "ch_1", "temperature": 0.7})
    second = await _log(api, session_id, cost_usd=0.000001)
    assert first["entry_id"].startswith("aud_")
    assert (first["leaf_index"], second["leaf_index"]) == (0, 1)
    assert first["flagged"] is False

    entry = await _get(api, f"/v1/audit/entries/{first['entry_id']}")
    record = entry["record"]
    assert record == {
        "entry_id": first["entry_id"],
        "tenant_id": "acme",
        "session_id": session_id,
        "agent_id": "agent-7",
        "tool": "stripe",
        "action": "charge",
        "status": "ok",
        "cost_usd": "29.99",
        "charged_usd": "29.99",
        "details": {"charge": "ch_1", "temperature": 0.7},
        "flagged": False,
        "flag_reason": None,
        "timestamp": "2026-04-05T19:00:00.000000Z",
    }
    # What a third-party verifier does, with nothing from Haldir but the contract:
    leaf = hashlib.sha256(b"\x00" + rfc8785.dumps(record)).hexdigest()
    assert entry["leaf_hash"] == leaf
    assert entry["prev_hash"] == "00" * 32
    assert (
        entry["entry_hash"]
        == hashlib.sha256(bytes(32) + bytes.fromhex(leaf)).hexdigest()
        == first["entry_hash"]
    )
    later = await _get(api, f"/v1/audit/entries/{second['entry_id']}")
    assert later["prev_hash"] == first["entry_hash"]
    assert later["record"]["cost_usd"] == "0.000001"


async def test_listing_flattens_records_filters_and_pages_newest_first(api: Api) -> None:
    one, two = await _session(api), await _session(api, agent_id="other")
    ids = [(await _log(api, one, tool=f"t{i % 2}"))["entry_id"] for i in range(5)]
    await _log(api, two, status="error")
    page = await _get(api, "/v1/audit", session_id=one, limit=2)
    assert [e["entry_id"] for e in page["entries"]] == [ids[4], ids[3]]
    assert {
        "timestamp",
        "session_id",
        "agent_id",
        "tool",
        "action",
        "status",
        "flagged",
        "flag_reason",
        "cost_usd",
    } <= set(page["entries"][0])
    rest = await _get(api, "/v1/audit", session_id=one, limit=10, cursor=page["next_cursor"])
    assert [e["entry_id"] for e in rest["entries"]] == [ids[2], ids[1], ids[0]]
    assert rest["next_cursor"] is None
    assert [e["tool"] for e in (await _get(api, "/v1/audit", tool="t1"))["entries"]] == ["t1", "t1"]
    errors = await _get(api, "/v1/audit", status="error")
    assert [e["agent_id"] for e in errors["entries"]] == ["other"]
    assert len((await _get(api, "/v1/audit", agent_id="agent-7"))["entries"]) == 5
    assert (await _get(api, "/v1/audit", since="2026-04-05T19:00:01Z"))["entries"] == []


async def test_checkpoints_are_signed_notes_that_verify_with_the_published_key(api: Api) -> None:
    session_id = await _session(api)
    for _ in range(3):
        await _log(api, session_id)
    key = await _get(api, "/v1/audit/log-key")
    assert key["origin"] == "haldir.local/acme"
    verifier = Verifier.from_vkey(key["vkey"])
    assert base64.b64decode(key["public_key"]) == verifier.public_key

    note = await api.client.get("/v1/audit/checkpoint", headers=api.auth(api.admin_key))
    assert note.headers["content-type"].startswith("text/plain")
    assert note.text.splitlines()[:2] == ["haldir.local/acme", "3"]
    checkpoint = parse_checkpoint(note.text, verifier, origin="haldir.local/acme")
    head = await _get(api, "/v1/audit/tree-head")
    assert head["tree_size"] == 3
    assert head["root_hash"] == checkpoint.root_hash.hex()
    assert head["checkpoint"] == note.text


async def test_inclusion_and_consistency_proofs_verify_against_signed_roots(api: Api) -> None:
    session_id = await _session(api)
    entries = [await _log(api, session_id) for _ in range(5)]
    old = await _get(api, "/v1/audit/tree-head")
    for _ in range(6):
        await _log(api, session_id)
    new = await _get(api, "/v1/audit/tree-head")
    assert (old["tree_size"], new["tree_size"]) == (5, 11)

    for entry in entries:
        for size in (None, 5):
            params = {} if size is None else {"tree_size": size}
            proof = await _get(api, f"/v1/audit/inclusion-proof/{entry['entry_id']}", **params)
            expected_root = (old if size else new)["root_hash"]
            assert proof["root_hash"] == expected_root
            merkle.verify_inclusion(
                leaf_hash=bytes.fromhex(proof["leaf_hash"]),
                index=proof["leaf_index"],
                size=proof["tree_size"],
                proof=[bytes.fromhex(p) for p in proof["proof"]],
                root=bytes.fromhex(expected_root),
            )
    link = await _get(api, "/v1/audit/consistency-proof", first=5, second=11)
    assert (link["first_root"], link["second_root"]) == (old["root_hash"], new["root_hash"])
    merkle.verify_consistency(
        first=5,
        second=11,
        first_root=bytes.fromhex(old["root_hash"]),
        second_root=bytes.fromhex(new["root_hash"]),
        proof=[bytes.fromhex(p) for p in link["proof"]],
    )


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/audit/consistency-proof", {"first": 3, "second": 2}),
        ("/v1/audit/consistency-proof", {"first": 1, "second": 99}),
        ("/v1/audit/consistency-proof", {"first": 0, "second": 1}),
    ],
)
async def test_impossible_proof_requests_are_400(api: Api, path: str, params: dict[str, int]) -> None:
    session_id = await _session(api)
    for _ in range(3):
        await _log(api, session_id)
    response = await api.client.get(path, params=params, headers=api.auth(api.admin_key))
    assert response.status_code == 400


async def test_an_inclusion_proof_beyond_the_tree_is_400(api: Api) -> None:
    session_id = await _session(api)
    entry = await _log(api, session_id)
    response = await api.client.get(
        f"/v1/audit/inclusion-proof/{entry['entry_id']}",
        params={"tree_size": 2},
        headers=api.auth(api.admin_key),
    )
    assert response.status_code == 400


async def test_verification_passes_on_an_untouched_log(api: Api) -> None:
    assert await _get(api, "/v1/audit/verify") == {"ok": True, "tree_size": 0, "first_bad": None}
    session_id = await _session(api)
    for _ in range(9):
        await _log(api, session_id)
    await _get(api, "/v1/audit/tree-head")
    await _log(api, session_id)
    assert await _get(api, "/v1/audit/verify") == {"ok": True, "tree_size": 10, "first_bad": None}


TAMPERS = {
    "record": "record = replace(record, '29.99', '19.99')",
    "entry_id": "entry_id = 'aud_forged'",
    "leaf_hash": "leaf_hash = :junk",
    "prev_hash": "prev_hash = :junk",
    "entry_hash": "entry_hash = :junk",
    "session_id": "session_id = 'ses_other'",
    "agent_id": "agent_id = 'someone-else'",
    "tool": "tool = 'github'",
    "status": "status = 'denied'",
    "flagged": "flagged = NOT flagged",
    "cost": "cost = cost + 1",
    "created_at": "created_at = created_at + 1",
    "leaf_index": "leaf_index = leaf_index + 100",
}


@pytest.mark.parametrize("column", sorted(TAMPERS))
async def test_editing_any_column_of_a_stored_entry_fails_verification_and_names_it(
    api: Api, column: str
) -> None:
    session_id = await _session(api)
    entries = [await _log(api, session_id) for _ in range(4)]
    await _get(api, "/v1/audit/tree-head")
    victim = entries[2]
    async with api.app.state.store.engines.write.begin() as conn:
        await conn.execute(
            sa.text(f"UPDATE ledger_entries SET {TAMPERS[column]} WHERE entry_id = :id"),  # noqa: S608
            {"id": victim["entry_id"], "junk": b"\x01" * 32},
        )
    result = await _get(api, "/v1/audit/verify")
    assert result["ok"] is False
    bad = result["first_bad"]
    assert bad["leaf_index"] == 2, bad
    if column not in ("entry_id", "leaf_index"):
        assert bad["entry_id"] == victim["entry_id"], bad
    assert bad["reason"]


async def test_a_removed_last_entry_is_caught_by_the_head_and_the_checkpoint(api: Api) -> None:
    session_id = await _session(api)
    entries = [await _log(api, session_id) for _ in range(3)]
    await _get(api, "/v1/audit/tree-head")
    async with api.app.state.store.engines.write.begin() as conn:
        await conn.execute(
            sa.text("DELETE FROM ledger_entries WHERE entry_id = :id"), {"id": entries[-1]["entry_id"]}
        )
    result = await _get(api, "/v1/audit/verify")
    assert result["ok"] is False
    assert result["first_bad"]["leaf_index"] == 3 or result["first_bad"]["leaf_index"] == 2


async def test_spend_totals_are_exact_decimal_strings(api: Api) -> None:
    one, two = await _session(api), await _session(api, agent_id="other")
    for cost in ("0.000001", "0.000002", "29.99"):
        await _log(api, one, cost_usd=cost)
    await _log(api, two, cost_usd="1", tool="github")
    spend = await _get(api, "/v1/audit/spend")
    assert spend == {
        "total_usd": "30.990003",
        "count": 4,
        "by_session": {one: "29.990003", two: "1.00"},
        "by_agent": {"agent-7": "29.990003", "other": "1.00"},
        "by_tool": {"stripe": "29.990003", "github": "1.00"},
    }
    assert (await _get(api, "/v1/audit/spend", session_id=two))["total_usd"] == "1.00"
    assert (await _get(api, "/v1/audit/spend", until="2026-04-05T19:00:00Z"))["count"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"session_id": "ses_nope", "tool": "t", "action": "a"},
        {"tool": "t", "action": "a"},
        {"session_id": "x", "tool": "", "action": "a"},
        {"session_id": "x", "tool": "t", "action": "a", "cost_usd": "-1"},
        {"session_id": "x", "tool": "t", "action": "a", "status": "maybe"},
        {"session_id": "x", "tool": "t", "action": "a", "details": []},
    ],
)
async def test_bad_entries_are_refused_with_4xx(api: Api, body: dict[str, Any]) -> None:
    session_id = await _session(api)
    body = {**body, "session_id": session_id} if body.get("session_id") == "x" else body
    response = await api.client.post("/v1/audit", json=body, headers=api.auth(api.admin_key))
    assert response.status_code in (400, 404), response.text


async def test_details_over_64_kib_are_refused(api: Api) -> None:
    session_id = await _session(api)
    body = {"session_id": session_id, "tool": "t", "action": "a", "details": {"blob": "x" * (64 * 1024)}}
    response = await api.client.post("/v1/audit", json=body, headers=api.auth(api.admin_key))
    assert response.status_code == 400
    assert json.loads(response.text)["code"] == "invalid_request"


async def test_listing_in_leaf_order_pages_oldest_first_and_keeps_cursors_to_their_order(api: Api) -> None:
    session_id = await _session(api)
    ids = [(await _log(api, session_id))["entry_id"] for _ in range(5)]
    first = await _get(api, "/v1/audit", order="asc", limit=2)
    assert [e["entry_id"] for e in first["entries"]] == ids[:2]
    rest = await _get(api, "/v1/audit", order="asc", limit=10, cursor=first["next_cursor"])
    assert [e["leaf_index"] for e in rest["entries"]] == [2, 3, 4]
    assert rest["next_cursor"] is None
    newest = await _get(api, "/v1/audit", limit=2)
    for order, cursor in (("desc", first["next_cursor"]), ("asc", newest["next_cursor"])):
        response = await api.client.get(
            "/v1/audit", params={"order": order, "cursor": cursor}, headers=api.auth(api.admin_key)
        )
        assert response.status_code == 400, response.text
        assert "other order" in response.json()["error"]
    bad = await api.client.get("/v1/audit", params={"order": "sideways"}, headers=api.auth(api.admin_key))
    assert bad.status_code == 400
