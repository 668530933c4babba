"""Webhook values, the retry schedule, the threshold, and Standard Webhooks signatures checked by the
reference library: pure, no store, no network, no clock."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook as Verifier

from haldir.core.webhook_signing import headers, new_secret, secret_key, sign
from haldir.core.webhooks import (
    MAX_ATTEMPTS,
    SealedSecret,
    Target,
    crossed_threshold,
    error_text,
    event_body,
    next_attempt,
    should_disable,
    subscribed_events,
)
from haldir.errors import InvalidRequest

T0 = datetime(2026, 4, 5, 19, 0, 0, tzinfo=UTC)


def test_a_new_secret_is_whsec_and_the_base64_of_32_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first != second
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32
    assert secret_key(first) == base64.b64decode(first.removeprefix("whsec_"))


@pytest.mark.parametrize(
    "bad", ["", "sk_live_x", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()]
)
def test_a_malformed_secret_is_refused_without_repeating_it(bad: str) -> None:
    with pytest.raises(ValueError, match="webhook signing") as refused:
        secret_key(bad)
    assert bad.removeprefix("whsec_") not in str(refused.value) or not bad.removeprefix("whsec_")


@given(body=st.binary(max_size=2000), message_id=st.from_regex(r"evt_[A-Za-z0-9]{1,30}", fullmatch=True))
def test_every_signature_verifies_with_the_standardwebhooks_library(body: bytes, message_id: str) -> None:
    secret = new_secret()
    timestamp = int(datetime.now(UTC).timestamp())
    sent = headers([secret_key(secret)], message_id=message_id, timestamp=timestamp, body=body)
    Verifier(secret).verify(body, sent, json_parse=False)


@given(body=st.binary(min_size=1, max_size=200), position=st.integers(min_value=0), flip=st.integers(1, 255))
def test_any_single_byte_change_of_the_body_fails_verification(body: bytes, position: int, flip: int) -> None:
    secret = new_secret()
    timestamp = int(datetime.now(UTC).timestamp())
    sent = headers([secret_key(secret)], message_id="evt_1", timestamp=timestamp, body=body)
    changed = bytearray(body)
    changed[position % len(body)] ^= flip
    with pytest.raises(Exception, match="No matching signature"):
        Verifier(secret).verify(bytes(changed), sent, json_parse=False)


def test_during_a_rotation_both_secrets_sign_and_each_verifies_alone() -> None:
    old, new = new_secret(), new_secret()
    timestamp = int(datetime.now(UTC).timestamp())
    sent = headers([secret_key(new), secret_key(old)], message_id="evt_1", timestamp=timestamp, body=b"{}")
    assert len(sent["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Verifier(secret).verify(b"{}", sent)
    with pytest.raises(Exception, match="No matching signature"):
        Verifier(new_secret()).verify(b"{}", sent)


def test_the_signature_is_the_libraries_own() -> None:
    secret = new_secret()
    expected = Verifier(secret).sign("evt_1", T0, b'{"a":1}')
    assert (
        sign(secret_key(secret), message_id="evt_1", timestamp=int(T0.timestamp()), body=b'{"a":1}')
        == expected
    )


def test_the_previous_secret_signs_only_until_its_grace_ends() -> None:
    current, previous = SealedSecret(b"c", 2, 1), SealedSecret(b"p", 1, 1)
    target = Target("acme", "whk_1", "https://x", current, previous, T0 + timedelta(hours=24))
    assert target.signing(T0) == (current, previous)
    assert target.signing(T0 + timedelta(hours=24)) == (current,)
    assert Target("acme", "whk_1", "https://x", current, None, None).signing(T0) == (current,)


def test_the_retry_schedule_is_five_seconds_to_a_day_then_failed() -> None:
    waits = [next_attempt(n, failed_at=T0, jitter=0.5) for n in range(1, MAX_ATTEMPTS)]
    assert [int((w - T0).total_seconds()) for w in waits if w is not None] == [
        5,
        30,
        120,
        600,
        3600,
        21600,
        86400,
    ]
    assert next_attempt(MAX_ATTEMPTS, failed_at=T0, jitter=0.5) is None
    assert MAX_ATTEMPTS == 8


@given(jitter=st.floats(min_value=0, max_value=1, exclude_max=True), retries=st.integers(1, 7))
def test_jitter_keeps_every_wait_within_twenty_percent(jitter: float, retries: int) -> None:
    base = next_attempt(retries, failed_at=T0, jitter=0.5)
    found = next_attempt(retries, failed_at=T0, jitter=jitter)
    assert base is not None
    assert found is not None
    nominal = (base - T0).total_seconds()
    assert 0.8 * nominal - 1e-6 <= (found - T0).total_seconds() <= 1.2 * nominal + 1e-6


def test_a_webhook_is_disabled_after_a_day_of_failures_and_not_before() -> None:
    assert not should_disable(None, now=T0)
    assert not should_disable(T0, now=T0 + timedelta(hours=23, minutes=59))
    assert should_disable(T0, now=T0 + timedelta(hours=24))


@pytest.mark.parametrize(
    ("before", "after", "limit", "crossed"),
    [
        (0, 79, 100, False),
        (79, 80, 100, True),
        (0, 100, 100, True),
        (80, 90, 100, False),  # already past it
        (0, 5, 0, False),  # no limit, no threshold
        (7_999_999, 8_000_000, 10_000_000, True),
    ],
)
def test_the_threshold_is_crossed_once_at_eighty_percent(
    before: int, after: int, limit: int, crossed: bool
) -> None:
    assert crossed_threshold(before, after, limit) is crossed


def test_a_subscription_checks_and_sorts_its_event_types() -> None:
    assert subscribed_events(["session.revoked", "audit.flagged", "audit.flagged"]) == (
        "audit.flagged",
        "session.revoked",
    )
    assert subscribed_events(["audit.flagged", "*"]) == ("*",)
    for bad in ([], ["nope"], [3], ["AUDIT.FLAGGED"]):
        with pytest.raises(InvalidRequest):
            subscribed_events(bad)


def test_the_body_is_type_timestamp_and_data_and_the_same_every_time() -> None:
    body = event_body("session.revoked", T0, {"session_id": "ses_1", "b": [1, 2]})
    assert body == event_body("session.revoked", T0, {"b": [1, 2], "session_id": "ses_1"})
    assert json.loads(body) == {
        "type": "session.revoked",
        "timestamp": "2026-04-05T19:00:00Z",
        "data": {"session_id": "ses_1", "b": [1, 2]},
    }


def test_an_attempt_error_is_one_bounded_line() -> None:
    assert error_text("a\nb\tc") == "a b c"
    assert len(error_text("x" * 5000)) == 500
