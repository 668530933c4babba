"""The governor: the services by name, wired once (`haldir.runtime.wire`). Adapters call one method of one
service per use case, e.g. `governor.sessions.create_session(...)`; the governor itself decides nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from haldir.core.clock import Clock
from haldir.governor.approvals import Approvals
from haldir.governor.budgets import Budgets
from haldir.governor.evidence import Evidence
from haldir.governor.keys import Keys
from haldir.governor.ledger import Ledger
from haldir.governor.limits import Limits
from haldir.governor.proxy import Proxy
from haldir.governor.registry import Registry
from haldir.governor.retention import Retention
from haldir.governor.rules import Rules
from haldir.governor.sessions import Sessions
from haldir.governor.usage import Usage
from haldir.governor.vault import Vault
from haldir.governor.webhooks import Webhooks


@dataclass(frozen=True)
class Governor:
    """Every use case, one service per capability."""

    keys: Keys
    approvals: Approvals
    sessions: Sessions
    ledger: Ledger
    rules: Rules
    limits: Limits
    budgets: Budgets
    vault: Vault
    registry: Registry
    proxy: Proxy
    webhooks: Webhooks
    evidence: Evidence
    usage: Usage
    retention: Retention
    clock: Clock

    def now(self) -> datetime:
        """The services' clock, for adapters that render time-dependent fields such as `is_valid`."""
        return self.clock.now()
