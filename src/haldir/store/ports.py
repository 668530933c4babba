"""Persistence ports. The governor depends on these Protocols; `store.sql` implements them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from haldir.core.anomalies import AnomalySettings, Rule
from haldir.core.approvals import Approval, ApprovalRule
from haldir.core.evidence_facts import DeliveryTotals, LedgerPeriod, PaymentTotals, SessionTotals, VaultKeys
from haldir.core.idempotency import IdempotencyClaim, Outcome
from haldir.core.keys import ApiKey
from haldir.core.ledger import EntryDraft, EntryFilter, StoredCheckpoint, StoredEntry
from haldir.core.merkle import NodeId
from haldir.core.pagination import Page, Position
from haldir.core.payments import Payment
from haldir.core.policies import Policy
from haldir.core.quotas import Quota
from haldir.core.secrets import SecretInfo, SecretVersion, WrappedDataKey
from haldir.core.sessions import Session
from haldir.core.tools import OpenCall, SeenTool, ToolChanges, ToolPin, Upstream
from haldir.core.usage import Deployment, Tally, Tenant
from haldir.core.webhooks import Attempt, Claimed, Delivery, SealedSecret, Target, Webhook
from haldir.store.transaction import PendingEntry


class KeyStore(Protocol):
    async def bootstrap_tenant(self, key: ApiKey, *, key_hash: str) -> bool:
        """Create `key.tenant_id` with `key` as its first key, only if the tenant does not exist yet."""
        ...

    async def insert_key(
        self, key: ApiKey, *, key_hash: str, idempotency: IdempotencyClaim | None = None
    ) -> Outcome[ApiKey]:
        """Store a key, creating its tenant on first use; a replayed claim returns the earlier key."""
        ...

    async def find_key(self, prefix: str) -> tuple[ApiKey, str] | None:
        """The key named `prefix` and its hash, across tenants: this is how a request's tenant is found."""
        ...

    async def list_keys(self, tenant_id: str) -> list[ApiKey]: ...

    async def revoke_key(self, tenant_id: str, prefix: str, *, at: datetime) -> ApiKey | None: ...


class SessionStore(Protocol):
    async def insert_session(
        self, session: Session, *, idempotency: IdempotencyClaim | None = None
    ) -> Outcome[Session]: ...

    async def get_session(self, tenant_id: str, session_id: str) -> Session | None: ...

    async def list_sessions(
        self,
        tenant_id: str,
        *,
        agent_id: str | None,
        active: bool | None,
        now: datetime,
        limit: int,
        after: Position | None,
    ) -> Page[Session]: ...

    async def revoke_session(self, tenant_id: str, session_id: str, *, at: datetime) -> Session | None:
        """Revoke at `at` unless already revoked; the session as stored afterwards."""
        ...


class LedgerStore(Protocol):
    """Per-tenant append-only logs: entries, complete Merkle subtree nodes, signed checkpoints,
    and the anomaly rules that flag entries."""

    async def append(self, draft: EntryDraft) -> StoredEntry:
        """Judge and append after every committed entry of the tenant; return once durable. Never forks.

        The store judges a draft (`EntryDraft.build`) where it appends it, against the tenant's rules and
        the session's latest entries read in the appending transaction. A flagged entry commits together
        with one `audit.flagged` event in the outbox.
        """
        ...

    async def add_rule(self, tenant_id: str, rule: Rule) -> None: ...

    async def list_rules(self, tenant_id: str) -> list[Rule]: ...

    async def delete_rule(self, tenant_id: str, rule_id: str) -> Rule | None:
        """Delete a rule of the tenant; the deleted rule, or None when there was none."""
        ...

    async def size(self, tenant_id: str) -> int: ...

    async def get(self, tenant_id: str, entry_id: str) -> StoredEntry | None: ...

    async def page(
        self, tenant_id: str, *, where: EntryFilter, limit: int, before: int | None, after: int | None = None
    ) -> list[StoredEntry]:
        """Newest first below `before`; oldest first above `after` when it is given (-1 for the start)."""
        ...

    def scan(self, tenant_id: str, *, start: int = 0, chunk: int = 1000) -> AsyncIterator[StoredEntry]: ...

    async def nodes(self, tenant_id: str, wanted: set[NodeId]) -> dict[NodeId, bytes]: ...

    async def spend(
        self, tenant_id: str, *, where: EntryFilter
    ) -> list[tuple[str | None, str | None, str, int, int]]: ...

    async def latest_checkpoint(self, tenant_id: str) -> StoredCheckpoint | None: ...

    async def save_checkpoint(self, tenant_id: str, checkpoint: StoredCheckpoint) -> None: ...

    async def record_log_key(self, vkey: str, *, at: datetime) -> str: ...


class SpendTransaction(Protocol):
    """One write transaction over a tenant's budgets, payments and ledger: all of it commits or none.

    Lock order in every spend: payment row or rate-limit counters, then session row, then spend-limit
    counters, then the tenant's ledger head; counters in (policy id, subject) order.
    """

    async def charge(
        self, session_id: str, micros: int, *, now: datetime, cap: int | None = None
    ) -> Session | None:
        """Add `micros` to the session's `spent` with one conditional UPDATE; the session afterwards.

        A charge (> 0) applies only while the session is valid and stays within its limit (and within
        `cap`, when given); a release (< 0) always applies. None when the condition did not hold."""
        ...

    async def record_spend(self, session_id: str, micros: int) -> Session | None:
        """Add `micros` (> 0) to the session's `spent` whatever its limit and validity: a logged cost
        that already happened. The session afterwards; None when there is no such session."""
        ...

    async def take_call(
        self, policy_id: str, subject: str, *, max_calls: int, window_start: datetime
    ) -> int | None:
        """Count a call against a rate limit's window with one conditional upsert; None when it is full."""
        ...

    async def charge_limit(self, policy_id: str, subject: str, micros: int, *, max_micros: int) -> int | None:
        """Add to a spend-limit counter with one conditional upsert; None when over `max_micros`."""
        ...

    async def release_limit(self, policy_id: str, subject: str, micros: int) -> None: ...

    async def session(self, session_id: str) -> Session | None: ...

    async def claim(self, request: IdempotencyClaim, resource_id: str, *, at: datetime) -> str | None:
        """Claim an Idempotency-Key in this transaction: None when new, else the earlier resource id."""
        ...

    async def insert_payment(self, payment: Payment) -> None: ...

    async def payment(self, payment_id: str) -> Payment | None:
        """The payment, locked until the transaction ends."""
        ...

    async def open_payments(self, session_id: str) -> list[Payment]:
        """The session's payments that hold money no logged cost was matched to, oldest first, locked
        until the transaction ends."""
        ...

    async def settle_payment(
        self, payment_id: str, *, status: str, captured_micros: int | None, now: datetime
    ) -> Payment | None:
        """Move an authorized payment to `status`; None unless it was still authorized."""
        ...

    async def report(self, payment_id: str, micros: int, *, now: datetime) -> Payment | None:
        """Count reported cost against the payment if it stays within what the payment holds."""
        ...

    async def open_call(self, call: OpenCall) -> None:
        """Remember an admitted call until its outcome is recorded."""
        ...

    async def close_call(self, call_id: str, *, outcome: str, at: datetime) -> bool:
        """Close an admitted call as its outcome is recorded; False when it was closed already."""
        ...

    async def count_release(self, name: str, *, at: datetime) -> None:
        """Count a release of the tenant's secret `name`."""
        ...

    def append(self, draft: EntryDraft) -> PendingEntry:
        """Queue the entry of this spend: appended last in the transaction; its `result()` once the
        transaction is over."""
        ...

    async def record_event(self, type: str, payload: dict[str, Any], *, at: datetime) -> None: ...

    async def consume_approval(self, binding: str, *, at: datetime) -> Approval | None:
        """Use the approved, unexpired request of `binding`; None when there is none to use."""
        ...


class PaymentStore(Protocol):
    def spend_transaction(self, tenant_id: str) -> AbstractAsyncContextManager[SpendTransaction]: ...

    async def get_payment(self, tenant_id: str, payment_id: str) -> Payment | None: ...

    async def list_payments(
        self, tenant_id: str, *, session_id: str | None, limit: int, after: Position | None
    ) -> Page[Payment]: ...


class VaultStore(Protocol):
    """Master key versions by check value, wrapped data keys, and sealed secret versions."""

    async def master_keys(self) -> dict[int, str]: ...

    async def register_master_key(self, check_value: str, *, at: datetime) -> int: ...

    async def data_key_counts(self) -> dict[int, int]: ...

    async def secret_counts(self) -> tuple[int, int]: ...

    async def data_key(self, tenant_id: str, version: int | None = None) -> WrappedDataKey | None: ...

    async def insert_data_key(self, key: WrappedDataKey) -> WrappedDataKey: ...

    async def data_keys_not_on(self, master_version: int, *, limit: int) -> list[WrappedDataKey]: ...

    async def rewrap(self, key: WrappedDataKey, *, master_version: int, wrapped: bytes) -> bool: ...

    async def latest_version(self, tenant_id: str, name: str) -> int: ...

    async def secret_version(
        self, tenant_id: str, name: str, version: int | None
    ) -> SecretVersion | None: ...

    async def insert_secret(
        self,
        tenant_id: str,
        name: str,
        *,
        created_at: datetime,
        seal: Callable[[int], SecretVersion],
        entry: Callable[[SecretVersion], EntryDraft],
        idempotency: IdempotencyClaim | None,
    ) -> Outcome[SecretVersion] | None:
        """Store the next version of `name`: `seal` makes it for the number read in the transaction;
        None when a concurrent store took that number first."""
        ...

    async def record_release(
        self, tenant_id: str, name: str, *, at: datetime, entry: EntryDraft
    ) -> StoredEntry: ...

    async def delete_secret(self, tenant_id: str, name: str, *, entry: EntryDraft) -> int: ...

    async def list_secrets(self, tenant_id: str, *, limit: int, after: str | None) -> list[SecretInfo]: ...

    async def secret_info(self, tenant_id: str, name: str) -> SecretInfo | None: ...


class ProxyStore(Protocol):
    """A tenant's upstreams, tool pins and policies; each change commits with its ledger entry."""

    async def insert_upstream(self, upstream: Upstream, *, entry: EntryDraft) -> bool:
        """Store a new upstream; False (nothing stored) when its name is taken."""
        ...

    async def get_upstream(self, tenant_id: str, name: str) -> Upstream | None: ...

    async def list_upstreams(self, tenant_id: str) -> list[Upstream]: ...

    async def delete_upstream(self, tenant_id: str, name: str, *, entry: EntryDraft) -> bool:
        """Delete an upstream and its tool pins; False when there was none."""
        ...

    async def list_tools(self, tenant_id: str, *, upstream: str | None = None) -> list[ToolPin]:
        """Tools their upstreams still list."""
        ...

    async def sync_tools(
        self,
        tenant_id: str,
        upstream: str,
        seen: list[SeenTool],
        *,
        at: datetime,
        entries: Callable[[ToolChanges], list[EntryDraft]],
    ) -> ToolChanges | None:
        """Update the pins to what the upstream lists now, with the entries `entries` makes of the
        changes, atomically; None when the upstream does not exist."""
        ...

    async def approve_tool(
        self, tenant_id: str, upstream: str, name: str, *, current_hash: str, at: datetime, entry: EntryDraft
    ) -> ToolPin | None:
        """Pin a changed tool's pending definition if it still has `current_hash`; None otherwise."""
        ...

    async def insert_policy(self, tenant_id: str, policy: Policy, *, entry: EntryDraft) -> None: ...

    async def list_policies(self, tenant_id: str) -> list[Policy]: ...

    async def delete_policy(
        self, tenant_id: str, policy_id: str, *, entry: Callable[[Policy], EntryDraft]
    ) -> Policy | None:
        """Delete a policy and its counters; None when there was none."""
        ...

    async def stale_calls(self, *, admitted_before: datetime, limit: int) -> list[OpenCall]:
        """Admitted calls of every tenant whose outcome is not recorded, admitted before the time."""
        ...

    async def get_call(self, tenant_id: str, call_id: str) -> OpenCall | None:
        """An admitted call, open or closed and not yet purged; None when the tenant has none."""
        ...

    async def purge_closed_calls(self, *, closed_before: datetime, limit: int) -> int:
        """Delete up to `limit` calls closed before the time (their ledger entries stay); how many."""
        ...


class ApprovalStore(Protocol):
    """Approval rules and requests. Each change of a request commits with its ledger entry and event."""

    async def insert_rule(self, tenant_id: str, rule: ApprovalRule, *, entry: EntryDraft) -> None: ...

    async def list_rules(self, tenant_id: str) -> list[ApprovalRule]: ...

    async def delete_rule(
        self, tenant_id: str, rule_id: str, *, entry: Callable[[ApprovalRule], EntryDraft]
    ) -> ApprovalRule | None: ...

    async def insert_approval(
        self, approval: Approval, *, entry: EntryDraft, lapse: Callable[[Approval], EntryDraft]
    ) -> Approval:
        """The new pending request, or the binding's open one when a racing request recorded it first."""
        ...

    async def get_approval(self, tenant_id: str, approval_id: str) -> Approval | None: ...

    async def latest_approval(self, tenant_id: str, binding: str) -> Approval | None: ...

    async def decide(
        self,
        tenant_id: str,
        approval_id: str,
        *,
        status: str,
        decided_by: str | None,
        note: str | None,
        at: datetime,
        expires_at: datetime,
        entry: Callable[[Approval], EntryDraft],
    ) -> Approval | None:
        """Decide a pending, unexpired request; None when it is not (another decision won)."""
        ...

    async def expire(
        self, tenant_id: str, approval_id: str, *, at: datetime, entry: Callable[[Approval], EntryDraft]
    ) -> Approval | None: ...

    async def lapsed(self, *, now: datetime, limit: int) -> list[Approval]: ...

    async def pending_page(
        self, tenant_id: str, *, now: datetime, limit: int, after: Position | None
    ) -> Page[Approval]: ...


class WebhookStore(Protocol):
    """A tenant's webhooks and their deliveries; and, across tenants, the outbox's fan-out into
    deliveries and the leased claim of due ones, for the delivery worker."""

    async def insert_webhook(self, webhook: Webhook, secret: SealedSecret) -> None: ...

    async def count_webhooks(self, tenant_id: str) -> int: ...

    async def list_webhooks(self, tenant_id: str) -> list[Webhook]: ...

    async def get_webhook(self, tenant_id: str, webhook_id: str) -> Webhook | None: ...

    async def target(self, tenant_id: str, webhook_id: str) -> Target | None: ...

    async def delete_webhook(self, tenant_id: str, webhook_id: str) -> Webhook | None:
        """Delete a webhook with its deliveries; the webhook, or None when there was none."""
        ...

    async def rotate_secret(
        self,
        tenant_id: str,
        webhook_id: str,
        *,
        current_version: int,
        secret: SealedSecret,
        at: datetime,
        previous_until: datetime,
    ) -> Webhook | None:
        """Replace the signing secret if it is still `current_version`; the old one signs too until
        `previous_until`. None when the webhook is gone or was rotated meanwhile."""
        ...

    async def enable_webhook(self, tenant_id: str, webhook_id: str, *, at: datetime) -> Webhook | None:
        """Enable a (disabled) webhook, its failing streak forgotten; None when there is none."""
        ...

    async def queue_test(
        self, tenant_id: str, webhook_id: str, *, data: dict[str, Any], at: datetime
    ) -> Delivery | None:
        """A `webhook.test` event and its one delivery, to this webhook only; None when there is none."""
        ...

    async def fan_out(self, *, now: datetime, limit: int, probe: bool = True) -> int:
        """Make the deliveries of up to `limit` events not fanned out yet; how many events it took.
        With `probe`, a read first says whether there is any (no write transaction when idle)."""
        ...

    async def claim(self, *, now: datetime, until: datetime, limit: int, probe: bool = True) -> list[Claimed]:
        """Lease up to `limit` due deliveries until `until`; durable before it returns. With `probe`, a
        read first says whether any is due."""
        ...

    async def targets(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Target]: ...

    async def record_attempt(
        self, claimed: Claimed, attempt: Attempt, *, retries: int, disabled_reason: Callable[[datetime], str]
    ) -> bool:
        """Record an attempt and the delivery's next state under the claim's lease; False when the lease
        passed to another worker meanwhile (nothing recorded)."""
        ...

    async def list_deliveries(
        self,
        tenant_id: str,
        *,
        webhook_id: str | None,
        status: str | None,
        limit: int,
        after: Position | None,
    ) -> Page[Delivery]: ...

    async def get_delivery(self, tenant_id: str, delivery_id: str) -> Delivery | None: ...

    async def redeliver(self, tenant_id: str, delivery_id: str, *, now: datetime) -> Delivery | None:
        """Queue a delivery again, due now (one in flight stays as it is); None when there is none."""
        ...


class EvidenceStore(Protocol):
    """What a compliance evidence pack counts: a tenant's rows in a period, `since` inclusive, `until`
    exclusive."""

    async def tenant_created_at(self, tenant_id: str) -> datetime | None: ...

    async def ledger_period(
        self, tenant_id: str, *, since: datetime, until: datetime, below: int
    ) -> LedgerPeriod: ...

    async def session_totals(self, tenant_id: str, *, since: datetime, until: datetime) -> SessionTotals: ...

    async def payment_totals(self, tenant_id: str, *, since: datetime, until: datetime) -> PaymentTotals: ...

    async def approval_counts(
        self, tenant_id: str, *, since: datetime, until: datetime, now: datetime
    ) -> dict[str, int]: ...

    async def delivery_totals(
        self, tenant_id: str, *, since: datetime, until: datetime
    ) -> DeliveryTotals: ...

    async def vault_keys(self, tenant_id: str) -> VaultKeys: ...


class UsageStore(Protocol):
    """Counters of what each tenant's ledger recorded (kept as entries are appended), and counts of what a
    tenant holds now; indexed reads, never a scan of the log."""

    async def days(self, tenant_id: str, *, first: int, last: int) -> list[tuple[int, str, Tally]]:
        """(day number, agent id or "", counts) for the days `first`..`last`, both included."""
        ...

    async def tenant(self, tenant_id: str, *, now: datetime) -> Tenant: ...

    async def deployment(self) -> Deployment:
        """Totals over every tenant, for operators' metrics."""
        ...


class LimitsStore(Protocol):
    """A tenant's operator-set limits: quotas, the per-second request window, anomaly settings."""

    async def quota(self, tenant_id: str) -> Quota | None: ...

    async def quotas(self) -> list[tuple[str, Quota, datetime]]: ...

    async def set_quota(self, tenant_id: str, quota: Quota, *, at: datetime, entry: EntryDraft) -> None: ...

    async def actions(self, tenant_id: str, *, first: int, last: int) -> int:
        """Ledger entries appended on days `first`..`last`, from the daily counters."""
        ...

    async def agents(self, tenant_id: str, *, now: datetime, agent_id: str) -> tuple[int, bool]:
        """(distinct agents with a session in force, whether `agent_id` is one of them)."""
        ...

    async def lease(self, tenant_id: str, *, window: int, wanted: int, limit: int) -> int:
        """Up to `wanted` of second `window`'s `limit` requests for this process; how many it got."""
        ...

    async def read_anomaly_settings(self, tenant_id: str) -> AnomalySettings | None: ...

    async def set_anomaly_settings(
        self, tenant_id: str, settings: AnomalySettings, *, at: datetime, entry: EntryDraft
    ) -> None: ...


class HealthStore(Protocol):
    @property
    def backend(self) -> str: ...

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the store answers a query."""
        ...

    async def schema_revision(self) -> str | None: ...


class ChangeFeed(Protocol):
    """Changes to state that services cache: what this process has heard of, and telling the others."""

    def epoch(self) -> int | None:
        """Moves whenever cached state changed anywhere; None while changes could go unheard (then
        nothing may be served from a cache)."""
        ...

    async def announce(self) -> None:
        """Tell every process and replica, after the change committed."""
        ...


class RetentionStore(Protocol):
    """What the retention sweep removes; the ledger is never among it."""

    def sweep_lock(self) -> AbstractAsyncContextManager[bool]:
        """True while held; False, at once, when another process or replica holds it."""
        ...

    async def delete_idempotency_keys(self, *, created_until: datetime, limit: int) -> int: ...

    async def lapsed_payments(self, *, created_until: datetime, limit: int) -> list[Payment]:
        """Authorized payments of any tenant, authorized at or before `created_until`, oldest first."""
        ...


class Store(KeyStore, SessionStore, PaymentStore, HealthStore, Protocol):
    @property
    def changes(self) -> ChangeFeed: ...

    @property
    def ledger(self) -> LedgerStore: ...

    @property
    def vault(self) -> VaultStore: ...

    @property
    def proxy(self) -> ProxyStore: ...

    @property
    def approvals(self) -> ApprovalStore: ...

    @property
    def webhooks(self) -> WebhookStore: ...

    @property
    def evidence(self) -> EvidenceStore: ...

    @property
    def usage(self) -> UsageStore: ...

    @property
    def retention(self) -> RetentionStore: ...

    @property
    def limits(self) -> LimitsStore: ...

    async def close(self) -> None: ...
