"""Payments over HTTP: authorize against a session's budget, capture, void, list; one spend ledger."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import Api

pytestmark = pytest.mark.anyio

PAYMENT = {
    "authorization_id",
    "session_id",
    "amount",
    "captured_amount",
    "reported",
    "currency",
    "description",
    "status",
    "created_at",
    "updated_at",
}


async def _session(api: Api, *scopes: str, limit: str = "10.00", ttl: int | None = None) -> str:
    body: dict[str, Any] = {"agent_id": "agent-1", "scopes": list(scopes or ("read", "spend"))}
    body["spend_limit"] = limit
    if ttl is not None:
        body["ttl"] = ttl
    response = await api.client.post("/v1/sessions", json=body, headers=api.auth(api.admin_key))
    assert response.status_code == 201, response.text
    return str(response.json()["session_id"])


async def _authorize(api: Api, session_id: str, amount: str, **extra: Any) -> httpx.Response:
    headers = {**api.auth(api.admin_key), **extra.pop("headers", {})}
    body = {"session_id": session_id, "amount": amount, **extra}
    return await api.client.post("/v1/payments/authorize", json=body, headers=headers)


async def _authorized(api: Api, session_id: str, amount: str) -> str:
    response = await _authorize(api, session_id, amount)
    assert response.status_code == 201, response.text
    return str(response.json()["authorization_id"])


async def _settle(api: Api, authorization_id: str, how: str, **body: Any) -> httpx.Response:
    return await api.client.post(
        f"/v1/payments/{authorization_id}/{how}", json=body or None, headers=api.auth(api.admin_key)
    )


async def _spent(api: Api, session_id: str) -> str:
    response = await api.client.get(f"/v1/sessions/{session_id}", headers=api.auth(api.admin_key))
    assert response.status_code == 200, response.text
    return str(response.json()["spent"])


async def _log(api: Api, session_id: str, cost: str, **extra: Any) -> httpx.Response:
    body = {"session_id": session_id, "tool": "stripe", "action": "charge", "cost_usd": cost, **extra}
    return await api.client.post("/v1/audit", json=body, headers=api.auth(api.admin_key))


async def _ledger_spend(api: Api, session_id: str) -> str:
    response = await api.client.get(
        "/v1/audit/spend", params={"session_id": session_id}, headers=api.auth(api.admin_key)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["by_session"].get(session_id, "0.00"))


async def test_an_authorization_within_budget_answers_the_remaining_budget(api: Api) -> None:
    session_id = await _session(api)
    response = await _authorize(api, session_id, "2.50", description="2 credits")
    assert response.status_code == 201
    body = response.json()
    assert body["authorization_id"].startswith("pay_")
    assert body == {
        "authorization_id": body["authorization_id"],
        "amount": "2.50",
        "remaining_budget": "7.50",
        "status": "authorized",
    }
    assert await _spent(api, session_id) == "2.50"


async def test_an_authorized_payment_has_the_documented_shape(api: Api) -> None:
    session_id = await _session(api)
    authorization_id = await _authorized(api, session_id, "1.25")
    response = await api.client.get(f"/v1/payments/{authorization_id}", headers=api.auth(api.admin_key))
    assert response.status_code == 200
    assert response.json() == {
        "authorization_id": authorization_id,
        "session_id": session_id,
        "amount": "1.25",
        "captured_amount": None,
        "reported": "0.00",
        "currency": "USD",
        "description": "",
        "status": "authorized",
        "created_at": "2026-04-05T19:00:00Z",
        "updated_at": "2026-04-05T19:00:00Z",
    }


async def test_an_authorization_over_budget_is_402_with_the_remaining_budget(api: Api) -> None:
    session_id = await _session(api, limit="5.00")
    await _authorized(api, session_id, "3.00")
    response = await _authorize(api, session_id, "2.50")
    assert response.status_code == 402
    body = response.json()
    assert body["code"] == "budget_exceeded"
    assert body["remaining_budget"] == "2.00"
    assert await _spent(api, session_id) == "3.00"


async def test_a_session_without_spend_scope_is_403_scope_denied(api: Api) -> None:
    session_id = await _session(api, "read")
    response = await _authorize(api, session_id, "1.00")
    assert response.status_code == 403
    assert response.json()["code"] == "scope_denied"
    assert "spend" in response.json()["error"]
    assert await _spent(api, session_id) == "0.00"


async def test_an_expired_session_cannot_authorize(api: Api) -> None:
    session_id = await _session(api, ttl=60)
    api.clock.advance(61)
    response = await _authorize(api, session_id, "1.00")
    assert response.status_code == 403
    assert response.json()["code"] == "scope_denied"


async def test_bad_amounts_and_currencies_are_400(api: Api) -> None:
    session_id = await _session(api)
    for amount in ("0", "-1", "1.0000001", "NaN"):
        response = await _authorize(api, session_id, amount)
        assert response.status_code == 400, (amount, response.text)
        assert response.json()["code"] == "invalid_amount"
    euros = await _authorize(api, session_id, "1", currency="EUR")
    assert euros.status_code == 400
    assert await _spent(api, session_id) == "0.00"


async def test_an_unknown_session_is_404(api: Api) -> None:
    response = await _authorize(api, "ses_doesnotexist0000000000", "1.00")
    assert response.status_code == 404


async def test_capturing_less_releases_the_difference(api: Api) -> None:
    session_id = await _session(api)
    authorization_id = await _authorized(api, session_id, "4.00")
    api.clock.advance(5)
    response = await _settle(api, authorization_id, "capture", amount="1.50")
    assert response.status_code == 200, response.text
    payment = response.json()
    assert set(payment) == PAYMENT
    assert payment["status"] == "captured"
    assert payment["amount"] == "4.00"
    assert payment["captured_amount"] == "1.50"
    assert payment["updated_at"] == "2026-04-05T19:00:05Z"
    assert await _spent(api, session_id) == "1.50"


async def test_capturing_without_a_body_captures_the_whole_amount(api: Api) -> None:
    session_id = await _session(api)
    authorization_id = await _authorized(api, session_id, "4.00")
    response = await api.client.post(
        f"/v1/payments/{authorization_id}/capture", headers=api.auth(api.admin_key)
    )
    assert response.status_code == 200, response.text
    assert response.json()["captured_amount"] == "4.00"
    assert await _spent(api, session_id) == "4.00"


async def test_capturing_more_than_authorized_is_400(api: Api) -> None:
    session_id = await _session(api)
    authorization_id = await _authorized(api, session_id, "4.00")
    response = await _settle(api, authorization_id, "capture", amount="4.01")
    assert response.status_code == 400
    assert await _spent(api, session_id) == "4.00"


async def test_voiding_releases_the_whole_amount(api: Api) -> None:
    session_id = await _session(api)
    authorization_id = await _authorized(api, session_id, "4.00")
    response = await _settle(api, authorization_id, "void")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "voided"
    assert response.json()["captured_amount"] is None
    assert await _spent(api, session_id) == "0.00"


async def test_settling_refuses_unknown_body_fields(api: Api) -> None:
    session_id = await _session(api)
    authorization_id = await _authorized(api, session_id, "4.00")
    for how in ("capture", "void"):
        response = await _settle(api, authorization_id, how, reason="changed my mind")
        assert response.status_code == 400, (how, response.text)
        assert response.json()["code"] == "invalid_request"
    empty = await api.client.post(
        f"/v1/payments/{authorization_id}/void", json={}, headers=api.auth(api.admin_key)
    )
    assert empty.status_code == 200, empty.text


async def test_settling_a_payment_twice_is_409_and_changes_nothing(api: Api) -> None:
    session_id = await _session(api)
    captured = await _authorized(api, session_id, "2.00")
    voided = await _authorized(api, session_id, "3.00")
    assert (await _settle(api, captured, "capture", amount="1.00")).status_code == 200
    assert (await _settle(api, voided, "void")).status_code == 200
    for authorization_id in (captured, voided):
        for how in ("capture", "void"):
            response = await _settle(api, authorization_id, how)
            assert response.status_code == 409, (authorization_id, how, response.text)
            assert response.json()["code"] == "conflict"
    assert await _spent(api, session_id) == "1.00"


async def test_an_unknown_payment_is_404(api: Api) -> None:
    for response in (
        await api.client.get("/v1/payments/pay_nope", headers=api.auth(api.admin_key)),
        await _settle(api, "pay_nope", "capture"),
        await _settle(api, "pay_nope", "void"),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


async def test_payments_list_newest_first_and_by_session(api: Api) -> None:
    first_session = await _session(api)
    other_session = await _session(api)
    made = []
    for session_id in (first_session, other_session, first_session):
        made.append(await _authorized(api, session_id, "1.00"))
        api.clock.advance(1)
    everything = await api.client.get("/v1/payments", headers=api.auth(api.admin_key))
    assert [p["authorization_id"] for p in everything.json()["payments"]] == made[::-1]
    page = await api.client.get(
        "/v1/payments", params={"session_id": first_session, "limit": 1}, headers=api.auth(api.admin_key)
    )
    assert [p["authorization_id"] for p in page.json()["payments"]] == [made[2]]
    rest = await api.client.get(
        "/v1/payments",
        params={"session_id": first_session, "cursor": page.json()["next_cursor"]},
        headers=api.auth(api.admin_key),
    )
    assert [p["authorization_id"] for p in rest.json()["payments"]] == [made[0]]
    assert rest.json()["next_cursor"] is None
    bad = await api.client.get("/v1/payments?session_id=nope", headers=api.auth(api.admin_key))
    assert bad.status_code == 400


async def test_spent_equals_the_ledger_spend_after_a_mix_of_spends(api: Api) -> None:
    session_id = await _session(api, limit="20.00")
    captured_less = await _authorized(api, session_id, "5.00")
    api.clock.advance(1)  # costs are matched to the oldest open authorization first
    voided = await _authorized(api, session_id, "3.00")
    api.clock.advance(1)
    reported = await _authorized(api, session_id, "4.00")
    assert (await _settle(api, captured_less, "capture", amount="2.25")).status_code == 200
    assert (await _settle(api, voided, "void")).status_code == 200
    assert (await _log(api, session_id, "1.10")).status_code == 201  # matched to the 2.25 captured
    assert (await _log(api, session_id, "3.00", authorization_id=reported)).status_code == 201
    assert (await _settle(api, reported, "capture", amount="3.00")).status_code == 200
    assert (await _log(api, session_id, "0")).status_code == 201
    over = await _log(api, session_id, "100.00")  # 1.15 still held by the capture, 98.85 charged
    assert (over.status_code, over.json()["flagged"]) == (201, True)

    spent = await _spent(api, session_id)
    assert spent == "104.10"  # 2.25 captured + 3.00 captured + 98.85 charged past the limit
    assert await _ledger_spend(api, session_id) == spent


async def test_a_cost_logged_against_an_authorization_is_not_charged_twice(api: Api) -> None:
    session_id = await _session(api)
    authorization_id = await _authorized(api, session_id, "4.00")
    response = await _log(api, session_id, "2.50", authorization_id=authorization_id)
    assert response.status_code == 201, response.text
    assert await _spent(api, session_id) == "4.00"
    assert await _ledger_spend(api, session_id) == "4.00"
    entry = await api.client.get(
        f"/v1/audit/entries/{response.json()['entry_id']}", headers=api.auth(api.admin_key)
    )
    record = entry.json()["record"]
    assert record["cost_usd"] == "2.50"
    assert record["charged_usd"] == "0.00"
    assert record["authorization_id"] == authorization_id
    payment = await api.client.get(f"/v1/payments/{authorization_id}", headers=api.auth(api.admin_key))
    assert payment.json()["reported"] == "2.50"


async def test_a_cost_beyond_what_the_named_authorization_holds_charges_only_the_rest(api: Api) -> None:
    session_id = await _session(api)
    authorization_id = await _authorized(api, session_id, "4.00")
    assert (await _log(api, session_id, "3.00", authorization_id=authorization_id)).status_code == 201
    response = await _log(api, session_id, "1.50", authorization_id=authorization_id)
    assert response.status_code == 201, response.text
    assert response.json()["flagged"] is False
    assert await _spent(api, session_id) == "4.50"  # 4.00 authorized + the 0.50 it did not hold
    assert await _ledger_spend(api, session_id) == "4.50"


async def test_authorize_then_log_the_same_amount_counts_it_once(api: Api) -> None:
    session_id = await _session(api, limit="50.00")
    authorization_id = await _authorized(api, session_id, "29.99")
    response = await _log(api, session_id, "29.99")
    assert response.status_code == 201, response.text
    entry = await api.client.get(
        f"/v1/audit/entries/{response.json()['entry_id']}", headers=api.auth(api.admin_key)
    )
    record = entry.json()["record"]
    assert record["covered_by"] == [{"authorization_id": authorization_id, "amount_usd": "29.99"}]
    assert record["charged_usd"] == "0.00"
    assert await _spent(api, session_id) == "29.99"
    assert await _ledger_spend(api, session_id) == "29.99"


async def test_a_cost_against_another_sessions_authorization_is_404(api: Api) -> None:
    owner = await _session(api)
    other = await _session(api)
    authorization_id = await _authorized(api, owner, "4.00")
    response = await _log(api, other, "1.00", authorization_id=authorization_id)
    assert response.status_code == 404
    assert await _spent(api, other) == "0.00"


async def test_a_cost_over_the_remaining_budget_is_kept_and_flagged_over_budget(api: Api) -> None:
    session_id = await _session(api, limit="5.00")
    assert (await _log(api, session_id, "4.00")).status_code == 201
    response = await _log(api, session_id, "1.50")
    assert response.status_code == 201, response.text
    assert response.json()["flagged"] is True
    assert response.json()["flag_reason"].startswith("over_budget:")
    session = await api.client.get(f"/v1/sessions/{session_id}", headers=api.auth(api.admin_key))
    assert (session.json()["spent"], session.json()["remaining_budget"]) == ("5.50", "0.00")
    assert await _ledger_spend(api, session_id) == "5.50"
    flagged = await api.client.get(
        "/v1/audit", params={"session_id": session_id, "flagged": "true"}, headers=api.auth(api.admin_key)
    )
    (latest,) = flagged.json()["entries"]
    assert (latest["status"], latest["cost_usd"], latest["charged_usd"]) == ("ok", "1.50", "1.50")
    refused = await _authorize(api, session_id, "0.01")  # authorizations still never overspend
    assert refused.status_code == 402


async def test_a_replayed_authorization_answers_the_same_id_and_charges_once(api: Api) -> None:
    session_id = await _session(api)
    headers = {"Idempotency-Key": "order-1"}
    first = await _authorize(api, session_id, "3.00", headers=headers)
    again = await _authorize(api, session_id, "3.00", headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["authorization_id"] == first.json()["authorization_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["remaining_budget"] == "7.00"
    assert await _spent(api, session_id) == "3.00"
    listed = await api.client.get("/v1/payments", headers=api.auth(api.admin_key))
    assert len(listed.json()["payments"]) == 1
    different = await _authorize(api, session_id, "4.00", headers=headers)
    assert different.status_code == 422


async def test_the_ledger_records_authorizations_and_releases_with_their_charge(api: Api) -> None:
    session_id = await _session(api)
    authorization_id = await _authorized(api, session_id, "4.00")
    assert (await _settle(api, authorization_id, "capture", amount="1.00")).status_code == 200
    response = await api.client.get(
        "/v1/audit", params={"tool": "payments", "order": "asc"}, headers=api.auth(api.admin_key)
    )
    entries = response.json()["entries"]
    assert [(e["action"], e["charged_usd"]) for e in entries] == [
        ("payment.authorize", "4.00"),
        ("payment.capture", "-3.00"),
    ]
    assert all(e["details"]["authorization_id"] == authorization_id for e in entries)
    assert sum(Decimal(e["charged_usd"]) for e in entries) == Decimal(await _spent(api, session_id))


async def test_payments_of_one_tenant_are_invisible_to_another(api: Api) -> None:
    session_id = await _session(api)
    authorization_id = await _authorized(api, session_id, "2.00")
    intruder = api.auth(await api.key("*", tenant="intruder"))
    assert (await api.client.get(f"/v1/payments/{authorization_id}", headers=intruder)).status_code == 404
    assert (await api.client.get("/v1/payments", headers=intruder)).json()["payments"] == []
    for how in ("capture", "void"):
        response = await api.client.post(f"/v1/payments/{authorization_id}/{how}", headers=intruder)
        assert response.status_code == 404
    assert await _spent(api, session_id) == "2.00"


async def test_a_cost_logged_on_an_expired_session_is_kept_charged_and_flagged(api: Api) -> None:
    session_id = await _session(api, ttl=60)
    api.clock.advance(61)
    response = await _log(api, session_id, "1.00")
    assert response.status_code == 201, response.text
    assert response.json()["flagged"] is True
    assert "expired" in response.json()["flag_reason"]
    assert await _spent(api, session_id) == "1.00"


async def test_an_authorization_not_settled_within_its_ttl_expires_and_settling_it_is_a_409(api: Api) -> None:
    session_id = await _session(api, ttl=30 * 86400)
    authorization_id = await _authorized(api, session_id, "4.00")
    api.clock.advance(7 * 86400)  # HALDIR_PAYMENT_AUTHORIZATION_TTL_SECONDS' default
    refused = await _settle(api, authorization_id, "capture")
    assert refused.status_code == 409
    assert refused.json()["code"] == "conflict"
    assert f"payment {authorization_id} expired" in refused.json()["error"]

    assert (await api.governor.retention.sweep()).payments_expired == 1
    shown = await api.client.get(f"/v1/payments/{authorization_id}", headers=api.auth(api.admin_key))
    assert shown.json()["status"] == "expired"
    assert await _spent(api, session_id) == "0.00"
    assert (await _settle(api, authorization_id, "void")).status_code == 409
