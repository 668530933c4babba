"""Anomaly rules: a tenant's own conditions, beside the built-in detectors, that flag ledger entries; and
the tenant's settings of those detectors (the burst threshold)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from haldir.core import ids
from haldir.core.anomalies import (
    DEFAULT_SETTINGS,
    RULE,
    AnomalySettings,
    Rule,
    parse_condition,
    parse_settings,
)
from haldir.core.clock import Clock
from haldir.core.keys import Principal
from haldir.core.quotas import LIMITS_TOOL
from haldir.errors import Conflict, NotFound
from haldir.governor.fields import valid_tenant_id
from haldir.governor.ledger import Ledger
from haldir.store.ports import ChangeFeed, LedgerStore, LimitsStore

MAX_RULES = 100  # every append evaluates every rule of its tenant


class Rules:
    """A tenant's anomaly rules; the ledger reads them when it judges a new entry."""

    def __init__(
        self,
        *,
        ledger_store: LedgerStore,
        limits_store: LimitsStore,
        changes: ChangeFeed,
        ledger: Ledger,
        clock: Clock,
    ) -> None:
        self._changes = changes  # rules judge every append: a change is announced to every process
        self._ledger_store = ledger_store
        self._limits_store = limits_store
        self._ledger = ledger
        self._clock = clock

    async def create_rule(self, principal: Principal, *, type: str, params: Mapping[str, Any]) -> Rule:
        """Add a rule of `type` (`cost_over`, `rate_over`, `tool_match`, `outside_hours`) with its
        parameters."""
        principal.require("audit:write")
        condition = parse_condition(type, params)
        tenant_id = valid_tenant_id(principal.tenant_id)
        if len(await self._ledger_store.list_rules(tenant_id)) >= MAX_RULES:
            raise Conflict(f"this tenant already has {MAX_RULES} anomaly rules, the most allowed; delete one")
        rule = Rule(rule_id=ids.new_id(RULE), condition=condition, created_at=self._clock.now())
        await self._ledger_store.add_rule(tenant_id, rule)
        await self._changes.announce()
        return rule

    async def list_rules(self, principal: Principal) -> list[Rule]:
        principal.require("audit:read")
        return await self._ledger_store.list_rules(principal.tenant_id)

    async def delete_rule(self, principal: Principal, rule_id: str) -> Rule:
        principal.require("audit:write")
        rule = None
        if ids.is_id(RULE, rule_id):
            rule = await self._ledger_store.delete_rule(principal.tenant_id, rule_id)
        if rule is None:
            raise NotFound(f"no anomaly rule {rule_id!r} in this tenant")
        await self._changes.announce()
        return rule

    async def anomaly_settings(self, principal: Principal) -> AnomalySettings:
        """The tenant's settings of the built-in detectors (the defaults until it sets its own)."""
        principal.require("audit:read")
        return await self._limits_store.read_anomaly_settings(principal.tenant_id) or DEFAULT_SETTINGS

    async def set_anomaly_settings(self, principal: Principal, params: Mapping[str, Any]) -> AnomalySettings:
        """Replace the tenant's settings: `burst_max_actions` and `burst_window_seconds` (left out: the
        built-in default), `burst_enabled` false turns the burst detector off. Recorded in the ledger,
        and judged by every process from its next append."""
        principal.require("audit:write")
        settings = parse_settings(params)
        tenant_id = valid_tenant_id(principal.tenant_id)
        entry = self._ledger.entry(
            tenant_id,
            session_id=None,
            agent_id=None,
            tool=LIMITS_TOOL,
            action="anomaly.settings.set",
            status="ok",
            cost_usd=0,
            details={
                "burst_max_actions": settings.burst_max_actions,
                "burst_window_seconds": settings.burst_window_seconds,
                "key_prefix": principal.key_prefix,
            },
        )
        await self._limits_store.set_anomaly_settings(tenant_id, settings, at=self._clock.now(), entry=entry)
        await self._changes.announce()
        return settings
