"""Clock helpers: aware UTC only, printed as ISO-8601 with a `Z`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haldir.core.clock import Clock, isoformat, utc
from tests.support import FakeClock

offsets = st.builds(
    timezone, st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(lambda m: timedelta(minutes=m))
)
aware = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=offsets | st.just(UTC)
)


def test_isoformat_prints_utc_with_a_z_suffix() -> None:
    assert isoformat(datetime(2026, 4, 5, 19, 0, 0, tzinfo=UTC)) == "2026-04-05T19:00:00Z"


def test_isoformat_shows_microseconds_only_when_present() -> None:
    assert isoformat(datetime(2026, 4, 5, 19, 0, 0, 123, tzinfo=UTC)) == "2026-04-05T19:00:00.000123Z"


def test_isoformat_converts_other_offsets_to_utc() -> None:
    moment = datetime(2026, 4, 5, 21, 30, 0, tzinfo=timezone(timedelta(hours=2, minutes=30)))
    assert isoformat(moment) == "2026-04-05T19:00:00Z"


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 4, 5, 19, 0, 0)
    with pytest.raises(ValueError, match="naive datetime"):
        utc(naive)
    with pytest.raises(ValueError, match="naive datetime"):
        isoformat(naive)


def test_utc_keeps_the_instant_and_sets_the_utc_zone() -> None:
    moment = datetime(2026, 4, 5, 14, 0, 0, tzinfo=timezone(timedelta(hours=-5)))
    converted = utc(moment)
    assert converted == moment
    assert converted.tzinfo is UTC
    assert converted.hour == 19


def test_fake_clock_is_a_clock_in_utc() -> None:
    clock: Clock = FakeClock()
    assert isoformat(clock.now()) == "2026-04-05T19:00:00Z"


@given(moment=aware)
def test_isoformat_reads_back_as_the_same_instant(moment: datetime) -> None:
    text = isoformat(moment)
    assert text.endswith("Z")
    assert "+" not in text
    assert datetime.fromisoformat(text) == moment


@given(naive=st.datetimes())
def test_any_naive_datetime_is_refused(naive: datetime) -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        isoformat(naive)
