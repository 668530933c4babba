"""Compliance over HTTP: the evidence pack in both forms, verified with the log key alone, and the manifest
check that ties a pack to the ledger; each tenant sees only its own."""

from __future__ import annotations

import json
from typing import Any

import pytest

from haldir.core.checkpoints import Verifier
from haldir.core.evidence import verify_evidence
from tests.conftest import Api

pytestmark = pytest.mark.anyio


async def _activity(api: Api, key: str) -> None:
    headers = api.auth(key)
    session = await api.client.post(
        "/v1/sessions", json={"agent_id": "a", "scopes": ["spend"], "spend_limit": "10"}, headers=headers
    )
    assert session.status_code == 201, session.text
    paid = await api.client.post(
        "/v1/payments/authorize",
        json={"session_id": session.json()["session_id"], "amount": "2.50"},
        headers=headers,
    )
    assert paid.status_code == 201, paid.text
    api.clock.advance(60)


async def _verifier(api: Api, key: str) -> Verifier:
    found = await api.client.get("/v1/audit/log-key", headers=api.auth(key))
    return Verifier.from_vkey(found.json()["vkey"])


async def _pack(api: Api, key: str, **params: Any) -> dict[str, Any]:
    response = await api.client.get("/v1/compliance/evidence", params=params, headers=api.auth(key))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_the_pack_comes_as_canonical_json_that_verifies_with_the_log_key(api: Api) -> None:
    await _activity(api, api.admin_key)
    response = await api.client.get(
        "/v1/compliance/evidence",
        params={"since": "2026-01-01"},
        headers=api.auth(await api.key("admin:read")),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    verified = verify_evidence(response.content, await _verifier(api, api.admin_key))
    assert verified.tenant_id == "acme"
    assert verified.period_since.isoformat() == "2026-01-01T00:00:00+00:00"
    spend = response.json()["sections"][4]["facts"]
    assert (spend["payments_authorized"], spend["payments_authorized_usd"]) == (1, "2.50")


async def test_the_markdown_form_holds_the_same_pack_and_verifies_too(api: Api) -> None:
    await _activity(api, api.admin_key)
    until = api.clock.now().isoformat()
    as_json = await api.client.get(
        "/v1/compliance/evidence", params={"until": until}, headers=api.auth(api.admin_key)
    )
    as_markdown = await api.client.get(
        "/v1/compliance/evidence", params={"until": until, "format": "md"}, headers=api.auth(api.admin_key)
    )
    assert as_markdown.headers["content-type"] == "text/markdown; charset=utf-8"
    assert as_markdown.text.startswith("# Compliance evidence pack: acme\n")
    assert "## 4. Audit trail · SOC 2 CC7.2" in as_markdown.text
    verifier = await _verifier(api, api.admin_key)
    from_markdown = verify_evidence(as_markdown.text, verifier)
    assert from_markdown.digest == verify_evidence(as_json.text, verifier).digest


async def test_a_period_that_is_malformed_or_not_over_is_refused(api: Api) -> None:
    headers = api.auth(api.admin_key)
    naive = await api.client.get(
        "/v1/compliance/evidence", params={"since": "2026-01-01T05:00:00"}, headers=headers
    )
    assert naive.status_code == 400
    assert naive.json()["code"] == "invalid_request"
    future = await api.client.get("/v1/compliance/evidence", params={"until": "2099-01-01"}, headers=headers)
    assert future.status_code == 400
    assert "until is after now" in future.json()["error"]
    unknown = await api.client.get("/v1/compliance/evidence", params={"format": "pdf"}, headers=headers)
    assert unknown.status_code == 400


async def test_the_manifest_check_confirms_a_pack_and_names_an_edit(api: Api) -> None:
    await _activity(api, api.admin_key)
    pack = await _pack(api, api.admin_key)
    auditor = api.auth(await api.key("audit:read"))
    await _activity(api, api.admin_key)  # the ledger grows after the pack
    confirmed = await api.client.post("/v1/compliance/evidence/manifest", json=pack, headers=auditor)
    assert confirmed.status_code == 200, confirmed.text
    body = confirmed.json()
    assert (body["valid"], body["signed_by_log_key"], body["consistent"]) == (True, True, True)
    assert body["digest"] == pack["signature"]["digest"]
    assert body["tree_size"] > body["pack_tree_size"]
    assert body["consistency_proof"]

    pack["sections"][1]["facts"]["keys_total"] += 1
    edited = (await api.client.post("/v1/compliance/evidence/manifest", json=pack, headers=auditor)).json()
    assert (edited["valid"], edited["signed_by_log_key"]) == (False, False)
    assert edited["problem"].startswith("section 2 (Access control, CC6.1), field keys_total:")


async def test_the_manifest_check_takes_a_json_object(api: Api) -> None:
    response = await api.client.post(
        "/v1/compliance/evidence/manifest", content=json.dumps([1, 2]), headers=api.auth(api.admin_key)
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


async def test_each_tenant_gets_its_own_pack_and_cannot_claim_another_s(api: Api) -> None:
    await _activity(api, api.admin_key)
    intruder = await api.key("*", tenant="intruder")
    await _activity(api, intruder)
    await _activity(api, intruder)
    theirs = await _pack(api, intruder)
    assert theirs["sections"][0]["facts"]["tenant_id"] == "intruder"
    assert theirs["sections"][4]["facts"]["payments_authorized"] == 2
    assert [key["name"] for key in theirs["sections"][1]["facts"]["keys"]] == ["test"]
    ours = await _pack(api, api.admin_key)
    claimed = await api.client.post("/v1/compliance/evidence/manifest", json=ours, headers=api.auth(intruder))
    assert claimed.json()["valid"] is False
    assert "not of this tenant's" in claimed.json()["problem"]


async def test_the_openapi_document_describes_both_forms_and_the_manifest(api: Api) -> None:
    paths = api.app.openapi()["paths"]
    content = paths["/v1/compliance/evidence"]["get"]["responses"]["200"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/EvidencePack"}
    assert "text/markdown" in content
    manifest = paths["/v1/compliance/evidence/manifest"]["post"]
    assert manifest["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ManifestOut"
    )
    assert "403" in manifest["responses"]
