"""The governor: the one place that authenticates, authorizes and decides. Each concern is a module."""

from __future__ import annotations

from haldir.governor.budgets import BudgetsMixin
from haldir.governor.keys import KeysMixin
from haldir.governor.proxy import ProxyMixin
from haldir.governor.rules import RulesMixin
from haldir.governor.sessions import SessionsMixin
from haldir.governor.vault import VaultMixin
from haldir.governor.verification import VerificationMixin


class Governor(KeysMixin, SessionsMixin, ProxyMixin, BudgetsMixin, VaultMixin, VerificationMixin, RulesMixin):
    """Every use case, over the store ports. Adapters call one method each."""
