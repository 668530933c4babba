"""Money in the SDK's answers: the server's decimal strings as exact `Decimal`s, and back.

The server writes amounts as decimal strings (never floats). `with_money` turns the money fields of an
answer into `Decimal`, leaving user-supplied data (entry details, tool arguments and results) exactly as
sent; `plain` gives back the JSON the server sent, character for character.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

Json = dict[str, Any]

# The API's money fields: their decimal strings come back as `Decimal`.
MONEY_FIELDS = frozenset(
    {
        "spend_limit",
        "spent",
        "remaining_budget",
        "amount",
        "captured_amount",
        "reported",
        "cost_usd",
        "charged_usd",
        "total_usd",
        "max_usd",
        "amount_usd",
        "spend_limit_usd",
        "spent_usd",
        "threshold",
    }
)
# Maps of a name to an amount (GET /v1/audit/spend).
MONEY_MAPS = frozenset({"by_session", "by_agent", "by_tool"})
# User-supplied data (and upstream tools' answers): handed back exactly as sent, whatever its keys.
OPAQUE_FIELDS = frozenset(
    {
        "details",
        "arguments",
        "content",
        "structuredContent",
        "structured_content",
        "definition",
        "pending_definition",
        "inputSchema",
        "outputSchema",
        "annotations",
        "_meta",
        "result",
    }
)
# The decimal strings the server writes: no exponent and no leading zeros, so `plain` gives them back
# character for character.
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")


def with_money(value: Any) -> Any:
    """`value` with the decimal strings of its money fields as `Decimal`, outside user-supplied data."""
    if isinstance(value, dict):
        return {name: _field(name, item) for name, item in value.items()}
    if isinstance(value, list):
        return [with_money(item) for item in value]
    return value


def _field(name: str, value: Any) -> Any:
    if name in OPAQUE_FIELDS:
        return value
    if name in MONEY_FIELDS and isinstance(value, str):
        return _decimal(value)
    if name in MONEY_MAPS and isinstance(value, dict):
        return {key: _decimal(amount) if isinstance(amount, str) else amount for key, amount in value.items()}
    return with_money(value)


def _decimal(value: str) -> Decimal | str:
    """A decimal string as the exact `Decimal` it writes; anything else as it is."""
    return Decimal(value) if _DECIMAL.fullmatch(value) else value


def plain(result: Json) -> Json:
    """`result` as the plain JSON the server sent: each `Decimal` back to its exact decimal string."""
    found: Json = _plain(result)
    return found


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
