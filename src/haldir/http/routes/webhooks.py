"""Webhooks over HTTP: subscriptions (the signing secret shown once), secret rotation, test events,
and deliveries with their attempts."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from haldir.core.pagination import MAX_PAGE, encode_cursor
from haldir.core.webhooks import Attempt, Delivery, Webhook
from haldir.governor.webhooks import CreatedWebhook
from haldir.http.auth import GovernorDep, PrincipalDep
from haldir.http.errors import ERROR_RESPONSES
from haldir.http.schemas import OptionalTimestamp, Timestamp

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=ERROR_RESPONSES)


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2048, description="`https://…` (plain http only when allowed).")
    events: list[str] = Field(min_length=1, max_length=20, description='Event types, or `["*"]` for all.')
    description: str = Field(default="", max_length=500)


class NoBody(BaseModel):
    """No fields: an empty object or no body at all."""

    model_config = ConfigDict(extra="forbid")


class WebhookOut(BaseModel):
    webhook_id: str
    url: str
    events: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    failing_since: OptionalTimestamp
    previous_secret_expires_at: OptionalTimestamp
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, webhook: Webhook) -> WebhookOut:
        return cls(
            webhook_id=webhook.webhook_id,
            url=webhook.url,
            events=list(webhook.events),
            description=webhook.description,
            enabled=webhook.enabled,
            disabled_reason=webhook.disabled_reason,
            failing_since=webhook.failing_since,
            previous_secret_expires_at=webhook.previous_secret_expires_at,
            created_at=webhook.created_at,
            updated_at=webhook.updated_at,
        )


class WebhookCreated(WebhookOut):
    secret: str = Field(description="The signing secret (`whsec_…`), shown this once.")

    @classmethod
    def made(cls, created: CreatedWebhook) -> WebhookCreated:
        return cls(**WebhookOut.of(created.webhook).model_dump(), secret=created.secret)


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class AttemptOut(BaseModel):
    attempt: int
    attempted_at: Timestamp
    status_code: int | None
    latency_ms: int
    error: str | None
    next_attempt_at: OptionalTimestamp

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptOut:
        return cls(
            attempt=attempt.number,
            attempted_at=attempt.attempted_at,
            status_code=attempt.status_code,
            latency_ms=attempt.latency_ms,
            error=attempt.error,
            next_attempt_at=attempt.next_attempt_at,
        )


class DeliveryOut(BaseModel):
    delivery_id: str
    webhook_id: str
    event_id: str = Field(description="The `webhook-id` header of every attempt: deduplicate by it.")
    event_type: str
    status: str
    attempts: int
    next_attempt_at: OptionalTimestamp
    created_at: Timestamp
    updated_at: Timestamp
    payload: dict[str, Any]
    history: list[AttemptOut]

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryOut:
        return cls(
            delivery_id=delivery.delivery_id,
            webhook_id=delivery.webhook_id,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            status=delivery.status,
            attempts=delivery.attempts,
            next_attempt_at=delivery.next_attempt_at,
            created_at=delivery.created_at,
            updated_at=delivery.updated_at,
            payload=json.loads(delivery.body),
            history=[AttemptOut.of(attempt) for attempt in delivery.history],
        )


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]
    next_cursor: str | None


@router.post("", status_code=201, response_model=WebhookCreated)
async def create_webhook(body: WebhookCreate, gov: GovernorDep, who: PrincipalDep) -> WebhookCreated:
    created = await gov.webhooks.create_webhook(
        who, url=body.url, events=body.events, description=body.description
    )
    return WebhookCreated.made(created)


@router.get("", response_model=WebhookList)
async def list_webhooks(gov: GovernorDep, who: PrincipalDep) -> WebhookList:
    return WebhookList(webhooks=[WebhookOut.of(hook) for hook in await gov.webhooks.list_webhooks(who)])


# Declared before `/{webhook_id}`, which would otherwise match `deliveries`.
@router.get("/deliveries", response_model=DeliveryList)
async def list_deliveries(
    gov: GovernorDep,
    who: PrincipalDep,
    webhook_id: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> DeliveryList:
    page = await gov.webhooks.list_deliveries(
        who, webhook_id=webhook_id, status=status, limit=limit, cursor=cursor
    )
    return DeliveryList(
        deliveries=[DeliveryOut.of(d) for d in page.items], next_cursor=encode_cursor(page.next)
    )


@router.post("/deliveries/{delivery_id}/redeliver", status_code=202, response_model=DeliveryOut)
async def redeliver(
    delivery_id: str, gov: GovernorDep, who: PrincipalDep, body: NoBody | None = None
) -> DeliveryOut:
    return DeliveryOut.of(await gov.webhooks.redeliver(who, delivery_id))


@router.get("/{webhook_id}", response_model=WebhookOut)
async def get_webhook(webhook_id: str, gov: GovernorDep, who: PrincipalDep) -> WebhookOut:
    return WebhookOut.of(await gov.webhooks.get_webhook(who, webhook_id))


@router.delete("/{webhook_id}", response_model=WebhookOut)
async def delete_webhook(webhook_id: str, gov: GovernorDep, who: PrincipalDep) -> WebhookOut:
    return WebhookOut.of(await gov.webhooks.delete_webhook(who, webhook_id))


@router.post("/{webhook_id}/rotate-secret", response_model=WebhookCreated)
async def rotate_secret(
    webhook_id: str, gov: GovernorDep, who: PrincipalDep, body: NoBody | None = None
) -> WebhookCreated:
    return WebhookCreated.made(await gov.webhooks.rotate_secret(who, webhook_id))


@router.post("/{webhook_id}/enable", response_model=WebhookOut)
async def enable_webhook(
    webhook_id: str, gov: GovernorDep, who: PrincipalDep, body: NoBody | None = None
) -> WebhookOut:
    return WebhookOut.of(await gov.webhooks.enable_webhook(who, webhook_id))


@router.post("/{webhook_id}/test", status_code=202, response_model=DeliveryOut)
async def send_test_event(
    webhook_id: str, gov: GovernorDep, who: PrincipalDep, body: NoBody | None = None
) -> DeliveryOut:
    return DeliveryOut.of(await gov.webhooks.test_webhook(who, webhook_id))
