"""The delivery worker of one server process: fans outbox events out into deliveries, claims due ones
under a lease, sends them signed (Standard Webhooks), and records every attempt.

At-least-once: a delivery is leased (the claim commits) before it is sent, and its outcome is recorded
after; a process that dies in between leaves a lease that runs out, and then any worker sends it again,
with the same `webhook-id`. Several processes and replicas share the work through the store.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from haldir.core.clock import Clock, isoformat
from haldir.core.webhook_signing import headers
from haldir.core.webhooks import Attempt, Claimed, Target, error_text, next_attempt
from haldir.errors import HaldirError
from haldir.governor.webhooks import Webhooks
from haldir.runtime import Runtime
from haldir.settings import Settings
from haldir.store.outbox import Outbox
from haldir.store.ports import WebhookStore
from haldir.webhooks.sender import HttpSender, Sent

BATCH = 200  # events fanned out per transaction
CONCURRENCY = 64  # deliveries in flight per process

log = structlog.get_logger("haldir.webhooks")


class Sender(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Sent: ...


class DeliveryWorker:
    def __init__(
        self,
        *,
        store: WebhookStore,
        webhooks: Webhooks,
        sender: Sender,
        clock: Clock,
        outbox: Outbox | None = None,
        poll_seconds: float = 1.0,
        coalesce_seconds: float = 0.05,
        lease_seconds: float = 60.0,
        concurrency: int = CONCURRENCY,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._webhooks = webhooks
        self._sender = sender
        self._clock = clock
        self._outbox = outbox or Outbox()
        self._poll = poll_seconds
        self._coalesce = coalesce_seconds
        self._lease = timedelta(seconds=lease_seconds)
        self._concurrency = concurrency
        self._jitter = jitter
        self._in_flight: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Deliver until cancelled: wake on an event committed in this process, a finished delivery, or
        every `poll_seconds` (events of other processes, retries coming due). A wake waits
        `coalesce_seconds` first, so that a busy agent's events fan out many to a transaction."""
        woken = True  # at start there may be work: look without probing first
        try:
            while True:
                try:
                    await self._fan_out(probe=not woken)
                    free = self._concurrency - len(self._in_flight)
                    if free > 0:
                        # Probed even when woken: most events (audit.flagged) have no subscriber, so a
                        # read first spares a write transaction per event.
                        for claimed, target in await self._claim(free):
                            task = asyncio.create_task(self._send_one(claimed, target, wake=True))
                            self._in_flight.add(task)
                            task.add_done_callback(self._in_flight.discard)
                except (HaldirError, OSError) as exc:  # the store is down: try again at the next poll
                    log.warning("webhooks.worker_failed", error=type(exc).__name__, message=str(exc)[:200])
                except Exception:  # a bug must not stop this process's deliveries for good: log it, go on
                    log.exception("webhooks.worker_crashed")
                woken = await self._outbox.wait(seconds=self._poll)
                if woken:  # gather the events committing meanwhile into the same fan-out transaction
                    await asyncio.sleep(self._coalesce)
        finally:
            for task in self._in_flight:
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def step(self) -> int:
        """One pass, to completion: fan out every event, then send every due delivery and record its
        attempt; how many were attempted. Tests drive the worker with this and a fake clock."""
        await self._fan_out()
        attempted = 0
        while claimed := await self._claim(self._concurrency):
            await asyncio.gather(*(self._send_one(one, target, wake=False) for one, target in claimed))
            attempted += len(claimed)
        return attempted

    async def _fan_out(self, *, probe: bool = True) -> None:
        while await self._store.fan_out(now=self._clock.now(), limit=BATCH, probe=probe) == BATCH:
            pass

    async def _claim(self, limit: int, *, probe: bool = True) -> list[tuple[Claimed, Target | None]]:
        """Due deliveries leased to this process, each with where it goes (None: deleted meanwhile).
        `probe` first reads whether any is due: cheaper when idle, a round trip more when busy."""
        now = self._clock.now()
        claimed = await self._store.claim(now=now, until=now + self._lease, limit=limit, probe=probe)
        if not claimed:
            return []
        targets = await self._store.targets([(c.delivery.tenant_id, c.delivery.webhook_id) for c in claimed])
        return [(c, targets.get((c.delivery.tenant_id, c.delivery.webhook_id))) for c in claimed]

    async def _send_one(self, claimed: Claimed, target: Target | None, *, wake: bool) -> None:
        delivery = claimed.delivery
        try:
            if target is None:  # deleted since the claim: its deliveries went with it
                return
            await self._attempt(claimed, target)
        except Exception as exc:  # one delivery's failure must not stop the others; its lease runs out
            log.error(
                "webhooks.delivery_crashed",
                delivery_id=delivery.delivery_id,
                tenant_id=delivery.tenant_id,
                error=type(exc).__name__,
            )
        finally:
            if wake:
                self._outbox.notify()  # a slot is free: claim more

    async def _attempt(self, claimed: Claimed, target: Target) -> None:
        delivery = claimed.delivery
        started = self._clock.now()
        body = delivery.body.encode()
        signed = headers(
            await self._webhooks.signing_keys(target),
            message_id=delivery.event_id,
            timestamp=int(started.timestamp()),
            body=body,
        )
        sent = await self._sender.post(target.url, body, signed)
        succeeded = sent.error is None and sent.status_code is not None and 200 <= sent.status_code < 300
        retries = delivery.retries if succeeded else delivery.retries + 1
        attempt = Attempt(
            number=delivery.attempts + 1,
            attempted_at=started,
            status_code=sent.status_code,
            latency_ms=sent.latency_ms,
            error=None if sent.error is None else error_text(sent.error),
            next_attempt_at=None
            if succeeded
            else next_attempt(retries, failed_at=self._clock.now(), jitter=self._jitter()),
        )
        recorded = await self._store.record_attempt(
            claimed, attempt, retries=retries, disabled_reason=_disabled_reason(attempt)
        )
        log.info(
            "webhooks.attempt",
            delivery_id=delivery.delivery_id,
            webhook_id=delivery.webhook_id,
            tenant_id=delivery.tenant_id,
            attempt=attempt.number,
            status_code=attempt.status_code,
            error=attempt.error,
            recorded=recorded,
        )


def _disabled_reason(attempt: Attempt) -> Callable[[datetime], str]:
    def reason(failing_since: datetime) -> str:
        last = attempt.error or f"answered {attempt.status_code}"
        return (
            f"disabled at {isoformat(attempt.attempted_at)}: no delivery succeeded since "
            f"{isoformat(failing_since)} (last attempt: {last})"
        )

    return reason


@asynccontextmanager
async def delivery_worker(
    settings: Settings, runtime: Runtime, *, clock: Clock | None = None
) -> AsyncIterator[DeliveryWorker]:
    """The delivery worker of a server process, configured from `settings`; its HTTP client is closed
    when the block ends (after the caller has stopped `run`)."""
    sender = HttpSender(outbound_allow=settings.outbound_allow, timeout=settings.webhook_timeout_seconds)
    try:
        yield DeliveryWorker(
            store=runtime.store.webhooks,
            webhooks=runtime.governor.webhooks,
            sender=sender,
            clock=clock or runtime.governor.clock,
            outbox=runtime.store.outbox,
            poll_seconds=settings.webhook_poll_seconds,
            lease_seconds=settings.webhook_lease_seconds,
        )
    finally:
        await sender.aclose()
