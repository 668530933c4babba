"""Human approval: the rules that hold a spend or a governed call for a person, the requests they raise,
and their decisions. Payments and the proxy call `holding`, `use` and `ask`; people decide through
`approve` and `deny`. Every step of a request is a ledger entry. Reading needs `approvals:read`,
deciding and changing rules `approvals:write`; asking on a session's behalf needs `sessions:write`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from haldir.cache import Cache
from haldir.core import ids
from haldir.core.approvals import (
    APPROVAL,
    APPROVAL_RULE,
    APPROVED,
    DENIED,
    EXPIRED,
    MAX_RULES,
    MAX_TEXT,
    PENDING,
    REQUEST,
    Approval,
    ApprovalRule,
    Subject,
    holding_rules,
    next_steps,
    parse_rule,
)
from haldir.core.clock import Clock, isoformat
from haldir.core.keys import Principal
from haldir.core.ledger import EntryDraft
from haldir.core.money import format_micros, to_micros
from haldir.core.pagination import MAX_PAGE, Page, decode_cursor
from haldir.core.sessions import Session
from haldir.errors import (
    ApprovalDenied,
    ApprovalRequired,
    Conflict,
    InvalidRequest,
    NotFound,
    SelfApproval,
)
from haldir.governor.fields import text_field
from haldir.governor.ledger import Ledger
from haldir.governor.sessions import Sessions
from haldir.store.ports import ApprovalStore, ChangeFeed, SpendTransaction

APPROVALS_TOOL = "haldir.approvals"
CACHED_TENANTS = 10_000
Held = list[tuple[ApprovalRule, str]]  # the rules holding a request, each with why


class Unapproved(Exception):
    """Raised inside the spend transaction of a held request that had no approval to use, to roll back
    all it did; the caller then answers with `Approvals.ask`."""

    def __init__(self, subject: Subject, held: Held) -> None:
        super().__init__(subject.binding)
        self.subject = subject
        self.held = held


@dataclass(frozen=True)
class Timeouts:
    pending: timedelta = timedelta(minutes=15)  # to decide a request
    use: timedelta = timedelta(hours=1)  # to make an approved request again


class Approvals:
    def __init__(
        self,
        *,
        approval_store: ApprovalStore,
        sessions: Sessions,
        ledger: Ledger,
        changes: ChangeFeed,
        clock: Clock,
        timeouts: Timeouts = Timeouts(),
    ) -> None:
        self._store = approval_store
        self._sessions = sessions
        self._ledger = ledger
        self._changes = changes
        self._clock = clock
        self._timeouts = timeouts
        self._rules: Cache[str, list[ApprovalRule]] = Cache(changes.epoch, maxsize=CACHED_TENANTS)

    # rules

    async def create_rule(self, principal: Principal, spec: dict[str, Any]) -> ApprovalRule:
        principal.require("approvals:write")
        rule = parse_rule(
            spec,
            rule_id=ids.new_id(APPROVAL_RULE),
            created_by=principal.key_prefix,
            created_at=self._clock.now(),
        )
        if len(await self._store.list_rules(principal.tenant_id)) >= MAX_RULES:
            raise Conflict(
                f"this tenant has {MAX_RULES} approval rules, the most it may have; delete some first"
            )
        entry = self._entry(principal.tenant_id, None, "approval.rule.create", rule.as_json(), principal)
        await self._store.insert_rule(principal.tenant_id, rule, entry=entry)
        await self._changes.announce()
        return rule

    async def list_rules(self, principal: Principal) -> list[ApprovalRule]:
        principal.require("approvals:read")
        return await self._store.list_rules(principal.tenant_id)

    async def delete_rule(self, principal: Principal, rule_id: str) -> ApprovalRule:
        principal.require("approvals:write")

        def entry(rule: ApprovalRule) -> EntryDraft:
            return self._entry(principal.tenant_id, None, "approval.rule.delete", rule.as_json(), principal)

        deleted = None
        if ids.is_id(APPROVAL_RULE, rule_id):
            deleted = await self._store.delete_rule(principal.tenant_id, rule_id, entry=entry)
        if deleted is None:
            raise NotFound(f"no approval rule {rule_id!r} in this tenant")
        await self._changes.announce()
        return deleted

    async def holding(self, subject: Subject, *, tenant_id: str) -> Held:
        """The tenant's rules that hold `subject` for approval, with why; served from memory."""
        rules = await self._rules.read_through(tenant_id, lambda: self._store.list_rules(tenant_id))
        return holding_rules(rules or [], subject)

    # the gated request: use an approval, or ask for one

    async def use(self, tx: SpendTransaction, subject: Subject, held: Held) -> None:
        """Use the approval of exactly this request inside the spend transaction that runs it, with its
        `approval.consume` entry; `Unapproved` (rolling the transaction back) when there is none to use."""
        used = await tx.consume_approval(subject.binding, at=self._clock.now())
        if used is None:
            raise Unapproved(subject, held)
        tx.append(self._entry(used.tenant_id, used, "approval.consume", _details(used)))

    async def ask(
        self, principal: Principal, session: Session, subject: Subject, held: Held
    ) -> ApprovalDenied | ApprovalRequired:
        """What a held request answers: `ApprovalRequired` naming its open request (recorded now when there
        is none), or `ApprovalDenied` while a person's denial of exactly this request stands."""
        now = self._clock.now()
        latest = await self._store.latest_approval(session.tenant_id, subject.binding)
        if latest is not None and latest.status == DENIED and now < latest.expires_at:
            return ApprovalDenied(
                f"{latest.decided_by or 'the operator'} denied this request ({latest.approval_id})"
                + (f": {latest.note}" if latest.note else "")
                + f"; it may be asked again after {isoformat(latest.expires_at)}",
                approval_id=latest.approval_id,
            )
        if latest is not None and latest.status == PENDING and not latest.lapsed(now):
            return _required(latest)
        approval = await self._insert(
            principal,
            session,
            subject,
            "; ".join(reason for _, reason in held),
            tuple(rule.rule_id for rule, _ in held),
            now=now,
        )
        return _required(approval)

    async def request_approval(
        self,
        principal: Principal,
        *,
        session_id: str,
        tool: str,
        amount: Any = 0,
        arguments_sha256: str | None = None,
        reason: str = "",
    ) -> Approval:
        """An agent asks, ahead of time, for a person's approval of an action of its session. The same
        request while one is open returns that one."""
        principal.require("sessions:write")
        session = await self._sessions.require_session(principal, session_id)
        now = self._clock.now()
        invalid = session.invalid_reason(now)
        if invalid:
            raise InvalidRequest(f"cannot ask for approval: {invalid}", field="session_id")
        if arguments_sha256 is not None and not _is_sha256(arguments_sha256):
            raise InvalidRequest("arguments_sha256 must be 64 lowercase hex digits", field="arguments_sha256")
        subject = Subject(
            REQUEST,
            session.session_id,
            session.agent_id,
            text_field(tool, field="tool", max_length=200),
            arguments_sha256,
            to_micros(amount, field="amount"),
        )
        reason = text_field(reason, field="reason", max_length=MAX_TEXT) if reason else "asked by the agent"
        return await self._insert(principal, session, subject, reason, (), now=now)

    async def _insert(
        self,
        principal: Principal,
        session: Session,
        subject: Subject,
        reason: str,
        rule_ids: tuple[str, ...],
        *,
        now: datetime,
    ) -> Approval:
        approval = Approval(
            tenant_id=session.tenant_id,
            approval_id=ids.new_id(APPROVAL),
            binding=subject.binding,
            status=PENDING,
            kind=subject.kind,
            session_id=subject.session_id,
            agent_id=subject.agent_id,
            tool=subject.tool,
            arguments_sha256=subject.arguments_sha256,
            amount_micros=subject.amount_micros,
            reason=reason[:MAX_TEXT],
            rule_ids=rule_ids,
            requested_by=principal.key_prefix,
            requested_at=now,
            expires_at=now + self._timeouts.pending,
        )
        entry = self._entry(session.tenant_id, session, "approval.request", _details(approval), principal)
        return await self._store.insert_approval(
            approval, entry=entry, lapse=self._lapse_entry(session.tenant_id)
        )

    # decisions

    async def approve(self, principal: Principal, approval_id: str, *, note: str | None = None) -> Approval:
        return await self._decide(principal, approval_id, APPROVED, note)

    async def deny(self, principal: Principal, approval_id: str, *, note: str | None = None) -> Approval:
        return await self._decide(principal, approval_id, DENIED, note)

    async def _decide(
        self, principal: Principal, approval_id: str, status: str, note: str | None
    ) -> Approval:
        principal.require("approvals:write")
        if note is not None:
            note = text_field(note, field="note", max_length=MAX_TEXT)
        found = await self._find(principal, approval_id)
        if found.requested_by is not None and found.requested_by == principal.key_prefix:
            raise SelfApproval(
                f"approval {approval_id} was asked for with this API key ({found.requested_by}); another "
                "key with approvals:write, or the operator, must decide it"
            )
        now = self._clock.now()
        # An approval gives the time to use it from the decision; a denial stands as long as a request would
        # have waited, then the same request may be asked again.
        until = now + (self._timeouts.use if status == APPROVED else self._timeouts.pending)

        def entry(decided: Approval) -> EntryDraft:
            action = "approval.approve" if status == APPROVED else "approval.deny"
            return self._entry(principal.tenant_id, decided, action, _details(decided), principal)

        decided = await self._store.decide(
            principal.tenant_id,
            found.approval_id,
            status=status,
            decided_by=principal.key_prefix,
            note=note,
            at=now,
            expires_at=until,
            entry=entry,
        )
        if decided is not None:
            return decided
        current = await self._current(principal, found.approval_id)
        raise Conflict(
            f"approval {approval_id} is {current.status_at(now)}: only a pending request can be decided",
            approval_status=current.status_at(now),
        )

    async def get_approval(self, principal: Principal, approval_id: str) -> Approval:
        principal.require("approvals:read")
        return await self._current(principal, approval_id)

    async def pending(
        self, principal: Principal, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Approval]:
        principal.require("approvals:read")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be from 1 to {MAX_PAGE}, got {limit}")
        return await self._store.pending_page(
            principal.tenant_id, now=self._clock.now(), limit=limit, after=decode_cursor(cursor)
        )

    async def expire_lapsed(self, *, limit: int = 500) -> int:
        """Record every open request past its time as expired (a sweep; any replica may run it)."""
        lapsed = await self._store.lapsed(now=self._clock.now(), limit=limit)
        expired = 0
        for approval in lapsed:
            done = await self._store.expire(
                approval.tenant_id,
                approval.approval_id,
                at=self._clock.now(),
                entry=self._lapse_entry(approval.tenant_id),
            )
            expired += done is not None
        return expired

    async def _current(self, principal: Principal, approval_id: str) -> Approval:
        """The request as it stands, recording its expiry first when it lapsed unrecorded."""
        found = await self._find(principal, approval_id)
        now = self._clock.now()
        if found.lapsed(now):
            expired = await self._store.expire(
                principal.tenant_id, found.approval_id, at=now, entry=self._lapse_entry(principal.tenant_id)
            )
            found = expired or await self._find(principal, approval_id)
        return found

    async def _find(self, principal: Principal, approval_id: str) -> Approval:
        found = None
        if ids.is_id(APPROVAL, approval_id):
            found = await self._store.get_approval(principal.tenant_id, approval_id)
        if found is None:
            raise NotFound(f"no approval {approval_id!r} in this tenant")
        return found

    def _lapse_entry(self, tenant_id: str) -> Callable[[Approval], EntryDraft]:
        def entry(approval: Approval) -> EntryDraft:
            return self._entry(
                tenant_id, approval, "approval.expire", _details(replace(approval, status=EXPIRED))
            )

        return entry

    def _entry(
        self,
        tenant_id: str,
        about: Session | Approval | None,
        action: str,
        details: dict[str, Any],
        principal: Principal | None = None,
    ) -> EntryDraft:
        if principal is not None:
            details = {**details, "key_prefix": principal.key_prefix}
        return self._ledger.entry(
            tenant_id,
            session_id=None if about is None else about.session_id,
            agent_id=None if about is None else about.agent_id,
            tool=APPROVALS_TOOL,
            action=action,
            status="ok",
            cost_usd=0,
            details=details,
        )


def _details(approval: Approval) -> dict[str, Any]:
    """What an approval's ledger entries record: the request, its binding and its decision."""
    return {
        "approval_id": approval.approval_id,
        "status": approval.status,
        "kind": approval.kind,
        "tool": approval.tool,
        "arguments_sha256": approval.arguments_sha256,
        "amount_usd": format_micros(approval.amount_micros),
        "binding": approval.binding,
        "reason": approval.reason,
        "rule_ids": list(approval.rule_ids),
        "requested_by": approval.requested_by,
        "expires_at": isoformat(approval.expires_at),
        "decided_by": approval.decided_by,
        "note": approval.note,
    }


def _required(approval: Approval) -> ApprovalRequired:
    return ApprovalRequired(
        f"this request needs a person's approval: {approval.reason}",
        approval_id=approval.approval_id,
        approval_status=approval.status,
        expires_at=isoformat(approval.expires_at),
        next=next_steps(approval),
    )


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(char in "0123456789abcdef" for char in value)
