"""The governed call: `admit_call` decides and reserves, `finish_call` records and settles, in the steps
of docs/proxy-design.md. The same pipeline governs a local tool (one that runs in the agent's own
process, `admit_local_call` / `finish_local_call`): no upstream, no pin, and the admission kept in the
store so its finish can arrive in another request. Adapters and `ProxyService` call these; nothing else
enforces. A governed call needs the key scope `proxy:write`.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from haldir.core import ids
from haldir.core.approvals import CALL as CALL_SUBJECT
from haldir.core.approvals import Subject
from haldir.core.clock import Clock
from haldir.core.keys import Principal
from haldir.core.ledger import StoredEntry, canonical_bytes
from haldir.core.money import format_micros
from haldir.core.policies import (
    CallLimits,
    Per,
    RateLimit,
    ToolRef,
    check_call,
    limits_for,
    retry_after,
    window_start,
)
from haldir.core.scopes import Scope
from haldir.core.secrets import VAULT_TOOL, SecretVersion
from haldir.core.sessions import Session, check_scope, spend_refusal
from haldir.core.tools import OpenCall, find_secret_refs, scrub, substitute
from haldir.errors import (
    ApprovalDenied,
    BudgetExceeded,
    CallDenied,
    Conflict,
    InvalidRequest,
    NotAllowed,
    NotFound,
    RateLimited,
    ScopeDenied,
    ToolDefinitionChanged,
)
from haldir.governor.approvals import Approvals, Held, Unapproved
from haldir.governor.budgets import record_exhausted
from haldir.governor.fields import text_field
from haldir.governor.ledger import Ledger
from haldir.governor.limits import Limits
from haldir.governor.registry import Registry, governance_fields, secret_details, tool_scope
from haldir.governor.sessions import Sessions
from haldir.governor.vault import Vault
from haldir.store.ports import PaymentStore, ProxyStore, SpendTransaction

CALL_ACTION = "tools/call"
CALL = "call"  # id prefix of a governed call: `call_…`
MAX_ERROR_CHARS = 1000
# A closed call's row is kept this long (a second finish of a local call is a conflict meanwhile, a
# not-found after), then purged by the stale-call sweep; its ledger entries stay.
CLOSED_CALL_RETENTION = timedelta(days=7)
# A local tool's name: what agent frameworks allow, without `__`, which names an upstream's tool.
LOCAL_TOOL_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9_.-])?")


@dataclass(frozen=True)
class Reservation:
    """Cost held on a spend-limit counter while a call runs; released when the call fails."""

    policy_id: str
    subject: str
    micros: int


@dataclass(frozen=True, repr=False)
class Admission:
    """A call the governor let through: what to forward (`arguments` with secrets substituted, to
    `tool_name` on `upstream`, or to the local tool when `upstream` is None) and what `finish_call`
    needs to record and settle it."""

    tenant_id: str
    call_id: str
    arguments_sha256: str  # of the arguments as sent, `{{secret:NAME}}` references and all
    session: Session
    tool: ToolRef
    arguments: dict[str, Any]
    injected: dict[str, str]
    policy_ids: tuple[str, ...]
    cost_micros: int
    reserved: tuple[Reservation, ...]
    started_at: datetime
    entry_id: str  # the admission's ledger entry

    @property
    def upstream(self) -> str | None:
        return self.tool.upstream

    @property
    def tool_name(self) -> str:
        return self.tool.original

    def __repr__(self) -> str:  # arguments hold injected secret values
        return (
            f"Admission({self.session.session_id!r}, {self.tool.exposed!r}, secrets={sorted(self.injected)})"
        )


@dataclass(frozen=True)
class Finished:
    """How a local tool's call was recorded: its finish entry and the cost kept (0 after an error)."""

    call_id: str
    status: str
    entry: StoredEntry
    charged_micros: int


class Proxy:
    """Admits and records governed tool calls, over the registry's tools and policies, the session's
    budget and scope, the Vault's secrets and the ledger."""

    def __init__(
        self,
        *,
        registry: Registry,
        sessions: Sessions,
        approvals: Approvals,
        vault: Vault,
        ledger: Ledger,
        payment_store: PaymentStore,
        proxy_store: ProxyStore,
        clock: Clock,
        limits: Limits,
    ) -> None:
        self._registry = registry
        self._proxy_store = proxy_store  # its admitted calls without an outcome
        self._sessions = sessions
        self._approvals = approvals
        self._vault = vault
        self._ledger = ledger
        self._payment_store = payment_store  # its spend transaction counts, charges and records a call
        self._clock = clock
        self._limits = limits  # the tenant's actions quota

    async def admit_call(
        self, principal: Principal, *, session_id: str, tool: str, arguments: dict[str, Any]
    ) -> Admission:
        """Decide on a `tools/call`, in the steps of docs/proxy-design.md; the admission to forward.

        Every refusal is one ledger entry (status denied, flagged with the reason, the policy id when a
        policy decided) and raises the denial error. A cost is reserved, with its ledger entry, before
        this returns; `finish_call` keeps it or releases it.
        """
        tool = text_field(tool, field="tool", max_length=200)
        return await self._govern(principal, session_id, tool, arguments, local=False, declared_micros=0)

    async def admit_local_call(
        self,
        principal: Principal,
        *,
        session_id: str,
        tool: str,
        arguments: dict[str, Any],
        cost_micros: int = 0,
    ) -> Admission:
        """Decide on a call of a local tool, in the steps of `admit_call` but the pin check (a local tool
        is not registered). `cost_micros` is the caller's declared cost; a tool_cost policy's cost wins
        when it is higher, so a caller can raise a call's price but never lower the operator's. The
        admission is stored with its call, for `finish_local_call`."""
        if not isinstance(tool, str) or not LOCAL_TOOL_NAME.fullmatch(tool) or "__" in tool:
            raise InvalidRequest(
                f"a local tool's name is 1 to 64 letters, digits, '_', '-' or '.', starting with a letter "
                f"or digit and without '__' (which names an upstream's tool); got {tool!r}",
                field="tool",
            )
        if isinstance(cost_micros, bool) or not isinstance(cost_micros, int) or cost_micros < 0:
            raise InvalidRequest(f"cost must be zero or more, got {cost_micros!r}", field="cost_usd")
        return await self._govern(
            principal, session_id, tool, arguments, local=True, declared_micros=cost_micros
        )

    async def _govern(
        self,
        principal: Principal,
        session_id: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        local: bool,
        declared_micros: int,
    ) -> Admission:
        principal.require("proxy:write")
        if not isinstance(arguments, dict):
            raise InvalidRequest("arguments must be a JSON object", field="arguments")
        digest = _sha256(arguments)
        session = await self._sessions.require_session(principal, session_id)
        async with self._limits.action(principal.tenant_id):  # the actions quota, before any decision
            return await self._decide(
                principal,
                session,
                tool=tool,
                arguments=arguments,
                digest=digest,
                local=local,
                declared_micros=declared_micros,
            )

    async def _decide(
        self,
        principal: Principal,
        session: Session,
        *,
        tool: str,
        arguments: dict[str, Any],
        digest: str,
        local: bool,
        declared_micros: int,
    ) -> Admission:
        try:
            return await self._admit(
                session,
                tool,
                arguments,
                arguments_sha256=digest,
                local=local,
                declared_micros=declared_micros,
            )
        except Unapproved as unapproved:  # nothing of the call was kept; a person must decide first
            answer = await self._approvals.ask(principal, session, unapproved.subject, unapproved.held)
            if isinstance(answer, ApprovalDenied):
                await self._record_refusal(session, tool, answer, arguments_sha256=digest)
            raise answer from None
        except (CallDenied, BudgetExceeded, ScopeDenied, NotFound) as refused:
            await self._record_refusal(session, tool, refused, arguments_sha256=digest)
            raise

    async def _admit(
        self,
        session: Session,
        name: str,
        arguments: dict[str, Any],
        *,
        arguments_sha256: str,
        local: bool,
        declared_micros: int,
    ) -> Admission:
        now = self._clock.now()
        # Step 1: the session is valid.
        invalid = session.invalid_reason(now)
        if invalid:
            raise ScopeDenied(invalid, flag_reason=invalid)
        # Step 2: the tool is known and its pin current (a local tool has neither registration nor pin).
        tool = ToolRef.local(name) if local else await self._pinned_tool(session.tenant_id, name)
        # Step 3: the session may call it.
        decision = check_scope(session, tool_scope(tool.exposed), now=now)
        if not decision.allowed:
            raise NotAllowed(decision.reason or "denied", flag_reason=decision.reason)
        # Step 4: the policies, in their fixed order.
        policies = await self._registry.policies(session.tenant_id)
        refusal = check_call(policies, tool=tool, arguments=arguments, now=now)
        if refusal is not None:
            raise refusal.error(refusal.reason, flag_reason=refusal.reason, policy_id=refusal.policy_id)
        limits = limits_for(policies, tool=tool)
        if declared_micros > limits.cost_micros:
            limits = replace(limits, cost_micros=declared_micros)
        # Step 5: secrets referenced by the arguments, under the session's scope.
        secrets = await self._secrets_for_call(session, tool, arguments)
        injected = {secret.name: await self._vault.open_unchecked(secret) for secret in secrets}
        # Step 6: approval rules that hold this exact call (from memory; most calls are held by none).
        subject = Subject(
            CALL_SUBJECT,
            session.session_id,
            session.agent_id,
            tool.exposed,
            arguments_sha256,
            limits.cost_micros,
        )
        held = await self._approvals.holding(subject, tenant_id=session.tenant_id)
        # Step 7: one durable transaction before the call is forwarded: rate limits, the cost against the
        # budget and spend limits, the approval used, the secrets released, the admission's ledger entry.
        call_id = ids.new_id(CALL)
        reserved, entry_id = await self._record_admission(
            session,
            tool,
            limits,
            now,
            call_id=call_id,
            secrets=secrets,
            arguments_sha256=arguments_sha256,
            approval=(subject, held) if held else None,
            declared_micros=declared_micros if local else None,
        )
        return Admission(
            tenant_id=session.tenant_id,
            call_id=call_id,
            arguments_sha256=arguments_sha256,
            session=session,
            tool=tool,
            arguments=substitute(arguments, injected),
            injected=injected,
            policy_ids=limits.policy_ids,
            cost_micros=limits.cost_micros,
            reserved=reserved,
            started_at=now,
            entry_id=entry_id,
        )

    async def _pinned_tool(self, tenant_id: str, name: str) -> ToolRef:
        """An upstream's tool by its exposed name, refused while its definition waits for approval."""
        tool = await self._registry.proxy_tool(tenant_id, name)
        if tool.status == "changed":
            reason = (
                f"Tool '{tool.name}' changed its definition since it was pinned; an operator must approve it"
            )
            raise ToolDefinitionChanged(reason, flag_reason=reason)
        return ToolRef(tool.name, tool.upstream, tool.tool_name)

    async def _secrets_for_call(
        self, session: Session, tool: ToolRef, arguments: dict[str, Any]
    ) -> list[SecretVersion]:
        """The secrets the arguments reference, each only if the session holds its `scope_required`;
        every scope is checked before any secret is opened."""
        secrets = []
        for ref in sorted(find_secret_refs(arguments)):
            secret = await self._vault.latest_secret(session.tenant_id, ref)
            if secret is None:
                reason = (
                    f"Tool '{tool.exposed}': argument refers to secret {ref!r}, "
                    "which this tenant does not have"
                )
                raise NotFound(reason, flag_reason=reason)
            decision = check_scope(session, Scope.from_text(secret.scope_required), now=self._clock.now())
            if not decision.allowed:
                reason = f"secret {ref!r} needs scope '{secret.scope_required}': {decision.reason}"
                raise ScopeDenied(reason, flag_reason=reason)
            secrets.append(secret)
        return secrets

    async def _record_admission(
        self,
        session: Session,
        tool: ToolRef,
        limits: CallLimits,
        now: datetime,
        *,
        call_id: str,
        secrets: list[SecretVersion],
        arguments_sha256: str,
        approval: tuple[Subject, Held] | None,
        declared_micros: int | None,
    ) -> tuple[tuple[Reservation, ...], str]:
        """Take the rate-limit counters, charge the cost to the session (capped by per-session spend
        limits) and to every per-agent and per-tenant spend limit, count the secrets released, and record
        the admission, all in one transaction: when this returns it is durable, so no call is forwarded
        without its record. Any refusal rolls all of it back."""
        cost = limits.cost_micros
        rates = sorted((pid, _subject(rule.per, session), rule) for pid, rule in limits.rate_limits)
        counters = sorted(
            (pid, _subject(rule.per, session), rule.max_micros)
            for pid, rule in limits.spend_limits
            if rule.per != "session"
        )
        cap = limits.session_cap()
        reserved = tuple(Reservation(pid, subject, cost) for pid, subject, _ in counters) if cost else ()
        async with self._payment_store.spend_transaction(session.tenant_id) as tx:
            for pid, subject, rule in rates:
                await _take_call(tx, pid, subject, rule, now)
            charged = session
            if cost:
                found = await tx.charge(
                    session.session_id, cost, now=now, cap=None if cap is None else cap[0]
                )
                if found is None:
                    raise await _budget_refusal(tx, session, cost, cap, now)
                charged = found
                for pid, subject, max_micros in counters:
                    if await tx.charge_limit(pid, subject, cost, max_micros=max_micros) is None:
                        reason = (
                            f"Spend limit of {format_micros(max_micros)} USD per {_per_name(subject)} "
                            f"({pid}) would be exceeded by {format_micros(cost)} USD"
                        )
                        raise BudgetExceeded(reason, flag_reason=reason, policy_id=pid)
            if approval is not None:
                await self._approvals.use(tx, *approval)
            for secret in secrets:
                await tx.count_release(secret.name, at=now)
                details = {
                    **secret_details(secret),
                    "actor": "proxy",
                    "tool": tool.exposed,
                    "call_id": call_id,
                }
                fields = governance_fields("secret.release", details) | {"tool": VAULT_TOOL}
                tx.append(
                    self._ledger.entry(
                        session.tenant_id, session_id=session.session_id, agent_id=session.agent_id, **fields
                    )
                )
            fields = _call_fields(tool, limits, status="ok", cost_micros=cost, phase="admit", call_id=call_id)
            fields["details"]["arguments_sha256"] = arguments_sha256
            if declared_micros is not None:
                fields["details"]["declared_cost_usd"] = format_micros(declared_micros)
            draft = self._ledger.spend_entry(charged, charged_micros=cost, **fields)
            kept = None
            if tool.upstream is None:  # what the finish, in another request, needs of this admission
                kept = {
                    "local": True,
                    "entry_id": draft.entry_id,
                    "arguments_sha256": arguments_sha256,
                    "policy_ids": list(limits.policy_ids),
                    "reserved": [[r.policy_id, r.subject, r.micros] for r in reserved],
                    "secrets": [secret.name for secret in secrets],
                }
            await tx.open_call(
                OpenCall(
                    session.tenant_id,
                    call_id,
                    session.session_id,
                    session.agent_id,
                    tool.exposed,
                    cost,
                    now,
                    details=kept,
                )
            )
            entry = tx.append(draft)
            if cost:
                await record_exhausted(
                    tx, charged, entry.draft.entry_id, charged_micros=cost, clock=self._clock
                )
        return reserved, draft.entry_id

    async def _record_refusal(
        self, session: Session, tool: str, refused: Exception, *, arguments_sha256: str
    ) -> None:
        details = getattr(refused, "details", {})
        reason = details.get("flag_reason") or str(refused)
        recorded: dict[str, Any] = {"tool": tool, "refused": reason, "arguments_sha256": arguments_sha256}
        if details.get("policy_id") is not None:
            recorded["policy_id"] = details["policy_id"]
        await self._ledger.append(
            session.tenant_id,
            session_id=session.session_id,
            agent_id=session.agent_id,
            flag_reason=reason,
            tool=tool,
            action=CALL_ACTION,
            status="denied",
            cost_usd=0,
            details=recorded,
        )

    async def finish_call(
        self,
        principal: Principal,
        admission: Admission,
        *,
        result: dict[str, Any] | None,
        error: str | None,
        latency_ms: float,
    ) -> StoredEntry:
        """Record how an admitted call ended: ok, or error (the upstream failed, or its result says
        `isError`). An error releases the reserved cost in the same transaction as its entry. The entry
        holds digests of the scrubbed arguments and result, never a secret value."""
        principal.require("proxy:write")
        if admission.tenant_id != principal.tenant_id:
            raise InvalidRequest("this admission belongs to another tenant")
        if not _is_duration(latency_ms):
            raise InvalidRequest(f"latency_ms must be a finite number of milliseconds, got {latency_ms!r}")
        failed = error is not None or (isinstance(result, dict) and result.get("isError") is True)
        entry, _ = await self._settle(
            admission, failed=failed, result=result, error=error, latency_ms=latency_ms, once=False
        )
        return entry

    async def finish_local_call(
        self,
        principal: Principal,
        call_id: str,
        *,
        status: str,
        error: str | None = None,
        latency_ms: float | None = None,
    ) -> Finished:
        """Record how a local tool's call ended, as the agent reports it: `ok` keeps the reserved cost,
        `error` releases it. A call is finished once: a second finish, or one after the stale-call sweep
        recorded the outcome as unknown, is a `Conflict`. The error text is stored with the values of
        the secrets injected into the call scrubbed out."""
        principal.require("proxy:write")
        if status not in ("ok", "error"):
            raise InvalidRequest(f"status must be 'ok' or 'error', got {status!r}", field="status")
        if latency_ms is not None and not _is_duration(latency_ms):
            raise InvalidRequest(f"latency_ms must be a finite number of milliseconds, got {latency_ms!r}")
        if error is not None and not isinstance(error, str):
            raise InvalidRequest("error must be a string", field="error")
        call = None
        if ids.is_id(CALL, call_id):
            call = await self._proxy_store.get_call(principal.tenant_id, call_id)
        if call is None or not (call.details or {}).get("local"):
            raise NotFound(f"no local tool call {call_id!r} in this tenant")
        if call.closed_at is not None:
            raise _finished_already(call)
        admission = await self._local_admission(principal, call)
        failed = status == "error"
        entry, charged = await self._settle(
            admission,
            failed=failed,
            result=None,
            error=(error or "the tool failed") if failed else None,
            latency_ms=latency_ms,
            once=True,
        )
        return Finished(call_id, status, entry, charged)

    async def _local_admission(self, principal: Principal, call: OpenCall) -> Admission:
        """The admission of a stored local call; the secrets it used are opened only to scrub them."""
        kept = call.details or {}
        session = await self._sessions.require_session(principal, call.session_id)
        injected = {}
        for name in kept.get("secrets", []):
            secret = await self._vault.latest_secret(call.tenant_id, name)
            if secret is not None:
                injected[name] = await self._vault.open_unchecked(secret)
        return Admission(
            tenant_id=call.tenant_id,
            call_id=call.call_id,
            arguments_sha256=kept["arguments_sha256"],
            session=session,
            tool=ToolRef.local(call.tool),
            arguments={},
            injected=injected,
            policy_ids=tuple(kept.get("policy_ids", [])),
            cost_micros=call.cost_micros,
            reserved=tuple(
                Reservation(pid, subject, int(micros)) for pid, subject, micros in kept["reserved"]
            ),
            started_at=call.admitted_at,
            entry_id=kept["entry_id"],
        )

    async def _settle(
        self,
        admission: Admission,
        *,
        failed: bool,
        result: dict[str, Any] | None,
        error: str | None,
        latency_ms: float | None,
        once: bool,
    ) -> tuple[StoredEntry, int]:
        """Close the call, keep or release its cost, and append its finish entry, in one transaction;
        the entry and the cost kept. With `once`, a call closed meanwhile is a `Conflict` and nothing is
        written; without it the finish is recorded `after_sweep` and the sweep's settlement stands."""
        limits = CallLimits(admission.policy_ids, (), (), admission.cost_micros)
        fields = _call_fields(
            admission.tool,
            limits,
            status="error" if failed else "ok",
            cost_micros=0 if failed else admission.cost_micros,
            phase="finish",
            call_id=admission.call_id,
        )
        fields["details"] |= {
            "arguments_sha256": admission.arguments_sha256,
            "result_sha256": None if result is None else _sha256(scrub(result, admission.injected)),
            "latency_ms": None if latency_ms is None else round(float(latency_ms), 3),
        }
        if error is not None:
            fields["details"]["error"] = scrub(error, admission.injected)[:MAX_ERROR_CHARS]
        session = admission.session
        now = self._clock.now()
        async with self._payment_store.spend_transaction(session.tenant_id) as tx:
            still_open = await tx.close_call(admission.call_id, outcome="error" if failed else "ok", at=now)
            if not still_open:  # a sweep recorded its outcome as unknown meanwhile: that settlement stands
                if once:
                    raise Conflict(f"call {admission.call_id} was finished already; it is finished once")
                fields["details"]["after_sweep"] = True
            release = admission.cost_micros if failed and still_open else 0
            current = session
            if release:
                current = await tx.charge(session.session_id, -release, now=now) or session
                for reservation in admission.reserved:
                    await tx.release_limit(reservation.policy_id, reservation.subject, reservation.micros)
            entry = tx.append(self._ledger.spend_entry(current, charged_micros=-release, **fields))
        kept = 0 if failed else admission.cost_micros
        return entry.result(), kept

    async def close_stale_calls(self, *, older_than: timedelta, limit: int = 500) -> int:
        """Record "outcome unknown" for calls admitted longer ago than `older_than` whose outcome was
        never recorded (the server stopped between forwarding a call and recording how it ended); how
        many. Their cost stays charged: the call may have run. Any number of replicas may sweep at once:
        the call's row goes in the same transaction as its entry, so each call is closed once."""
        now = self._clock.now()
        stale = await self._proxy_store.stale_calls(admitted_before=now - older_than, limit=limit)
        closed = 0
        for call in stale:
            async with self._payment_store.spend_transaction(call.tenant_id) as tx:
                if not await tx.close_call(call.call_id, outcome="unknown", at=now):
                    continue
                reason = (
                    f"outcome unknown: call {call.call_id} of tool '{call.tool}' was admitted at "
                    f"{call.admitted_at.isoformat()} and the server stopped before recording how it ended"
                )
                tx.append(
                    self._ledger.entry(
                        call.tenant_id,
                        session_id=call.session_id,
                        agent_id=call.agent_id,
                        flag_reason=reason,
                        tool=call.tool,
                        action=CALL_ACTION,
                        status="error",
                        cost_usd=format_micros(call.cost_micros),
                        details={"phase": "finish", "call_id": call.call_id, "outcome": "unknown"}
                        | ({"upstream": None, "local": True} if (call.details or {}).get("local") else {}),
                    )
                )
                closed += 1
        await self._proxy_store.purge_closed_calls(closed_before=now - CLOSED_CALL_RETENTION, limit=limit)
        return closed


def _call_fields(
    tool: ToolRef, limits: CallLimits, *, status: str, cost_micros: int, phase: str, call_id: str
) -> dict[str, Any]:
    """The ledger fields of a governed call: `admit` records the decision and holds its cost, `finish`
    how it ended; both carry the call's id. A local tool's call has `upstream` null and `local` true."""
    details: dict[str, Any] = {
        "phase": phase,
        "call_id": call_id,
        "upstream": tool.upstream,
        "tool": tool.exposed,
        "tool_name": tool.original,
        "policy_ids": list(limits.policy_ids),
    }
    if tool.upstream is None:
        details["local"] = True
    return {
        "tool": tool.exposed,
        "action": CALL_ACTION,
        "status": status,
        "cost_usd": format_micros(cost_micros),
        "details": details,
    }


def _finished_already(call: OpenCall) -> Conflict:
    how = "as outcome unknown by the stale-call sweep" if call.outcome == "unknown" else f"as {call.outcome}"
    when = "" if call.closed_at is None else f", at {call.closed_at.isoformat()}"
    return Conflict(f"call {call.call_id} was finished already, {how}{when}")


def _subject(per: Per, session: Session) -> str:
    """Whose counter a limit counts on: the session's, the agent's or the whole tenant's."""
    if per == "session":
        return f"session:{session.session_id}"
    if per == "agent":
        return f"agent:{session.agent_id}"
    return "tenant"


def _is_duration(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 <= value < math.inf


def _per_name(subject: str) -> str:
    return subject.partition(":")[0]


async def _take_call(tx: SpendTransaction, pid: str, subject: str, rule: RateLimit, now: datetime) -> None:
    start = window_start(now, rule.window_seconds)
    if await tx.take_call(pid, subject, max_calls=rule.max_calls, window_start=start) is None:
        wait = retry_after(now, rule.window_seconds)
        reason = (
            f"Rate limit of {rule.max_calls} calls per {rule.window_seconds} s per {rule.per} ({pid}) "
            f"reached; retry in {wait} s"
        )
        raise RateLimited(reason, flag_reason=reason, policy_id=pid, retry_after=wait)


async def _budget_refusal(
    tx: SpendTransaction, session: Session, cost: int, cap: tuple[int, str] | None, now: datetime
) -> ScopeDenied | BudgetExceeded:
    """Why the session's charge did not apply: it is no longer valid, its budget, or a session cap."""
    current = await tx.session(session.session_id) or session
    invalid = current.invalid_reason(now)
    if invalid:
        return ScopeDenied(invalid, flag_reason=invalid)
    left = format_micros(current.remaining_micros)
    if current.spent_micros + cost > current.spend_limit_micros or cap is None:
        reason = spend_refusal(current, cost, now=now)
        return BudgetExceeded(reason, flag_reason=reason, remaining_budget=left)
    limit, pid = cap
    reason = (
        f"Spend limit of {format_micros(limit)} USD per session ({pid}) would be exceeded: session "
        f"{session.session_id} spent {format_micros(current.spent_micros)} USD, the call costs "
        f"{format_micros(cost)}"
    )
    return BudgetExceeded(reason, flag_reason=reason, policy_id=pid, remaining_budget=left)


def _sha256(value: dict[str, Any]) -> str:
    """SHA-256 (hex) of the RFC 8785 JSON of a JSON object."""
    return hashlib.sha256(canonical_bytes(value)).hexdigest()
