"""Compliance evidence: build a tenant's signed pack from the store and the ledger (checkpoint and a full
verification made now), and check a pack handed back against this server's log key and its ledger today."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from haldir import __version__
from haldir.core import evidence_facts as ev
from haldir.core import merkle
from haldir.core.approvals import APPROVED, CONSUMED, DENIED, EXPIRED, PENDING, ApprovalRule
from haldir.core.checkpoints import Signer, Verifier
from haldir.core.clock import Clock
from haldir.core.evidence import sign_evidence, verify_pack
from haldir.core.keys import Principal
from haldir.core.ledger import StoredCheckpoint
from haldir.core.money import from_micros
from haldir.core.payments import AUTHORIZED, CAPTURED, CURRENCY, VOIDED
from haldir.core.payments import EXPIRED as PAYMENT_EXPIRED
from haldir.core.webhooks import Webhook
from haldir.errors import ConfigurationError, EvidenceTampered, InvalidRequest
from haldir.governor.ledger import Ledger
from haldir.governor.verification import Verification
from haldir.store.ports import ApprovalStore, EvidenceStore, KeyStore, WebhookStore


@dataclass(frozen=True)
class ManifestCheck:
    """What this server says of a pack: whether its log key signed it (and the pack verifies as a whole),
    and whether the checkpoint it was built against is a prefix of the ledger now (a consistency proof
    from it to the current signed tree head)."""

    valid: bool
    signed_by_log_key: bool
    consistent: bool | None
    problem: str | None
    vkey: str
    digest: str | None
    pack_tree_size: int | None
    tree_size: int
    root_hash: bytes
    checkpoint: str
    proof: list[bytes]


class Evidence:
    """The compliance evidence pack of a tenant (key scope `admin:read`), and its manifest check
    (`audit:read`: it reveals nothing the log key and a consistency proof do not)."""

    def __init__(
        self,
        *,
        evidence_store: EvidenceStore,
        key_store: KeyStore,
        approval_store: ApprovalStore,
        webhook_store: WebhookStore,
        ledger: Ledger,
        clock: Clock,
        log_signer: Signer | None,
    ) -> None:
        self._evidence_store = evidence_store
        self._key_store = key_store
        self._approval_store = approval_store
        self._webhook_store = webhook_store
        self._ledger = ledger
        self._clock = clock
        self._log_signer = log_signer

    async def compliance_evidence(
        self, principal: Principal, *, since: datetime | None = None, until: datetime | None = None
    ) -> dict[str, Any]:
        """The signed pack of the period [since, until): until defaults to now, since to the tenant's
        creation. Its numbers are read now from the store, its audit trail against a checkpoint signed
        for the current log, whose whole chain and Merkle tree are verified on the way."""
        principal.require("admin:read")
        signer = self._signer()
        tenant_id, now = principal.tenant_id, self._clock.now()
        created = await self._evidence_store.tenant_created_at(tenant_id)
        since, until = _period(since, until, created=created, now=now)
        # The pack reports the ledger's checkpoint and verification: admin:read covers reading them for it.
        reader = replace(principal, scopes=frozenset({"audit:read"}))
        checkpoint = await self._ledger.checkpoint(reader)
        verification = await self._ledger.verify_log(reader)
        origin = self._ledger.log_key(reader).origin
        store = self._evidence_store
        period = await store.ledger_period(tenant_id, since=since, until=until, below=checkpoint.tree_size)
        facts = ev.Evidence(
            identity=ev.Identity(tenant_id, created, origin, since, until, now, f"haldir {__version__}"),
            access_control=ev.access_control(
                await self._key_store.list_keys(tenant_id), since=since, until=until
            ),
            encryption=_encryption(await store.vault_keys(tenant_id)),
            audit_trail=_audit_trail(period, checkpoint, verification),
            spend_governance=_spend(
                period,
                await store.session_totals(tenant_id, since=since, until=until),
                await store.payment_totals(tenant_id, since=since, until=until),
            ),
            human_approvals=_approvals(
                await store.approval_counts(tenant_id, since=since, until=until, now=now),
                await self._approval_store.list_rules(tenant_id),
            ),
            outbound_alerting=_alerting(
                await store.delivery_totals(tenant_id, since=since, until=until),
                await self._webhook_store.list_webhooks(tenant_id),
            ),
        )
        return sign_evidence(facts, signer)

    async def check_evidence_manifest(self, principal: Principal, pack: Any) -> ManifestCheck:
        """Whether this server's log key signed `pack` (every step of `verify_pack`), and whether the
        checkpoint it embeds is consistent with this tenant's ledger now. No issued pack is stored: the
        pack carries all that is checked."""
        principal.require("audit:read")
        key = self._ledger.log_key(principal)
        current = await self._ledger.checkpoint(principal)
        answer = ManifestCheck(
            valid=False,
            signed_by_log_key=False,
            consistent=None,
            problem=None,
            vkey=key.vkey,
            digest=None,
            pack_tree_size=None,
            tree_size=current.tree_size,
            root_hash=current.root_hash,
            checkpoint=current.note,
            proof=[],
        )
        try:
            verified = verify_pack(pack, Verifier.from_vkey(key.vkey))
        except EvidenceTampered as exc:
            return replace(answer, problem=exc.message)
        answer = replace(
            answer,
            signed_by_log_key=True,
            digest=verified.digest,
            pack_tree_size=verified.checkpoint.tree_size,
        )
        if verified.checkpoint.origin != key.origin:
            return replace(
                answer,
                problem=f"the pack is of log {verified.checkpoint.origin}, not of this tenant's "
                f"({key.origin})",
            )
        return await self._consistency(
            principal, answer, verified.checkpoint.tree_size, verified.checkpoint.root_hash
        )

    async def _consistency(
        self, principal: Principal, answer: ManifestCheck, size: int, root: bytes
    ) -> ManifestCheck:
        # Steps: an empty tree is a prefix of every tree; a larger one of none; the same size must have
        # the same root; otherwise the proof from `size` to the current size must verify (RFC 9162).
        if size > answer.tree_size:
            problem = f"the pack's checkpoint covers {size} entries, the ledger has {answer.tree_size} now"
            return replace(answer, consistent=False, problem=problem)
        proof: list[bytes] = []
        try:
            if size and size < answer.tree_size:
                proof = (
                    await self._ledger.consistency_proof(principal, first=size, second=answer.tree_size)
                ).proof
            if size:
                merkle.verify_consistency(
                    first=size,
                    second=answer.tree_size,
                    first_root=root,
                    second_root=answer.root_hash,
                    proof=proof,
                )
        except merkle.ProofError as exc:
            problem = f"the ledger now does not extend the pack's checkpoint of {size} entries: {exc}"
            return replace(answer, consistent=False, proof=proof, problem=problem)
        return replace(answer, valid=True, consistent=True, proof=proof)

    def _signer(self) -> Signer:
        if self._log_signer is None:
            raise ConfigurationError(
                "no log signing key is configured: evidence packs are signed by the server"
            )
        return self._log_signer


def _period(
    since: datetime | None, until: datetime | None, *, created: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidRequest(f"{name} needs a time zone, e.g. 2026-01-01T00:00:00Z", field=name)
    until = now if until is None else until
    if until > now:
        raise InvalidRequest(
            f"until is after now ({now.isoformat()}): a pack covers what happened", field="until"
        )
    since = (created or until) if since is None else since
    if since > until:
        raise InvalidRequest(
            f"since ({since.isoformat()}) must not be after until ({until.isoformat()})", field="since"
        )
    return since, until


def _encryption(keys: ev.VaultKeys) -> ev.Encryption:
    master = keys.master_keys[-1] if keys.master_keys else None
    data = keys.data_keys[-1] if keys.data_keys else None
    current = None if data is None else data.version
    return ev.Encryption(
        secret_cipher=ev.SECRET_CIPHER,
        aad_binds=ev.AAD_BINDS,
        key_wrapping=ev.KEY_WRAPPING,
        value_digest=ev.VALUE_DIGEST,
        current_master_key_version=None if master is None else master.version,
        current_data_key_version=current,
        last_master_key_rotation_at=None if master is None else master.created_at,
        last_data_key_rotation_at=None if data is None else data.created_at,
        secrets=keys.secrets,
        secret_versions=sum(keys.secret_versions_by_data_key.values()),
        secret_versions_on_older_data_keys=sum(
            count for version, count in keys.secret_versions_by_data_key.items() if version != current
        ),
        master_keys=keys.master_keys,
        data_keys=keys.data_keys,
    )


def _audit_trail(
    period: ev.LedgerPeriod, checkpoint: StoredCheckpoint, verification: Verification
) -> ev.AuditTrail:
    bad = verification.first_bad
    problem = None if bad is None else f"leaf {bad.leaf_index} ({bad.entry_id or 'no entry'}): {bad.reason}"
    return ev.AuditTrail(
        entries_in_period=period.entries,
        first_leaf_in_period=period.first_leaf,
        last_leaf_in_period=period.last_leaf,
        flagged_in_period=period.flagged,
        denied_in_period=period.denied,
        entries_total=checkpoint.tree_size,
        checkpoint_root_hash=checkpoint.root_hash.hex(),
        checkpoint_signed_at=checkpoint.signed_at,
        integrity_checks=ev.INTEGRITY_CHECKS,
        integrity_verified=verification.ok,
        integrity_verified_entries=verification.tree_size,
        integrity_problem=problem,
        checkpoint=checkpoint.note,
    )


def _spend(
    period: ev.LedgerPeriod, sessions: ev.SessionTotals, payments: ev.PaymentTotals
) -> ev.SpendGovernance:
    def count(status: str) -> int:
        return payments.counts.get(status, 0)

    def usd(status: str) -> Any:
        return from_micros(payments.micros.get(status, 0))

    return ev.SpendGovernance(
        currency=CURRENCY,
        sessions_created_in_period=sessions.created,
        sessions_with_spend_cap=sessions.capped,
        spend_caps_usd=from_micros(sessions.caps_micros),
        spent_by_capped_sessions_usd=from_micros(sessions.spent_micros),
        charged_in_period_usd=from_micros(period.charged_micros),
        payments_authorized=count(AUTHORIZED),
        payments_authorized_usd=usd(AUTHORIZED),
        payments_captured=count(CAPTURED),
        payments_captured_usd=usd(CAPTURED),
        payments_voided=count(VOIDED),
        payments_voided_usd=usd(VOIDED),
        payments_expired=count(PAYMENT_EXPIRED),
        payments_expired_usd=usd(PAYMENT_EXPIRED),
        budget_refusals_in_period=period.budget_refusals,
    )


def _approvals(counts: dict[str, int], rules: list[ApprovalRule]) -> ev.HumanApprovals:
    return ev.HumanApprovals(
        requested_in_period=sum(counts.values()),
        pending=counts.get(PENDING, 0),
        approved_unused=counts.get(APPROVED, 0),
        consumed=counts.get(CONSUMED, 0),
        denied=counts.get(DENIED, 0),
        expired=counts.get(EXPIRED, 0),
        rules=tuple(
            ev.RuleFact(
                rule.rule_id,
                rule.type,
                None if rule.threshold_micros is None else from_micros(rule.threshold_micros),
                rule.tool,
                rule.agent_id,
                rule.created_at,
            )
            for rule in rules
        ),
    )


def _alerting(deliveries: ev.DeliveryTotals, webhooks: list[Webhook]) -> ev.OutboundAlerting:
    statuses = deliveries.statuses
    delivered, failed = statuses.get("delivered", 0), statuses.get("failed", 0)
    return ev.OutboundAlerting(
        webhooks_total=len(webhooks),
        webhooks_enabled=sum(hook.enabled for hook in webhooks),
        deliveries_in_period=sum(statuses.values()),
        delivered=delivered,
        failed=failed,
        pending=statuses.get("pending", 0),
        attempts_in_period=deliveries.attempts,
        delivery_success_percent=ev.success_percent(delivered, failed),
        webhooks=tuple(
            ev.WebhookFact(hook.webhook_id, _endpoint(hook.url), hook.events, hook.enabled, hook.created_at)
            for hook in webhooks
        ),
    )


def _endpoint(url: str) -> str:
    """A webhook's scheme and host: its path and query may hold a token, which a pack never shows."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}"
