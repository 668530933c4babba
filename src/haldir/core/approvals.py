"""Approvals: the rules that make a spend or a governed call wait for a person, and the request a person
decides. An approval is bound to the exact request it allows (its `binding`) and is used at most once."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from haldir.core.clock import isoformat
from haldir.core.ledger import canonical_bytes
from haldir.core.money import format_micros, to_micros
from haldir.errors import InvalidRequest

APPROVAL = "apr"  # id prefixes
APPROVAL_RULE = "arl"

SPEND_OVER, TOOL, AGENT = "spend_over", "tool", "agent"
RULE_TYPES = (SPEND_OVER, TOOL, AGENT)

PENDING, APPROVED, DENIED, EXPIRED, CONSUMED = "pending", "approved", "denied", "expired", "consumed"
STATUSES = (PENDING, APPROVED, DENIED, EXPIRED, CONSUMED)
OPEN = (PENDING, APPROVED)  # statuses that lapse at `expires_at`

PAYMENT, CALL, REQUEST = "payment", "call", "request"  # what asked: a payment, a governed call, an agent

REQUESTED_EVENT, DECIDED_EVENT = "approval.requested", "approval.decided"
MAX_RULES = 100
MAX_TEXT = 1000


@dataclass(frozen=True)
class ApprovalRule:
    """`spend_over`: a spend of more than `threshold_micros`; `tool`: a call of a tool whose name matches
    the glob `tool`; `agent`: every spend of agent `agent_id`. `agent_id` limits the other types to one
    agent."""

    rule_id: str
    type: str
    threshold_micros: int | None
    tool: str | None
    agent_id: str | None
    description: str
    created_by: str | None
    created_at: datetime

    def reason(self, subject: Subject) -> str | None:
        """Why this rule holds `subject` for approval; None when it does not apply."""
        if self.agent_id is not None and subject.agent_id != self.agent_id:
            return None
        if self.type == SPEND_OVER:
            assert self.threshold_micros is not None  # parse_rule requires it
            if subject.amount_micros > self.threshold_micros:
                return (
                    f"spend of {format_micros(subject.amount_micros)} USD is over "
                    f"{format_micros(self.threshold_micros)} USD ({self.rule_id})"
                )
            return None
        if self.type == TOOL:
            assert self.tool is not None
            if fnmatchcase(subject.tool, self.tool):
                return f"tool '{subject.tool}' matches '{self.tool}' ({self.rule_id})"
            return None
        if subject.amount_micros > 0:  # AGENT: every spend of the agent
            return f"every spend of agent '{self.agent_id}' needs approval ({self.rule_id})"
        return None

    def as_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"rule_id": self.rule_id, "type": self.type}
        if self.threshold_micros is not None:
            shown["threshold"] = format_micros(self.threshold_micros)
        if self.tool is not None:
            shown["tool"] = self.tool
        shown["agent_id"] = self.agent_id
        shown["description"] = self.description
        return shown


def parse_rule(
    spec: Mapping[str, Any], *, rule_id: str, created_by: str | None, created_at: datetime
) -> ApprovalRule:
    """A rule from its API form: `{"type": "spend_over", "threshold": 100}`, `{"type": "tool", "tool":
    "send_*"}`, `{"type": "agent", "agent_id": "…"}`, each with an optional `agent_id` and `description`."""
    kind = spec.get("type")
    if kind not in RULE_TYPES:
        raise InvalidRequest(f"type must be one of {list(RULE_TYPES)}, got {kind!r}", field="type")
    allowed = {"type", "agent_id", "description"} | {SPEND_OVER: {"threshold"}, TOOL: {"tool"}, AGENT: set()}[
        kind
    ]
    extra = sorted(set(spec) - allowed)
    if extra:
        raise InvalidRequest(f"a {kind} rule takes {sorted(allowed)}; unexpected {extra}", field=extra[0])
    agent_id = _optional_text(spec.get("agent_id"), field="agent_id", max_length=200)
    threshold = tool = None
    if kind == SPEND_OVER:
        if "threshold" not in spec:
            raise InvalidRequest("a spend_over rule needs a threshold in USD", field="threshold")
        threshold = to_micros(spec["threshold"], field="threshold")
    elif kind == TOOL:
        tool = _optional_text(spec.get("tool"), field="tool", max_length=200)
        if tool is None:
            raise InvalidRequest("a tool rule needs a tool name or glob, such as 'send_*'", field="tool")
    elif agent_id is None:
        raise InvalidRequest("an agent rule needs the agent_id whose every spend it holds", field="agent_id")
    description = _optional_text(spec.get("description"), field="description", max_length=500) or ""
    return ApprovalRule(rule_id, kind, threshold, tool, agent_id, description, created_by, created_at)


@dataclass(frozen=True)
class Subject:
    """What asks for approval: a payment, a governed call or an agent's own request, of a session."""

    kind: str
    session_id: str
    agent_id: str
    tool: str
    arguments_sha256: str | None
    amount_micros: int

    @property
    def binding(self) -> str:
        """SHA-256 (hex) of the exact request: the same request again finds its approval; any other
        session, tool, argument or amount does not. What asked is not part of it, so an agent may ask ahead
        (`request`) for exactly the call or payment it will make, and that call or payment uses it."""
        return hashlib.sha256(
            canonical_bytes(
                {
                    "session_id": self.session_id,
                    "tool": self.tool,
                    "arguments_sha256": self.arguments_sha256,
                    "amount": self.amount_micros,
                }
            )
        ).hexdigest()


def holding_rules(rules: Iterable[ApprovalRule], subject: Subject) -> list[tuple[ApprovalRule, str]]:
    """The rules that hold `subject` for approval, each with why."""
    held = []
    for rule in rules:
        reason = rule.reason(subject)
        if reason is not None:
            held.append((rule, reason))
    return held


@dataclass(frozen=True)
class Approval:
    """A request for a person's decision. `expires_at` is when a pending request lapses, and once it is
    approved, by when the approved request must be made again to use it."""

    tenant_id: str
    approval_id: str
    binding: str
    status: str
    kind: str
    session_id: str
    agent_id: str
    tool: str
    arguments_sha256: str | None
    amount_micros: int
    reason: str
    rule_ids: tuple[str, ...]
    requested_by: str | None
    requested_at: datetime
    expires_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    note: str | None = None
    consumed_at: datetime | None = None

    def lapsed(self, now: datetime) -> bool:
        """Pending or approved, and past its `expires_at`: it reads as expired (and is denied)."""
        return self.status in OPEN and now >= self.expires_at

    def status_at(self, now: datetime) -> str:
        return EXPIRED if self.lapsed(now) else self.status

    def event_data(self) -> dict[str, Any]:
        """What an `approval.*` event carries: who asked for what, and the decision; no argument values."""
        return {
            "approval_id": self.approval_id,
            "status": self.status,
            "kind": self.kind,
            "session_id": self.session_id,
            "agent_id": self.agent_id,
            "tool": self.tool,
            "amount_usd": format_micros(self.amount_micros),
            "reason": self.reason,
            "expires_at": isoformat(self.expires_at),
            "decided_by": self.decided_by,
            "note": self.note,
        }


def next_steps(approval: Approval) -> str:
    """What an agent told to wait should do."""
    return (
        f"a person must approve {approval.approval_id} (POST /v1/approvals/{approval.approval_id}/approve, "
        f"`haldir approvals approve {approval.approval_id}`, or the dashboard) before "
        f"{isoformat(approval.expires_at)}; then make the same request again, unchanged, to run it once"
    )


def _optional_text(value: Any, *, field: str, max_length: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise InvalidRequest(
            f"{field} must be a non-empty string of at most {max_length} characters", field=field
        )
    if any(ord(char) < 32 for char in value):
        raise InvalidRequest(f"{field} must not contain control characters", field=field)
    return value
