"""The delivery worker against real receivers, on both stores: signed as Standard Webhooks, retried on
the schedule, rotated secrets, redirects, disabling, leases, and tenants kept apart."""

from __future__ import annotations

import json
from datetime import timedelta

import anyio
import pytest

from haldir.core.keys import Principal
from haldir.core.webhooks import Attempt, Claimed
from haldir.errors import OutboundRefused
from tests.webhooks.conftest import Hooks
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.anyio


async def _subscribe(hooks: Hooks, url: str, *events: str, tenant: str = "acme") -> tuple[str, str]:
    created = await hooks.governor.webhooks.create_webhook(
        Principal.operator(tenant), url=url, events=list(events) or ["*"]
    )
    return created.webhook.webhook_id, created.secret


async def _revoked_session(hooks: Hooks, tenant: str = "acme") -> str:
    principal = Principal.operator(tenant)
    session = (await hooks.governor.sessions.create_session(principal, agent_id="bot", scopes=["read"])).value
    await hooks.governor.sessions.revoke_session(principal, session.session_id)
    return session.session_id


async def _step(hooks: Hooks) -> int:
    with anyio.fail_after(30):
        return await hooks.worker.step()


async def test_a_delivery_verifies_with_the_standardwebhooks_library(
    hooks: Hooks, listener: Receiver
) -> None:
    webhook_id, secret = await _subscribe(hooks, listener.url, "session.revoked")
    session_id = await _revoked_session(hooks)

    assert await _step(hooks) == 1
    [got] = listener.received
    payload = got.verify(secret)
    assert payload == {
        "type": "session.revoked",
        "timestamp": payload["timestamp"],  # type: ignore[index]
        "data": {
            "session_id": session_id,
            "agent_id": "bot",
            "revoked_at": payload["data"]["revoked_at"],  # type: ignore[index]
            "spent_usd": "0.00",
            "spend_limit_usd": "0.00",
        },
    }
    assert got.headers["webhook-timestamp"] == str(int(hooks.clock.now().timestamp()))
    assert got.headers["content-type"] == "application/json"
    page = await hooks.governor.webhooks.list_deliveries(Principal.operator("acme"), webhook_id=webhook_id)
    [delivery] = page.items
    assert (delivery.status, delivery.attempts, delivery.event_id) == ("delivered", 1, got.message_id)
    assert delivery.history[0].status_code == 204
    assert await _step(hooks) == 0  # delivered once


async def test_a_receiver_that_fails_twice_gets_three_attempts_on_the_backoff_schedule(
    hooks: Hooks, listener: Receiver
) -> None:
    answers = iter([500, 503, 200])
    listener.answer = lambda _: next(answers)
    webhook_id, secret = await _subscribe(hooks, listener.url, "session.revoked")
    await _revoked_session(hooks)

    assert await _step(hooks) == 1  # 500
    hooks.clock.advance(4.9)
    assert await _step(hooks) == 0  # the first retry waits 5 s
    hooks.clock.advance(0.1)
    assert await _step(hooks) == 1  # 503
    hooks.clock.advance(29)
    assert await _step(hooks) == 0  # the second waits 30 s
    hooks.clock.advance(1)
    assert await _step(hooks) == 1  # 200

    ids = {got.message_id for got in listener.received}
    assert len(listener.received) == 3
    assert len(ids) == 1  # one webhook-id across retries
    assert all(got.signed_by(secret) for got in listener.received)
    [delivery] = (await hooks.governor.webhooks.list_deliveries(Principal.operator("acme"))).items
    assert delivery.status == "delivered"
    assert [(a.number, a.status_code) for a in delivery.history] == [(1, 500), (2, 503), (3, 200)]
    first, second, third = delivery.history
    assert first.next_attempt_at == first.attempted_at + timedelta(seconds=5)
    assert second.next_attempt_at == second.attempted_at + timedelta(seconds=30)
    assert third.next_attempt_at is None
    assert first.error == "answered 500"
    webhook = await hooks.governor.webhooks.get_webhook(Principal.operator("acme"), webhook_id)
    assert webhook.failing_since is None  # the success ended the streak


async def test_jitter_spreads_a_retry_over_twenty_percent_either_side(
    hooks: Hooks, listener: Receiver
) -> None:
    listener.answer = lambda _: 500
    await _subscribe(hooks, listener.url)
    await _revoked_session(hooks)
    hooks.jitter[0] = 0.0
    await _step(hooks)
    [delivery] = (await hooks.governor.webhooks.list_deliveries(Principal.operator("acme"))).items
    assert delivery.next_attempt_at == delivery.history[0].attempted_at + timedelta(seconds=4)


async def test_a_delivery_fails_after_the_last_retry_and_can_be_redelivered(
    hooks: Hooks, listener: Receiver
) -> None:
    listener.answer = lambda _: 500
    await _subscribe(hooks, listener.url)
    await _revoked_session(hooks)
    for wait in (0, 5, 30, 120, 600, 3600, 6 * 3600, 24 * 3600):
        hooks.clock.advance(wait)
        assert await _step(hooks) == 1
    hooks.clock.advance(7 * 86400)
    assert await _step(hooks) == 0
    principal = Principal.operator("acme")
    [delivery] = (await hooks.governor.webhooks.list_deliveries(principal, status="failed")).items
    assert (delivery.attempts, delivery.next_attempt_at) == (8, None)
    assert delivery.history[-1].next_attempt_at is None

    listener.answer = lambda _: 200
    again = await hooks.governor.webhooks.redeliver(principal, delivery.delivery_id)
    assert again.status == "pending"
    assert await _step(hooks) == 1
    [delivered] = (await hooks.governor.webhooks.list_deliveries(principal, status="delivered")).items
    assert delivered.attempts == 9
    assert len({got.message_id for got in listener.received}) == 1


async def test_a_webhook_failing_for_a_day_is_disabled_and_says_why(hooks: Hooks, listener: Receiver) -> None:
    listener.answer = lambda _: 502
    webhook_id, _ = await _subscribe(hooks, listener.url)
    await _revoked_session(hooks)
    for wait in (0, 5, 30, 120, 600, 3600, 6 * 3600):
        hooks.clock.advance(wait)
        await _step(hooks)
    principal = Principal.operator("acme")
    assert (await hooks.governor.webhooks.get_webhook(principal, webhook_id)).enabled
    hooks.clock.advance(24 * 3600)
    await _step(hooks)
    webhook = await hooks.governor.webhooks.get_webhook(principal, webhook_id)
    assert not webhook.enabled
    assert webhook.disabled_reason is not None
    assert "no delivery succeeded since" in webhook.disabled_reason
    assert "answered 502" in webhook.disabled_reason

    await _revoked_session(hooks)  # a disabled webhook gets no new deliveries
    hooks.clock.advance(1)
    assert await _step(hooks) == 0

    listener.answer = lambda _: 204  # the receiver is fixed: enable it, and new events go to it again
    enabled = await hooks.governor.webhooks.enable_webhook(principal, webhook_id)
    assert (enabled.enabled, enabled.disabled_reason, enabled.failing_since) == (True, None, None)
    hooks.clock.advance(1)
    await _revoked_session(hooks)
    assert await _step(hooks) == 1
    assert listener.received[-1].headers["webhook-id"] != listener.received[0].headers["webhook-id"]


async def test_after_rotation_both_signatures_are_sent_and_each_verifies(
    hooks: Hooks, listener: Receiver
) -> None:
    principal = Principal.operator("acme")
    webhook_id, old = await _subscribe(hooks, listener.url)
    new = (await hooks.governor.webhooks.rotate_secret(principal, webhook_id)).secret
    assert new != old
    await _revoked_session(hooks)
    await _step(hooks)
    [got] = listener.received
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    got.verify(old)
    got.verify(new)

    hooks.clock.advance(86400)  # the grace period is over: only the new secret signs
    await _revoked_session(hooks)
    await _step(hooks)
    last = listener.received[-1]
    assert len(last.headers["webhook-signature"].split(" ")) == 1
    assert last.signed_by(new)
    assert not last.signed_by(old)


async def test_a_redirect_is_not_followed_and_counts_as_a_failure(hooks: Hooks, listener: Receiver) -> None:
    listener.answer = lambda got: 307 if got.path == "/hook" else 200
    await _subscribe(hooks, listener.url)
    await _revoked_session(hooks)
    await _step(hooks)
    assert [got.path for got in listener.received] == ["/hook"]
    [delivery] = (await hooks.governor.webhooks.list_deliveries(Principal.operator("acme"))).items
    assert delivery.status == "pending"
    assert delivery.history[0].status_code == 307
    assert delivery.history[0].error == "redirect (307) not followed"


async def test_an_unreachable_receiver_is_recorded_without_its_url(hooks: Hooks, listener: Receiver) -> None:
    url = listener.url.replace("/hook", "/hook?token=very-secret-token")
    await _subscribe(hooks, url)
    await _revoked_session(hooks)
    listener_port = url.split(":")[2].split("/")[0]
    await hooks.governor.webhooks.create_webhook(
        Principal.operator("acme"), url="http://127.0.0.1:1/closed?token=very-secret-token", events=["*"]
    )
    await _step(hooks)
    page = await hooks.governor.webhooks.list_deliveries(Principal.operator("acme"))
    errors = [attempt.error for delivery in page.items for attempt in delivery.history]
    assert "could not connect" in errors
    assert not any("very-secret-token" in (error or "") or listener_port in (error or "") for error in errors)


async def test_an_expired_lease_is_claimed_again_and_a_stale_holder_records_nothing(
    hooks: Hooks, listener: Receiver
) -> None:
    await _subscribe(hooks, listener.url)
    await _revoked_session(hooks)
    store = hooks.store.webhooks
    now = hooks.clock.now()
    await store.fan_out(now=now, limit=10)
    [first] = await store.claim(now=now, until=now + timedelta(seconds=60), limit=10)
    assert await store.claim(now=now, until=now + timedelta(seconds=60), limit=10) == []  # leased
    hooks.clock.advance(60)  # the holder died: its lease runs out
    assert await _step(hooks) == 1
    assert len(listener.received) == 1
    stale = Claimed(first.delivery, first.lease, first.claimed_until)
    [delivery] = (await hooks.governor.webhooks.list_deliveries(Principal.operator("acme"))).items
    late = Attempt(1, now, 500, 1, "late", now + timedelta(seconds=5))
    assert not await store.record_attempt(stale, late, retries=1, disabled_reason=lambda _: "")
    [after] = (await hooks.governor.webhooks.list_deliveries(Principal.operator("acme"))).items
    assert after == delivery


async def test_each_event_is_fanned_out_once_to_each_subscribed_webhook_of_its_tenant_only(
    hooks: Hooks, listener: Receiver
) -> None:
    revoked_only, _ = await _subscribe(hooks, listener.url, "session.revoked")
    await _subscribe(hooks, listener.url, "budget.exhausted")
    everything, _ = await _subscribe(hooks, listener.url, "*")
    other, _ = await _subscribe(hooks, listener.url, "*", tenant="globex")
    await _revoked_session(hooks)
    assert await _step(hooks) == 2
    got = [json.loads(r.body)["type"] for r in listener.received]
    assert got == ["session.revoked", "session.revoked"]
    acme = await hooks.governor.webhooks.list_deliveries(Principal.operator("acme"))
    assert sorted(d.webhook_id for d in acme.items) == sorted([revoked_only, everything])
    globex = await hooks.governor.webhooks.list_deliveries(Principal.operator("globex"))
    assert globex.items == []
    assert other not in {d.webhook_id for d in acme.items}


async def test_a_webhook_does_not_receive_events_from_before_it_existed(
    hooks: Hooks, listener: Receiver
) -> None:
    await _subscribe(hooks, listener.url, "budget.exhausted")
    await _revoked_session(hooks)
    hooks.clock.advance(1)
    await _subscribe(hooks, listener.url)
    assert await _step(hooks) == 0


async def test_the_test_event_goes_to_that_webhook_only(hooks: Hooks, listener: Receiver) -> None:
    principal = Principal.operator("acme")
    target, secret = await _subscribe(hooks, listener.url, "budget.exhausted")
    await _subscribe(hooks, listener.url, "*")
    queued = await hooks.governor.webhooks.test_webhook(principal, target)
    assert queued.event_type == "webhook.test"
    assert await _step(hooks) == 1
    [got] = listener.received
    assert got.verify(secret)["type"] == "webhook.test"  # type: ignore[index]


async def test_urls_the_outbound_guard_refuses_are_refused_at_registration(hooks: Hooks) -> None:
    principal = Principal.operator("acme")
    for url in (
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/hook",
        "http://example.com/hook",  # plain http to a public host: https is required
        "ftp://example.com/hook",
        "https:///nohost",
    ):
        with pytest.raises(OutboundRefused):
            await hooks.governor.webhooks.create_webhook(principal, url=url, events=["*"])


async def test_attempts_recorded_while_the_webhook_is_deleted_never_deadlock(
    hooks: Hooks, listener: Receiver
) -> None:
    principal = Principal.operator("acme")
    webhook_id, _ = await _subscribe(hooks, listener.url)
    for _ in range(20):
        await hooks.governor.webhooks.test_webhook(principal, webhook_id)
    store = hooks.store.webhooks
    now = hooks.clock.now()
    claimed = await store.claim(now=now, until=now + timedelta(seconds=60), limit=50)
    assert len(claimed) == 20

    async def record(one: Claimed) -> bool:
        failed = Attempt(1, now, 500, 3, "answered 500", now + timedelta(seconds=5))
        return await store.record_attempt(one, failed, retries=1, disabled_reason=lambda _: "")

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for one in claimed:
                tg.start_soon(record, one)
            tg.start_soon(store.delete_webhook, "acme", webhook_id)
    assert (await hooks.governor.webhooks.list_deliveries(principal)).items == []
    assert await store.get_webhook("acme", webhook_id) is None
