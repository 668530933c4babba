"""Webhooks: a tenant's subscriptions (signing secret shown once, sealed in the Vault at rest), secret
rotation with a grace period, test events, and the deliveries with their attempts. Reading needs the key
scope `webhooks:read`, changing `webhooks:write`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from haldir.core import ids
from haldir.core.clock import Clock
from haldir.core.keys import Principal
from haldir.core.pagination import MAX_PAGE, Page, decode_cursor
from haldir.core.webhook_signing import new_secret, secret_key
from haldir.core.webhooks import (
    DELIVERY,
    DELIVERY_STATUSES,
    WEBHOOK,
    Delivery,
    SealedSecret,
    Target,
    Webhook,
    subscribed_events,
)
from haldir.errors import Conflict, InvalidRequest, NotFound
from haldir.governor.fields import text_field
from haldir.governor.vault import Vault
from haldir.proxy.outbound import check_outbound_url
from haldir.store.ports import WebhookStore

MAX_WEBHOOKS = 100  # per tenant
MAX_URL = 2048
MAX_DESCRIPTION = 500
DEFAULT_SECRET_GRACE = timedelta(hours=24)


@dataclass(frozen=True, repr=False)
class CreatedWebhook:
    """A webhook and its signing secret, which is shown this once."""

    webhook: Webhook
    secret: str

    def __repr__(self) -> str:  # the secret never reaches a log line through a repr
        return f"CreatedWebhook(webhook_id={self.webhook.webhook_id!r})"


class Webhooks:
    def __init__(
        self,
        *,
        webhook_store: WebhookStore,
        vault: Vault,
        clock: Clock,
        outbound_allow: Sequence[IPv4Network | IPv6Network] = (),
        secret_grace: timedelta = DEFAULT_SECRET_GRACE,
    ) -> None:
        self._store = webhook_store
        self._vault = vault
        self._clock = clock
        self._outbound_allow = tuple(outbound_allow)
        self._secret_grace = secret_grace

    async def create_webhook(
        self, principal: Principal, *, url: str, events: Sequence[object], description: str = ""
    ) -> CreatedWebhook:
        """Subscribe `url` to `events`. The URL passes the SSRF check (https unless its network is in
        HALDIR_OUTBOUND_ALLOW); the signing secret is returned here and never again."""
        principal.require("webhooks:write")
        url = await self.check_url(url)
        chosen = subscribed_events(events)
        if description:
            description = text_field(description, field="description", max_length=MAX_DESCRIPTION)
        tenant_id = principal.tenant_id
        if await self._store.count_webhooks(tenant_id) >= MAX_WEBHOOKS:
            raise Conflict(
                f"tenant {tenant_id} has {MAX_WEBHOOKS} webhooks, the most it may have; delete one"
            )
        now = self._clock.now()
        webhook = Webhook(
            tenant_id=tenant_id,
            webhook_id=ids.new_id(WEBHOOK),
            url=url,
            events=chosen,
            description=description,
            enabled=True,
            disabled_reason=None,
            failing_since=None,
            created_at=now,
            updated_at=now,
        )
        secret = new_secret()
        await self._store.insert_webhook(webhook, await self._seal(webhook, secret, version=1))
        return CreatedWebhook(webhook, secret)

    async def check_url(self, url: str) -> str:
        url = text_field(url, field="url", max_length=MAX_URL).strip()
        await check_outbound_url(url, self._outbound_allow, https_unless_allowed=True)
        return url

    async def list_webhooks(self, principal: Principal) -> list[Webhook]:
        principal.require("webhooks:read")
        return await self._store.list_webhooks(principal.tenant_id)

    async def get_webhook(self, principal: Principal, webhook_id: str) -> Webhook:
        principal.require("webhooks:read")
        return await self._webhook(principal.tenant_id, webhook_id)

    async def delete_webhook(self, principal: Principal, webhook_id: str) -> Webhook:
        """Delete a webhook; its deliveries, pending or not, go with it."""
        principal.require("webhooks:write")
        deleted = await self._store.delete_webhook(principal.tenant_id, _webhook_id(webhook_id))
        if deleted is None:
            raise _no_webhook(webhook_id)
        return deleted

    async def rotate_secret(self, principal: Principal, webhook_id: str) -> CreatedWebhook:
        """A new signing secret, shown once; the one it replaces signs too for the grace period, so
        receivers can switch without losing a delivery."""
        principal.require("webhooks:write")
        tenant_id = principal.tenant_id
        target = await self._store.target(tenant_id, _webhook_id(webhook_id))
        if target is None:
            raise _no_webhook(webhook_id)
        webhook = await self._webhook(tenant_id, webhook_id)
        secret = new_secret()
        version = target.current.version + 1
        now = self._clock.now()
        rotated = await self._store.rotate_secret(
            tenant_id,
            webhook.webhook_id,
            current_version=target.current.version,
            secret=await self._seal(webhook, secret, version=version),
            at=now,
            previous_until=now + self._secret_grace,
        )
        if rotated is None:
            raise Conflict(
                f"webhook {webhook_id}'s secret was rotated by another request meanwhile; try again"
            )
        return CreatedWebhook(rotated, secret)

    async def enable_webhook(self, principal: Principal, webhook_id: str) -> Webhook:
        """Enable a webhook that was disabled after failing for a day (or any webhook: a no-op then);
        new events go to it again. Deliveries that failed meanwhile stay failed: redeliver them."""
        principal.require("webhooks:write")
        enabled = await self._store.enable_webhook(
            principal.tenant_id, _webhook_id(webhook_id), at=self._clock.now()
        )
        if enabled is None:
            raise _no_webhook(webhook_id)
        return enabled

    async def test_webhook(self, principal: Principal, webhook_id: str) -> Delivery:
        """Queue a `webhook.test` event for this webhook only (whatever it subscribes to)."""
        principal.require("webhooks:write")
        data: dict[str, Any] = {"webhook_id": webhook_id, "message": "a test event from Haldir"}
        queued = await self._store.queue_test(
            principal.tenant_id, _webhook_id(webhook_id), data=data, at=self._clock.now()
        )
        if queued is None:
            raise _no_webhook(webhook_id)
        return queued

    async def list_deliveries(
        self,
        principal: Principal,
        *,
        webhook_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Delivery]:
        """The tenant's deliveries, newest first, each with its attempts."""
        principal.require("webhooks:read")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be from 1 to {MAX_PAGE}, got {limit}")
        if status is not None and status not in DELIVERY_STATUSES:
            raise InvalidRequest(f"status must be one of {sorted(DELIVERY_STATUSES)}, got {status!r}")
        if webhook_id is not None and not ids.is_id(WEBHOOK, webhook_id):
            raise InvalidRequest(f"webhook_id must be a webhook id ({WEBHOOK}_…), got {webhook_id!r}")
        return await self._store.list_deliveries(
            principal.tenant_id,
            webhook_id=webhook_id,
            status=status,
            limit=limit,
            after=decode_cursor(cursor),
        )

    async def redeliver(self, principal: Principal, delivery_id: str) -> Delivery:
        """Queue a delivery again, due now, at the start of the retry schedule (one being sent this moment
        is left to that attempt)."""
        principal.require("webhooks:write")
        if not ids.is_id(DELIVERY, delivery_id):
            raise _no_delivery(delivery_id)
        queued = await self._store.redeliver(principal.tenant_id, delivery_id, now=self._clock.now())
        if queued is None:
            raise _no_delivery(delivery_id)
        return queued

    async def signing_keys(self, target: Target) -> list[bytes]:
        """The HMAC keys that sign a delivery to `target` now: the current secret's, and the previous
        one's during its grace period."""
        name = _sealed_name(target.webhook_id)
        keys = []
        for sealed in target.signing(self._clock.now()):
            secret = await self._vault.open_internal(
                target.tenant_id,
                name=name,
                version=sealed.version,
                data_key_version=sealed.data_key_version,
                sealed=sealed.sealed,
            )
            keys.append(secret_key(secret.decode("ascii")))
        return keys

    async def _seal(self, webhook: Webhook, secret: str, *, version: int) -> SealedSecret:
        data_key_version, sealed = await self._vault.seal_internal(
            webhook.tenant_id,
            name=_sealed_name(webhook.webhook_id),
            version=version,
            value=secret.encode("ascii"),
        )
        return SealedSecret(sealed, version, data_key_version)

    async def _webhook(self, tenant_id: str, webhook_id: str) -> Webhook:
        found = await self._store.get_webhook(tenant_id, _webhook_id(webhook_id))
        if found is None:
            raise _no_webhook(webhook_id)
        return found


def _sealed_name(webhook_id: str) -> str:
    # A `/` makes it a name no stored secret can have: a sealed webhook secret never opens as a secret.
    return f"webhook/{webhook_id}"


def _webhook_id(webhook_id: str) -> str:
    if not ids.is_id(WEBHOOK, webhook_id):
        raise _no_webhook(webhook_id)
    return webhook_id


def _no_webhook(webhook_id: str) -> NotFound:
    return NotFound(f"no webhook {webhook_id[:80]!r} in this tenant; list them with GET /v1/webhooks")


def _no_delivery(delivery_id: str) -> NotFound:
    return NotFound(
        f"no delivery {delivery_id[:80]!r} in this tenant; list them with GET /v1/webhooks/deliveries"
    )
