"""The outbox: events recorded in the transaction that caused them, and the signal that wakes this
process's delivery worker once such a transaction committed (other processes' events it finds by
polling)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from haldir.core import ids
from haldir.core.anomalies import EVENT
from haldir.store.schema import events
from haldir.store.transaction import Writing


class Outbox:
    """Rung when a transaction of this process that recorded an event has committed (or when the
    worker has room for more deliveries)."""

    def __init__(self) -> None:
        self._committed = asyncio.Event()

    def notify(self) -> None:
        self._committed.set()

    async def wait(self, *, seconds: float) -> bool:
        """Wait until an event committed since the last wait, or `seconds`; True on an event."""
        try:
            async with asyncio.timeout(seconds):
                await self._committed.wait()
        except TimeoutError:
            return False
        self._committed.clear()
        return True


def event_row(tenant_id: str, type: str, payload: dict[str, Any], *, at: datetime) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "event_id": ids.new_id(EVENT),
        "type": type,
        "payload": payload,
        "created_at": at,
        "delivered_at": None,
    }


async def record_event(
    conn: Writing, tenant_id: str, type: str, payload: dict[str, Any], *, at: datetime
) -> str:
    """Record an event in the caller's transaction; the delivery worker hears of it once it commits."""
    row = event_row(tenant_id, type, payload, at=at)
    await conn.execute(sa.insert(events).values(**row))
    conn.wrote_events = True
    return str(row["event_id"])
