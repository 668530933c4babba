"""Identifiers: readable prefixes and random base62 bodies."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from haldir.core.ids import API_KEY, SESSION, new_id, random_token


def test_prefixes_are_readable_names() -> None:
    assert SESSION == "ses"
    assert API_KEY == "hld"


def test_new_id_is_prefix_underscore_and_22_base62_characters() -> None:
    assert re.fullmatch(r"ses_[A-Za-z0-9]{22}", new_id(SESSION))


def test_new_ids_are_distinct() -> None:
    assert len({new_id(SESSION) for _ in range(200)}) == 200


@given(length=st.integers(min_value=0, max_value=200))
def test_random_token_has_the_asked_length_in_base62(length: int) -> None:
    token = random_token(length)
    assert len(token) == length
    assert token == "" or (token.isascii() and token.isalnum())
