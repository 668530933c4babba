"""Webhooks: the events a subscription may name, webhooks and their deliveries as values, the body a
delivery carries, and the retry schedule. Pure: no store, network or clock."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from haldir.core import ids
from haldir.core.clock import isoformat
from haldir.core.money import format_micros
from haldir.core.sessions import Session
from haldir.errors import InvalidRequest

WEBHOOK = ids.WEBHOOK  # id prefix of a webhook
DELIVERY = ids.WEBHOOK_DELIVERY  # id prefix of a delivery (one event to one webhook)

APPROVAL_REQUESTED = "approval.requested"
APPROVAL_DECIDED = "approval.decided"
AUDIT_FLAGGED = "audit.flagged"
BUDGET_THRESHOLD = "budget.threshold"
BUDGET_EXHAUSTED = "budget.exhausted"
TOOL_DEFINITION_CHANGED = "tool.definition_changed"
SESSION_REVOKED = "session.revoked"
WEBHOOK_TEST = "webhook.test"
EVENT_TYPES = frozenset(
    {
        APPROVAL_REQUESTED,
        APPROVAL_DECIDED,
        AUDIT_FLAGGED,
        BUDGET_THRESHOLD,
        BUDGET_EXHAUSTED,
        TOOL_DEFINITION_CHANGED,
        SESSION_REVOKED,
        WEBHOOK_TEST,
    }
)
ALL_EVENTS = "*"  # a subscription to every event type, those added later included

# Waits after the 1st, 2nd, … failed attempt; after the last one fails the delivery is `failed`.
RETRY_SCHEDULE: tuple[timedelta, ...] = tuple(
    timedelta(seconds=s) for s in (5, 30, 120, 600, 3600, 6 * 3600, 24 * 3600)
)
MAX_ATTEMPTS = len(RETRY_SCHEDULE) + 1
JITTER = 0.2  # each wait is its schedule's value ± 20 %
THRESHOLD_PERCENT = 80  # budget.threshold: a charge that takes a session's spend to this share of its limit
DISABLE_AFTER = timedelta(hours=24)  # a webhook with no success for this long since it began failing
MAX_ERROR_CHARS = 500

DeliveryStatus = Literal["pending", "delivered", "failed"]
DELIVERY_STATUSES: frozenset[str] = frozenset({"pending", "delivered", "failed"})


@dataclass(frozen=True)
class Webhook:
    """A tenant's subscription: where to POST which events. Its signing secret is sealed in the store
    and never part of this value."""

    tenant_id: str
    webhook_id: str
    url: str
    events: tuple[str, ...]
    description: str
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime
    previous_secret_expires_at: datetime | None = None

    def wants(self, event_type: str) -> bool:
        return ALL_EVENTS in self.events or event_type in self.events


@dataclass(frozen=True)
class Attempt:
    """One POST of a delivery: its answer (status code, or the error that stood for it) and when the next
    one is due (None: none is)."""

    number: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    next_attempt_at: datetime | None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class Delivery:
    """One event on its way to one webhook. `event_id` is the `webhook-id` of every attempt, so a
    receiver can drop repeats; `body` is the exact bytes signed and sent."""

    tenant_id: str
    delivery_id: str
    webhook_id: str
    event_id: str
    event_type: str
    body: str
    status: DeliveryStatus
    attempts: int  # attempts made, over every round
    retries: int  # failed attempts since it was last queued: where it is in the retry schedule
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    history: tuple[Attempt, ...] = ()


@dataclass(frozen=True)
class Claimed:
    """A delivery this process holds the lease on until `claimed_until`; `lease` is the token that lets
    it record the outcome (after the lease passed to another process, it no longer does)."""

    delivery: Delivery
    lease: str
    claimed_until: datetime


def subscribed_events(events: Iterable[object]) -> tuple[str, ...]:
    """The event types of a subscription, checked, deduplicated and sorted; `*` means all of them."""
    names = list(events)
    if not names:
        raise InvalidRequest(
            f"a webhook needs at least one event type: {sorted(EVENT_TYPES)} or '*'", field="events"
        )
    unknown = [name for name in names if not isinstance(name, str) or name not in EVENT_TYPES | {ALL_EVENTS}]
    if unknown:
        raise InvalidRequest(
            f"unknown event type(s) {unknown!r}; expected some of {sorted(EVENT_TYPES)} or '*'",
            field="events",
        )
    chosen = {str(name) for name in names}
    return (ALL_EVENTS,) if ALL_EVENTS in chosen else tuple(sorted(chosen))


def event_body(event_type: str, created_at: datetime, data: Mapping[str, Any]) -> str:
    """The JSON body of a delivery: `{"type", "timestamp", "data"}`, compact, keys sorted."""
    envelope = {"type": event_type, "timestamp": isoformat(created_at), "data": data}
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def next_attempt(retries: int, *, failed_at: datetime, jitter: float) -> datetime | None:
    """When to try again after the `retries`-th failure in a row (1 for the first), `jitter` in [0, 1)
    spreading the wait over ± `JITTER`; None once the schedule is used up (the delivery has failed)."""
    if not 1 <= retries <= len(RETRY_SCHEDULE):
        return None
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    wait = RETRY_SCHEDULE[retries - 1]
    return failed_at + wait * (1 - JITTER + 2 * JITTER * jitter)


def should_disable(failing_since: datetime | None, *, now: datetime) -> bool:
    """Whether a webhook has failed, with no success in between, for `DISABLE_AFTER` or longer."""
    return failing_since is not None and now - failing_since >= DISABLE_AFTER


def error_text(error: str) -> str:
    """An attempt's error as recorded: one line, bounded."""
    line = " ".join(error.split())
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"


@dataclass(frozen=True)
class SealedSecret:
    """A signing secret sealed under the tenant's Vault data key `data_key_version`; `version` counts
    the webhook's secrets (1, then one more per rotation) and is bound into the seal."""

    sealed: bytes
    version: int
    data_key_version: int


@dataclass(frozen=True)
class Target:
    """What a worker needs to send a webhook its deliveries: the URL and the sealed secrets that sign
    (the previous one only until `previous_expires_at`)."""

    tenant_id: str
    webhook_id: str
    url: str
    current: SealedSecret
    previous: SealedSecret | None
    previous_expires_at: datetime | None

    def signing(self, now: datetime) -> tuple[SealedSecret, ...]:
        if self.previous is None or self.previous_expires_at is None or self.previous_expires_at <= now:
            return (self.current,)
        return (self.current, self.previous)


def session_revoked_data(session: Session) -> dict[str, Any]:
    """The data of `session.revoked`."""
    return {
        "session_id": session.session_id,
        "agent_id": session.agent_id,
        "revoked_at": None if session.revoked_at is None else isoformat(session.revoked_at),
        "spent_usd": format_micros(session.spent_micros),
        "spend_limit_usd": format_micros(session.spend_limit_micros),
    }


def crossed_threshold(before_micros: int, after_micros: int, limit_micros: int) -> bool:
    """Whether a charge took spend from below `THRESHOLD_PERCENT` of the limit to at least that."""
    if limit_micros <= 0:
        return False
    mark = limit_micros * THRESHOLD_PERCENT
    return before_micros * 100 < mark <= after_micros * 100


def tool_changed_data(upstream: str, tool: str, *, pinned_hash: str, current_hash: str) -> dict[str, Any]:
    """The data of `tool.definition_changed`: calls to the tool wait until an operator approves it."""
    return {"upstream": upstream, "tool": tool, "pinned_hash": pinned_hash, "current_hash": current_hash}
