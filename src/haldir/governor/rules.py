"""Anomaly rules: a tenant's own conditions, beside the built-in detectors, that flag ledger entries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from haldir.core import ids
from haldir.core.anomalies import RULE, Rule, parse_condition
from haldir.core.keys import Principal
from haldir.errors import Conflict, NotFound
from haldir.governor.base import GovernorBase, valid_tenant_id

MAX_RULES = 100  # every append evaluates every rule of its tenant


class RulesMixin(GovernorBase):
    async def create_rule(self, principal: Principal, *, type: str, params: Mapping[str, Any]) -> Rule:
        """Add a rule of `type` (`cost_over`, `rate_over`, `tool_match`) with its parameters."""
        principal.require("audit:write")
        condition = parse_condition(type, params)
        tenant_id = valid_tenant_id(principal.tenant_id)
        if len(await self._store.ledger.list_rules(tenant_id)) >= MAX_RULES:
            raise Conflict(f"this tenant already has {MAX_RULES} anomaly rules, the most allowed; delete one")
        rule = Rule(rule_id=ids.new_id(RULE), condition=condition, created_at=self._clock.now())
        await self._store.ledger.add_rule(tenant_id, rule)
        return rule

    async def list_rules(self, principal: Principal) -> list[Rule]:
        principal.require("audit:read")
        return await self._store.ledger.list_rules(principal.tenant_id)

    async def delete_rule(self, principal: Principal, rule_id: str) -> Rule:
        principal.require("audit:write")
        rule = None
        if ids.is_id(RULE, rule_id):
            rule = await self._store.ledger.delete_rule(principal.tenant_id, rule_id)
        if rule is None:
            raise NotFound(f"no anomaly rule {rule_id!r} in this tenant")
        return rule
