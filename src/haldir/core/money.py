"""Money: `Decimal` at the edges, integer micro-units (1e-6 USD) in storage and arithmetic."""

from __future__ import annotations

import re
from decimal import Decimal, Inexact, localcontext

from haldir.errors import InvalidAmount

MICROS_PER_UNIT = 1_000_000
MAX_AMOUNT = Decimal(1_000_000_000)  # one billion USD keeps every sum far inside a signed 64-bit column
_MICRO = Decimal("0.000001")
_CENT = Decimal("0.01")
_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_PLAIN = re.compile(r"([0-9]{1,10})(?:\.([0-9]{1,6}))?")  # at most 6 decimals: exact in micro-units
_MAX_WHOLE = int(MAX_AMOUNT)
_MAX_MICROS = _MAX_WHOLE * MICROS_PER_UNIT


def to_micros(value: Decimal | int | str, *, field: str = "amount") -> int:
    """Exact micro-units of a non-negative amount with at most 6 decimals; anything else raises.

    Floats are refused on purpose: by the time a float arrives its value is already rounded.
    """
    # The forms every request carries (a whole number, a plain decimal string) in integer arithmetic;
    # the rest through Decimal, whose exact context costs more than all of this.
    if type(value) is int and 0 <= value <= _MAX_WHOLE:
        return value * MICROS_PER_UNIT
    if type(value) is str and (plain := _PLAIN.fullmatch(value)) is not None:
        whole, fraction = plain.groups()
        parsed = int(whole) * MICROS_PER_UNIT + (int(fraction.ljust(6, "0")) if fraction else 0)
        if parsed <= _MAX_MICROS:
            return parsed
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise InvalidAmount(f"{field} must be a decimal number, got {type(value).__name__}", field=field)
    if isinstance(value, str) and not _NUMBER.fullmatch(value):
        raise InvalidAmount(f"{field} must be a decimal number such as '12.50', got {value!r}", field=field)
    amount = Decimal(value)  # exact: constructing a Decimal never rounds
    if not amount.is_finite():
        raise InvalidAmount(f"{field} must be finite, got {amount}", field=field)
    if amount < 0:
        raise InvalidAmount(f"{field} must not be negative, got {amount}", field=field)
    if amount > MAX_AMOUNT:
        raise InvalidAmount(f"{field} must be at most {MAX_AMOUNT}, got {amount}", field=field)
    with localcontext() as exact:
        exact.prec = 40  # wide enough for any amount up to MAX_AMOUNT in micros
        exact.traps[Inexact] = True
        try:
            micros = amount.scaleb(6)
            whole = micros == micros.to_integral_value()
        except Inexact:
            whole = False
    if not whole:
        raise InvalidAmount(f"{field} has more than 6 decimal places: {value}", field=field)
    return int(micros)


def from_micros(micros: int) -> Decimal:
    """The `Decimal` of `micros`, with at least two decimals: 50_000_000 → 50.00, 1 → 0.000001."""
    amount = (Decimal(micros) / MICROS_PER_UNIT).quantize(_MICRO)
    normal = amount.normalize()
    return amount.quantize(_CENT) if normal == normal.quantize(_CENT) else normal


def format_micros(micros: int) -> str:
    """The decimal string Haldir shows for an amount, never in exponent notation: `from_micros`'s text,
    in integer arithmetic (every entry and answer writes amounts)."""
    whole, fraction = divmod(abs(micros), MICROS_PER_UNIT)
    decimals = f"{fraction:06d}".rstrip("0").ljust(2, "0")
    return f"{'-' if micros < 0 else ''}{whole}.{decimals}"


def format_signed_micros(micros: int) -> str:
    """`format_micros` with a leading '-' for negative amounts: a budget release, never a price."""
    return ("-" if micros < 0 else "") + format_micros(abs(micros))


def signed_micros(text: str, *, field: str = "amount") -> int:
    """The micro-units of a decimal string that may start with '-' (as `format_signed_micros` writes)."""
    negative = isinstance(text, str) and text.startswith("-")
    micros = to_micros(text[1:] if negative else text, field=field)
    return -micros if negative else micros
