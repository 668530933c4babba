"""Money: exact decimal amounts in and out of integer micro-units."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haldir.core.money import MAX_AMOUNT, MICROS_PER_UNIT, format_micros, from_micros, to_micros
from haldir.errors import InvalidAmount, InvalidRequest

MAX_MICROS = int(MAX_AMOUNT) * MICROS_PER_UNIT

micros_in_range = st.integers(min_value=0, max_value=MAX_MICROS)


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        (Decimal("29.99"), 29_990_000),
        (50, 50_000_000),
        ("50", 50_000_000),
        ("0.000001", 1),
        ("0", 0),
        (0, 0),
        (Decimal("0.0000010"), 1),
        ("1e2", 100_000_000),
        (MAX_AMOUNT, MAX_MICROS),
        ("1000000000.000000", MAX_MICROS),
    ],
)
def test_decimal_int_and_str_amounts_convert_to_exact_micros(value: Decimal | int | str, micros: int) -> None:
    assert to_micros(value) == micros


@pytest.mark.parametrize("value", [1.5, 0.0, float("nan"), True, False, None, [], b"5"])
def test_values_that_are_not_decimal_int_or_str_are_rejected(value: object) -> None:
    with pytest.raises(InvalidAmount, match="must be a decimal number"):
        to_micros(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "abc", "1,50", "$5", "5 USD", "0x10"])
def test_text_that_is_not_a_number_is_rejected(value: str) -> None:
    with pytest.raises(InvalidAmount, match="must be a decimal number"):
        to_micros(value)


@pytest.mark.parametrize(
    "value", ["NaN", "sNaN", "Infinity", "-Infinity", Decimal("NaN"), Decimal("Infinity"), "inf"]
)
def test_nan_and_infinities_are_rejected(value: Decimal | str) -> None:
    with pytest.raises(InvalidAmount, match=r"must be finite|must be a decimal number"):
        to_micros(value)


@pytest.mark.parametrize("value", ["-0.01", -1, Decimal("-0.000001"), "-1e9"])
def test_negative_amounts_are_rejected(value: Decimal | int | str) -> None:
    with pytest.raises(InvalidAmount, match="must not be negative"):
        to_micros(value)


@pytest.mark.parametrize("value", ["0.0000001", "1.1234567", Decimal("1E-7"), "29.9999999"])
def test_amounts_with_more_than_six_decimals_are_rejected(value: Decimal | str) -> None:
    with pytest.raises(InvalidAmount, match="more than 6 decimal places"):
        to_micros(value)


@pytest.mark.parametrize("value", ["0.1000000000000000000000000000001", "999999999.9999999999999999999999"])
def test_amounts_with_more_than_six_decimals_are_rejected_even_beyond_28_digits(value: str) -> None:
    with pytest.raises(InvalidAmount):
        to_micros(value)


@pytest.mark.parametrize("value", [MAX_AMOUNT + Decimal("0.000001"), int(MAX_AMOUNT) + 1, "1e10", 10**30])
def test_amounts_above_the_maximum_are_rejected(value: Decimal | int | str) -> None:
    with pytest.raises(InvalidAmount, match="must be at most 1000000000"):
        to_micros(value)


def test_rejected_amount_names_its_field_in_message_and_details() -> None:
    with pytest.raises(InvalidAmount) as caught:
        to_micros("-3", field="spend_limit")
    assert caught.value.message.startswith("spend_limit must not be negative")
    assert caught.value.details == {"field": "spend_limit"}
    assert caught.value.code == "invalid_amount"
    assert isinstance(caught.value, InvalidRequest)


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "0.00"),
        (1, "0.000001"),
        (10, "0.00001"),
        (10_000, "0.01"),
        (1_500_000, "1.50"),
        (1_234_500, "1.2345"),
        (29_990_000, "29.99"),
        (50_000_000, "50.00"),
        (100_000_000, "100.00"),
        (100_000_001, "100.000001"),
        (MAX_MICROS, "1000000000.00"),
    ],
)
def test_amounts_format_with_at_least_two_and_at_most_six_decimals(micros: int, text: str) -> None:
    assert format_micros(micros) == text


def test_from_micros_gives_a_decimal_equal_to_the_amount() -> None:
    assert from_micros(29_990_000) == Decimal("29.99")
    assert isinstance(from_micros(1), Decimal)


@given(micros=micros_in_range)
def test_micros_round_trip_exactly_through_decimal(micros: int) -> None:
    assert to_micros(from_micros(micros)) == micros


@given(micros=micros_in_range)
def test_micros_round_trip_exactly_through_formatted_text(micros: int) -> None:
    assert to_micros(format_micros(micros)) == micros


@given(micros=micros_in_range)
def test_formatted_amount_is_plain_decimal_text_with_two_to_six_decimals(micros: int) -> None:
    text = format_micros(micros)
    whole, dot, decimals = text.partition(".")
    assert dot == "."
    assert whole.isdigit()
    assert decimals.isdigit()
    assert 2 <= len(decimals) <= 6
    assert "e" not in text.lower()


@given(amount=st.decimals(min_value=0, max_value=MAX_AMOUNT, places=6, allow_nan=False, allow_infinity=False))
def test_any_valid_decimal_converts_to_micros_and_back_to_an_equal_amount(amount: Decimal) -> None:
    micros = to_micros(amount)
    assert micros == amount * MICROS_PER_UNIT
    assert from_micros(micros) == amount


@given(micros=st.integers(min_value=0, max_value=int(MAX_AMOUNT) * MICROS_PER_UNIT))
def test_the_integer_formatting_writes_what_the_decimal_one_writes(micros: int) -> None:
    assert format_micros(micros) == f"{from_micros(micros):f}"


@given(micros=st.integers(min_value=0, max_value=int(MAX_AMOUNT) * MICROS_PER_UNIT))
def test_a_plain_decimal_string_reads_back_as_the_same_micro_units(micros: int) -> None:
    text = format_micros(micros)
    assert to_micros(text) == micros
    assert to_micros(Decimal(text)) == micros
    if micros % MICROS_PER_UNIT == 0:
        assert to_micros(micros // MICROS_PER_UNIT) == micros
