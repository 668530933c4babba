"""Session scope grammar: parsing, granting and the `spend:<amount>` shorthand."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from haldir.core.money import MAX_AMOUNT, MICROS_PER_UNIT, format_micros
from haldir.core.scopes import BUILTIN_SCOPES, SPEND, Scope, grants, parse_scope, parse_session_scopes
from haldir.errors import InvalidRequest, InvalidScope

KNOWN = BUILTIN_SCOPES | {"stripe"}

names = st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True).filter(lambda name: name != SPEND)
qualifiers = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}", fullmatch=True)
scopes = st.builds(Scope, names, st.none() | qualifiers)


def test_bare_name_parses_to_a_scope_without_qualifier() -> None:
    assert parse_scope("read", known=KNOWN) == Scope("read")


def test_name_and_qualifier_parse_to_a_qualified_scope() -> None:
    assert parse_scope("stripe:refund", known=KNOWN) == Scope("stripe", "refund")


def test_qualifier_may_hold_dots_dashes_and_underscores() -> None:
    assert parse_scope("write:db.orders_v2-eu", known=KNOWN) == Scope("write", "db.orders_v2-eu")


def test_names_and_qualifiers_of_64_characters_are_accepted() -> None:
    name, qualifier = "s" + "x" * 63, "q" * 64
    assert parse_scope(f"{name}:{qualifier}") == Scope(name, qualifier)


@pytest.mark.parametrize("text", ["browse", "teleport:mars", "db.orders", "crm_v2-eu:read.all", "s3"])
def test_any_well_formed_name_is_accepted_when_no_known_set_is_given(text: str) -> None:
    assert str(parse_scope(text)) == text


def test_spend_amount_keeps_its_meaning_without_a_known_set() -> None:
    parsed = parse_session_scopes(["read", "browse", "spend:50"])
    assert parsed.scopes == (Scope("browse"), Scope("read"), Scope(SPEND))
    assert parsed.implied_spend_limit_micros == 50 * MICROS_PER_UNIT


def test_name_scope_grants_every_qualified_scope_of_that_name() -> None:
    assert Scope("stripe").grants(Scope("stripe", "refund"))


def test_qualified_scope_does_not_grant_the_bare_name() -> None:
    assert not Scope("stripe", "refund").grants(Scope("stripe"))


def test_qualified_scope_does_not_grant_a_sibling_qualifier() -> None:
    assert not Scope("stripe", "refund").grants(Scope("stripe", "charge"))


def test_scope_does_not_grant_a_name_it_is_a_prefix_of() -> None:
    assert not Scope("stripe").grants(Scope("stripes"))
    assert not Scope("stripe").grants(Scope("stripe-live", "refund"))


def test_held_scopes_grant_when_any_one_of_them_grants() -> None:
    held = [Scope("read"), Scope("stripe", "charge")]
    assert grants(held, Scope("stripe", "charge"))
    assert grants(held, Scope("read", "docs"))
    assert not grants(held, Scope("stripe", "refund"))
    assert not grants([], Scope("read"))


def test_strict_mode_rejects_a_name_outside_the_known_set_as_unknown() -> None:
    with pytest.raises(InvalidScope, match="unknown scope 'stripe'") as caught:
        parse_scope("stripe:refund", known=BUILTIN_SCOPES)
    assert caught.value.code == "invalid_scope"
    assert isinstance(caught.value, InvalidRequest)


def test_unknown_name_error_lists_the_known_names() -> None:
    with pytest.raises(InvalidScope, match=r"known scopes are \['admin', 'delete'"):
        parse_scope("deploy", known=BUILTIN_SCOPES)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":",
        "Read",
        "1read",
        "_read",
        "re ad",
        "read:",
        ":refund",
        "stripe:Refund",
        "stripe:.refund",
        "stripe:re fund",
        "stripe:a:b",
        "stripe:refund/all",
        "stripe:réfund",
        " read",
        "read\n",
        ".read",
        "s" + "x" * 64,
        "stripe:" + "q" * 65,
    ],
)
def test_malformed_scope_text_is_rejected(text: str) -> None:
    with pytest.raises(InvalidScope, match="malformed scope"):
        parse_scope(text)


def test_scope_that_is_not_a_string_is_rejected() -> None:
    with pytest.raises(InvalidScope, match="must be a string"):
        parse_scope(42, known=KNOWN)  # type: ignore[arg-type]


def test_spend_with_an_amount_parses_as_a_qualified_spend_scope() -> None:
    assert parse_scope("spend:29.99", known=KNOWN) == Scope(SPEND, "29.99")


def test_session_spend_amount_normalises_to_spend_and_implies_a_limit() -> None:
    parsed = parse_session_scopes(["read", "spend:50"], known=KNOWN)
    assert parsed.scopes == (Scope("read"), Scope(SPEND))
    assert parsed.implied_spend_limit_micros == 50 * MICROS_PER_UNIT


def test_session_without_a_spend_amount_implies_no_limit() -> None:
    parsed = parse_session_scopes(["read", "spend"], known=KNOWN)
    assert parsed.implied_spend_limit_micros is None


def test_same_spend_amount_written_twice_is_not_a_conflict() -> None:
    parsed = parse_session_scopes(["spend:50", "spend:50.00", "spend"], known=KNOWN)
    assert parsed.scopes == (Scope(SPEND),)
    assert parsed.implied_spend_limit_micros == 50 * MICROS_PER_UNIT


def test_conflicting_spend_amounts_are_rejected() -> None:
    with pytest.raises(InvalidScope, match="conflicting spend scopes"):
        parse_session_scopes(["spend:50", "spend:60"], known=KNOWN)


@pytest.mark.parametrize(
    "text",
    [
        "spend:abc",
        "spend:-5",
        "spend:1.0000001",
        "spend:NaN",
        "spend:Infinity",
        "spend:1000000000.01",
        "spend:1,5",
    ],
)
def test_malformed_spend_amount_is_rejected(text: str) -> None:
    with pytest.raises(InvalidScope, match="malformed scope"):
        parse_session_scopes([text], known=KNOWN)


@pytest.mark.parametrize("text", ["spend: 50", "spend:50 ", "spend:5_0", "spend:٥٠"])
def test_spend_amount_outside_the_scope_grammar_is_rejected(text: str) -> None:
    with pytest.raises(InvalidScope):
        parse_scope(text, known=KNOWN)


def test_session_scopes_are_deduplicated_and_sorted() -> None:
    parsed = parse_session_scopes(["write", "read", "write", "stripe:refund"], known=KNOWN)
    assert parsed.scopes == (Scope("read"), Scope("stripe", "refund"), Scope("write"))


def test_one_bad_session_scope_rejects_the_whole_list() -> None:
    with pytest.raises(InvalidScope, match="unknown scope 'deploy'"):
        parse_session_scopes(["read", "deploy"], known=KNOWN)


@given(name=names, qualifier=qualifiers)
def test_name_grants_any_of_its_qualified_scopes(name: str, qualifier: str) -> None:
    assert Scope(name).grants(Scope(name, qualifier))


@given(name=names, qualifier=qualifiers, other=qualifiers)
def test_qualified_scope_grants_only_itself(name: str, qualifier: str, other: str) -> None:
    assume(other != qualifier)
    held = Scope(name, qualifier)
    assert held.grants(Scope(name, qualifier))
    assert not held.grants(Scope(name))
    assert not held.grants(Scope(name, other))


@given(name=names, qualifier=st.none() | qualifiers)
def test_parsed_scope_prints_back_as_its_text(name: str, qualifier: str | None) -> None:
    text = name if qualifier is None else f"{name}:{qualifier}"
    assert str(parse_scope(text, known=KNOWN | {name})) == text


@given(scope=scopes)
def test_scope_read_back_from_its_text_is_equal(scope: Scope) -> None:
    assert Scope.from_text(str(scope)) == scope


@given(micros=st.integers(min_value=0, max_value=int(MAX_AMOUNT) * MICROS_PER_UNIT))
def test_spend_scope_of_any_valid_amount_implies_exactly_that_limit(micros: int) -> None:
    parsed = parse_session_scopes([f"spend:{format_micros(micros)}"], known=KNOWN)
    assert parsed.scopes == (Scope(SPEND),)
    assert parsed.implied_spend_limit_micros == micros
