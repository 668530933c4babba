"""Shared edge types: money parsing and rendering, timestamps."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainSerializer
from pydantic.config import JsonDict, JsonValue

from haldir.core.clock import isoformat


def _decimal(value: Any) -> Any:
    # JSON numbers arrive as floats; repr gives back the shortest text that the client sent.
    if isinstance(value, bool):
        raise ValueError("a boolean is not an amount")
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


Money = Annotated[
    Decimal,
    # NaN and infinities get through here so that the domain refuses them with `invalid_amount`.
    Field(
        allow_inf_nan=True,
        description="A USD amount: a JSON number or decimal string, at most 6 decimals, not negative.",
    ),
    BeforeValidator(_decimal),
]
Timestamp = Annotated[datetime, PlainSerializer(isoformat, return_type=str)]
OptionalTimestamp = Annotated[
    datetime | None, PlainSerializer(lambda v: None if v is None else isoformat(v), return_type=str | None)
]


def documented_pattern(regex: re.Pattern[str]) -> JsonDict:
    """A name's shape for the OpenAPI document (`json_schema_extra`), anchored as `fullmatch` reads it.
    Documented, not enforced by pydantic: the domain refuses a bad name with its own message and field."""
    return {"pattern": f"^(?:{regex.pattern})$"}


def documented_enum(values: Iterable[str]) -> JsonDict:
    """The values a field takes, for the OpenAPI document; documented, not enforced (as above)."""
    listed: list[JsonValue] = [*sorted(values)]
    return {"enum": listed}
