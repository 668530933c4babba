"""One spend ledger: payments reserve, capture and release budget; governed calls charge their cost.

Every change to a session's `spent` commits in one transaction with the ledger entry that records it
(`charged_usd`), so summing a session's entries always gives its `spent`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from haldir.core import ids
from haldir.core.approvals import PAYMENT, Subject
from haldir.core.clock import Clock
from haldir.core.idempotency import IdempotencyClaim, Outcome, claim
from haldir.core.keys import Principal
from haldir.core.ledger import STATUSES, StoredEntry, canonical_bytes
from haldir.core.money import format_micros, to_micros
from haldir.core.pagination import MAX_PAGE, Page, decode_cursor
from haldir.core.payments import (
    AUTHORIZED,
    BUDGET_EXHAUSTED,
    CAPTURED,
    CURRENCY,
    EXPIRED,
    PAYMENTS_TOOL,
    VOIDED,
    Payment,
    match_cost,
)
from haldir.core.sessions import Session, holds_spend, spend_refusal
from haldir.core.webhooks import BUDGET_THRESHOLD, THRESHOLD_PERCENT, crossed_threshold
from haldir.errors import (
    ApprovalDenied,
    BudgetExceeded,
    Conflict,
    InvalidAmount,
    InvalidRequest,
    NotFound,
    ScopeDenied,
)
from haldir.governor.approvals import Approvals, Held, Unapproved
from haldir.governor.fields import text_field
from haldir.governor.ledger import Ledger
from haldir.governor.sessions import Sessions
from haldir.store.ports import PaymentStore, SpendTransaction

MAX_DETAILS_BYTES = 64 * 1024
DEFAULT_AUTHORIZATION_TTL = timedelta(days=7)  # HALDIR_PAYMENT_AUTHORIZATION_TTL_SECONDS


@dataclass(frozen=True)
class Authorization:
    payment: Payment
    remaining_micros: int


class Budgets:
    """Spend against session budgets: logged costs and payment authorizations."""

    def __init__(
        self,
        *,
        payment_store: PaymentStore,
        sessions: Sessions,
        approvals: Approvals,
        ledger: Ledger,
        clock: Clock,
        authorization_ttl: timedelta = DEFAULT_AUTHORIZATION_TTL,
    ) -> None:
        self._authorization_ttl = authorization_ttl
        self._payment_store = payment_store
        self._sessions = sessions
        self._approvals = approvals
        self._ledger = ledger
        self._clock = clock

    async def log_action(
        self,
        principal: Principal,
        *,
        session_id: str,
        tool: str,
        action: str,
        cost_usd: Decimal | int | str = "0",
        details: dict[str, Any] | None = None,
        status: str = "ok",
        authorization_id: str | None = None,
    ) -> StoredEntry:
        """Append an action of a session to its tenant's ledger; returns once the entry is durable.

        A logged action is a record of what happened, so it is never refused for budget reasons. Its
        cost is matched to the session's payment authorizations first (`authorization_id`, else the
        oldest open ones: `match_cost`), so authorize-then-log counts the money once; whatever no
        authorization covers is added to the session's `spent`, in the same transaction as the entry.
        When that takes `spent` past the limit, the entry is flagged `over_budget` (which writes an
        `audit.flagged` event). A session's `spent` stays the sum of its entries' `charged_usd`.
        """
        principal.require("audit:write")
        session = await self._sessions.require_session(principal, session_id)
        if status not in STATUSES:
            raise InvalidRequest(f"status must be one of {sorted(STATUSES)}, got {status!r}")
        details = {} if details is None else details
        if len(canonical_bytes({"details": details})) > MAX_DETAILS_BYTES:
            raise InvalidRequest(f"details must be at most {MAX_DETAILS_BYTES} bytes as canonical JSON")
        fields: dict[str, Any] = {
            "tool": text_field(tool, field="tool", max_length=200),
            "action": text_field(action, field="action", max_length=200),
            "status": status,
            "cost_usd": cost_usd,
            "details": details,
        }
        cost = to_micros(cost_usd, field="cost_usd")
        if authorization_id is not None and not ids.is_id(ids.PAYMENT, authorization_id):
            raise NotFound(f"no payment authorization {authorization_id!r} of session {session.session_id}")
        if cost == 0 and authorization_id is None:
            return await self._ledger.append(
                principal.tenant_id, session_id=session.session_id, agent_id=session.agent_id, **fields
            )
        async with self._payment_store.spend_transaction(principal.tenant_id) as tx:
            if authorization_id is None:
                candidates = await tx.open_payments(session.session_id)
            else:
                named = await tx.payment(authorization_id)  # locked, like the open ones
                if named is None or named.session_id != session.session_id:
                    raise NotFound(
                        f"no payment authorization {authorization_id!r} of session {session.session_id}"
                    )
                candidates = [named]
                fields["authorization_id"] = authorization_id
            matched = match_cost(cost, candidates)
            for payment_id, covered in matched:
                reported = await tx.report(payment_id, covered, now=self._clock.now())
                assert reported is not None  # locked above, and `covered` is within what it holds
            if matched:
                fields["covered_by"] = [
                    {"authorization_id": payment_id, "amount_usd": format_micros(covered)}
                    for payment_id, covered in matched
                ]
            uncovered = cost - sum(covered for _, covered in matched)
            if uncovered:
                current = await tx.record_spend(session.session_id, uncovered)
            else:
                current = await tx.session(session.session_id)
            assert current is not None  # sessions are never deleted
            flag = _uncovered_flag(current, uncovered, now=self._clock.now())
            entry = tx.append(
                self._ledger.spend_entry(current, charged_micros=uncovered, flag_reason=flag, **fields)
            )
            if uncovered:
                await record_exhausted(
                    tx, current, entry.draft.entry_id, charged_micros=uncovered, clock=self._clock
                )
        return entry.result()

    # payments

    async def authorize_payment(
        self,
        principal: Principal,
        *,
        session_id: str,
        amount: Decimal | int | str,
        currency: str = CURRENCY,
        description: str = "",
        idempotency_key: str | None = None,
    ) -> Outcome[Authorization]:
        """Reserve `amount` of the session's budget with one conditional update; 402 when it does not fit."""
        principal.require("payments:write")
        session = await self._sessions.require_session(principal, session_id)
        micros = to_micros(amount, field="amount")
        if micros == 0:
            raise InvalidAmount("amount must be more than 0", field="amount")
        if currency != CURRENCY:
            raise InvalidRequest(f"currency must be {CURRENCY!r}, got {currency!r}", field="currency")
        if description:
            description = text_field(description, field="description", max_length=500)
        request = claim(
            idempotency_key,
            operation="payments.authorize",
            payload={"session_id": session.session_id, "amount": micros, "description": description},
        )
        tenant_id = principal.tenant_id
        fields: dict[str, Any] = {
            "tool": PAYMENTS_TOOL,
            "action": "payment.authorize",
            "cost_usd": format_micros(micros),
            "details": {
                "amount_usd": format_micros(micros),
                "currency": currency,
                "description": description,
            },
        }
        if not holds_spend(session):
            reason = (
                f"session {session.session_id} lacks scope 'spend'; it has {[str(s) for s in session.scopes]}"
            )
            await self._ledger.append(
                tenant_id,
                session_id=session.session_id,
                agent_id=session.agent_id,
                **_denied(fields, reason),
            )
            raise ScopeDenied(reason)
        now = self._clock.now()
        payment = Payment(
            tenant_id=tenant_id,
            payment_id=ids.new_id(ids.PAYMENT),
            session_id=session.session_id,
            amount_micros=micros,
            currency=currency,
            description=description,
            status=AUTHORIZED,
            created_at=now,
            updated_at=now,
        )
        subject = Subject(PAYMENT, session.session_id, session.agent_id, PAYMENTS_TOOL, None, micros)
        held = await self._approvals.holding(subject, tenant_id=tenant_id)
        try:
            return await self._authorize(
                fields=fields,
                payment=payment,
                request=request,
                session=session,
                subject=subject,
                held=held,
            )
        except Unapproved:
            answer = await self._approvals.ask(principal, session, subject, held)
            if isinstance(answer, ApprovalDenied):
                await self._ledger.append(
                    tenant_id,
                    session_id=session.session_id,
                    agent_id=session.agent_id,
                    **_denied(fields, answer.message),
                )
            raise answer from None

    async def _authorize(
        self,
        *,
        fields: dict[str, Any],
        payment: Payment,
        request: IdempotencyClaim | None,
        session: Session,
        subject: Subject,
        held: Held,
    ) -> Outcome[Authorization]:
        """Charge the payment, in one transaction with its entry and, when rules hold it, the use of its
        approval (`Unapproved` rolls all of it back)."""
        micros, now = payment.amount_micros, payment.created_at
        async with self._payment_store.spend_transaction(payment.tenant_id) as tx:
            if request is not None:
                replayed = await self._replay(tx, request, payment)
                if replayed is not None:
                    return replayed
            charged = await tx.charge(session.session_id, micros, now=now)
            if charged is not None:
                if held:
                    await self._approvals.use(tx, subject, held)
                await tx.insert_payment(payment)
                fields["details"]["authorization_id"] = payment.payment_id
                entry = tx.append(
                    self._ledger.spend_entry(charged, charged_micros=micros, status="ok", **fields)
                )
                await record_exhausted(
                    tx, charged, entry.draft.entry_id, charged_micros=micros, clock=self._clock
                )
                return Outcome(Authorization(payment, charged.remaining_micros))
            refusal = await self._refuse(tx, session, micros, {**fields, "status": "ok"})
        raise refusal

    async def _replay(
        self, tx: SpendTransaction, request: IdempotencyClaim, payment: Payment
    ) -> Outcome[Authorization] | None:
        """The earlier answer to a request under this Idempotency-Key, or None when the key is new."""
        prior = await tx.claim(request, payment.payment_id, at=payment.created_at)
        if prior is None:
            return None
        session = await tx.session(payment.session_id)
        remaining = 0 if session is None else session.remaining_micros
        earlier = await tx.payment(prior)
        if earlier is None:  # the earlier request was refused; so is its replay
            raise BudgetExceeded(
                "this Idempotency-Key's authorization was refused; use a new key to try again",
                remaining_budget=format_micros(remaining),
            )
        return Outcome(Authorization(earlier, remaining), replayed=True)

    async def capture_payment(
        self, principal: Principal, payment_id: str, *, amount: Decimal | int | str | None = None
    ) -> Payment:
        """Capture an authorized payment, optionally for less, releasing the difference to the budget."""
        principal.require("payments:write")
        final = None if amount is None else to_micros(amount, field="amount")
        return await self._settle(principal, payment_id, status=CAPTURED, final=final)

    async def void_payment(self, principal: Principal, payment_id: str) -> Payment:
        """Void an authorized payment, releasing its whole amount to the budget."""
        principal.require("payments:write")
        return await self._settle(principal, payment_id, status=VOIDED, final=None)

    async def _settle(
        self, principal: Principal, payment_id: str, *, status: str, final: int | None
    ) -> Payment:
        tenant_id = principal.tenant_id
        found = (
            await self._payment_store.get_payment(tenant_id, payment_id)
            if ids.is_id(ids.PAYMENT, payment_id)
            else None
        )
        if found is None:
            raise NotFound(f"no payment {payment_id!r} in this tenant")
        now = self._clock.now()
        async with self._payment_store.spend_transaction(tenant_id) as tx:
            payment = await tx.payment(payment_id)  # locked: one settlement wins
            if payment is None:
                raise NotFound(f"no payment {payment_id!r} in this tenant")
            if payment.status == EXPIRED or payment.lapsed(now, self._authorization_ttl):
                raise _expired(payment, self._authorization_ttl)
            if payment.status != AUTHORIZED:
                raise Conflict(
                    f"payment {payment_id} is {payment.status}; only an authorized payment can be settled"
                )
            captured = _captured(payment, status=status, final=final)
            settled = await tx.settle_payment(payment_id, status=status, captured_micros=captured, now=now)
            assert settled is not None  # locked and authorized above
            action = f"payment.{'capture' if status == CAPTURED else 'void'}"
            await record_settlement(tx, self._ledger, payment, settled, action=action, now=now)
        return settled

    async def get_payment(self, principal: Principal, payment_id: str) -> Payment:
        principal.require("payments:read")
        found = (
            await self._payment_store.get_payment(principal.tenant_id, payment_id)
            if ids.is_id(ids.PAYMENT, payment_id)
            else None
        )
        if found is None:
            raise NotFound(f"no payment {payment_id!r} in this tenant")
        return found

    async def list_payments(
        self,
        principal: Principal,
        *,
        session_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Payment]:
        principal.require("payments:read")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be from 1 to {MAX_PAGE}, got {limit}")
        if session_id is not None and not ids.is_id(ids.SESSION, session_id):
            raise InvalidRequest(f"session_id {session_id!r} is not a session id", field="session_id")
        return await self._payment_store.list_payments(
            principal.tenant_id, session_id=session_id, limit=limit, after=decode_cursor(cursor)
        )

    async def _refuse(
        self, tx: SpendTransaction, session: Session, micros: int, fields: dict[str, Any]
    ) -> BudgetExceeded | ScopeDenied:
        """Record a refused charge in the ledger (status denied, nothing charged); the error to raise."""
        current = await tx.session(session.session_id) or session
        now = self._clock.now()
        reason = spend_refusal(current, micros, now=now)
        tx.append(self._ledger.spend_entry(current, charged_micros=0, **_denied(fields, reason)))
        if current.invalid_reason(now):
            return ScopeDenied(reason)
        return BudgetExceeded(reason, remaining_budget=format_micros(current.remaining_micros))


async def record_exhausted(
    tx: SpendTransaction, session: Session, entry_id: str, *, charged_micros: int, clock: Clock
) -> None:
    """Record `budget.exhausted` when this charge took the session's remaining budget to zero (not when it
    had none left before), and `budget.threshold` when it crossed 80 % of the limit (`record_threshold`).
    Every spend that charges a session ends with this, in its transaction."""
    await record_threshold(tx, session, entry_id, charged_micros=charged_micros, clock=clock)
    had_left = session.spend_limit_micros - (session.spent_micros - charged_micros) > 0
    if had_left and session.remaining_micros == 0:
        await tx.record_event(
            BUDGET_EXHAUSTED,
            {
                "session_id": session.session_id,
                "agent_id": session.agent_id,
                "spend_limit_usd": format_micros(session.spend_limit_micros),
                "spent_usd": format_micros(session.spent_micros),
                "entry_id": entry_id,
            },
            at=clock.now(),
        )


async def record_threshold(
    tx: SpendTransaction, session: Session, entry_id: str, *, charged_micros: int, clock: Clock
) -> None:
    """Record `budget.threshold` when this charge took the session's spend from below 80 % of its limit
    to 80 % or more (once per crossing; a release and a new charge cross it again)."""
    if crossed_threshold(
        session.spent_micros - charged_micros, session.spent_micros, session.spend_limit_micros
    ):
        await tx.record_event(
            BUDGET_THRESHOLD,
            {
                "session_id": session.session_id,
                "agent_id": session.agent_id,
                "threshold_percent": THRESHOLD_PERCENT,
                "spend_limit_usd": format_micros(session.spend_limit_micros),
                "spent_usd": format_micros(session.spent_micros),
                "remaining_usd": format_micros(session.remaining_micros),
                "entry_id": entry_id,
            },
            at=clock.now(),
        )


def _uncovered_flag(session: Session, uncovered_micros: int, *, now: datetime) -> str | None:
    """Why a logged cost no authorization covered is flagged: it took the session's `spent` past its
    limit (`over_budget`), or the session no longer allows anything; None when neither."""
    if not uncovered_micros:
        return None
    if session.spent_micros > session.spend_limit_micros:
        return (
            f"over_budget: {format_micros(uncovered_micros)} USD not covered by an authorization took "
            f"session {session.session_id} to {format_micros(session.spent_micros)} USD spent, past its "
            f"limit of {format_micros(session.spend_limit_micros)} USD"
        )
    invalid = session.invalid_reason(now)
    if invalid:
        return f"a cost of {format_micros(uncovered_micros)} USD was logged after {invalid}"
    return None


def _denied(fields: dict[str, Any], reason: str) -> dict[str, Any]:
    """The ledger fields of a refusal: the request's own fields, status denied, and why."""
    return {**fields, "status": "denied", "details": {**fields["details"], "refused": reason}}


def _expired(payment: Payment, ttl: timedelta) -> Conflict:
    return Conflict(
        f"payment {payment.payment_id} expired: it was authorized at {payment.created_at.isoformat()} and "
        f"neither captured nor voided within {_duration(ttl)}; what it held beyond costs reported against "
        "it goes back to the session's budget. Authorize again to spend it"
    )


def _duration(ttl: timedelta) -> str:
    seconds = int(ttl.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def _captured(payment: Payment, *, status: str, final: int | None) -> int | None:
    """The captured amount a settlement leaves, after checking it against what the payment allows."""
    if status == VOIDED:
        if payment.reported_micros:
            raise Conflict(
                f"payment {payment.payment_id} has {format_micros(payment.reported_micros)} USD of reported "
                "costs against it; capture it instead of voiding"
            )
        return None
    final = payment.amount_micros if final is None else final
    if not payment.reported_micros <= final <= payment.amount_micros:
        raise InvalidRequest(
            f"capture amount must be from {format_micros(payment.reported_micros)} (already reported) to "
            f"{format_micros(payment.amount_micros)} (authorized), got {format_micros(final)}",
            field="amount",
        )
    return final


async def record_settlement(
    tx: SpendTransaction,
    ledger: Ledger,
    payment: Payment,
    settled: Payment,
    *,
    action: str,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> None:
    """In `tx`, where `payment` was just settled as `settled`: give what it held beyond its charge back to
    the session's budget, and append the settlement's ledger entry (`action`, its charge as the cost)."""
    release = settled.charged_micros - payment.amount_micros
    session = await (
        tx.charge(payment.session_id, release, now=now) if release else tx.session(payment.session_id)
    )
    assert session is not None  # payments keep their session
    tx.append(
        ledger.spend_entry(
            session,
            charged_micros=release,
            tool=PAYMENTS_TOOL,
            action=action,
            status="ok",
            cost_usd=format_micros(settled.charged_micros),
            details={
                "authorization_id": payment.payment_id,
                "amount_usd": format_micros(payment.amount_micros),
                **(details or {}),
            },
        )
    )
