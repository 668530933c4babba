"""The sealed sign-in cookie: opens on every replica that shares the log key, nowhere else, and not once
tampered with or expired; CSRF tokens are bound to the cookie they were made for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haldir.web.signin import Seal, SignedOut, _b64, _unb64

KEY = "hld_" + "k" * 48
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=8)


def test_a_cookie_sealed_by_one_replica_opens_on_another_sharing_the_log_key() -> None:
    cookie = Seal(b"the log key").seal(KEY, expires=LATER)

    assert Seal(b"the log key").open(cookie, now=NOW) == KEY
    assert KEY not in cookie


def test_a_server_with_another_log_key_cannot_open_it() -> None:
    cookie = Seal(b"the log key").seal(KEY, expires=LATER)

    with pytest.raises(SignedOut):
        Seal(b"another log key").open(cookie, now=NOW)


def test_it_opens_until_its_expiry_and_not_from_then_on() -> None:
    seal = Seal(b"the log key")
    cookie = seal.seal(KEY, expires=LATER)

    assert seal.open(cookie, now=LATER - timedelta(seconds=1)) == KEY
    with pytest.raises(SignedOut, match="expired"):
        seal.open(cookie, now=LATER)


@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_single_byte_tamper_is_refused(position: int, flip: int) -> None:
    seal = Seal(b"the log key")
    raw = bytearray(_unb64(seal.seal(KEY, expires=LATER)))
    raw[position % len(raw)] ^= flip

    with pytest.raises(SignedOut):
        seal.open(_b64(bytes(raw)), now=NOW)


@pytest.mark.parametrize("cookie", [None, "", "not base64 !", "AAAA", "x" * 300])
def test_a_missing_or_malformed_cookie_is_refused(cookie: str | None) -> None:
    with pytest.raises(SignedOut):
        Seal(b"the log key").open(cookie, now=NOW)


def test_a_csrf_token_matches_only_the_cookie_it_was_made_for() -> None:
    seal = Seal(b"the log key")
    mine, theirs = seal.seal(KEY, expires=LATER), seal.seal(KEY, expires=LATER)

    assert seal.csrf_matches(mine, seal.csrf_token(mine))
    assert not seal.csrf_matches(mine, seal.csrf_token(theirs))
    assert not seal.csrf_matches(mine, "")
    assert not seal.csrf_matches(None, seal.csrf_token(mine))
    assert not Seal(b"another log key").csrf_matches(mine, seal.csrf_token(mine))
