"""Time frames of history (epoch milliseconds, ISO-8601, relative now-2h/h) and start dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.timeframe import parse_time

NOW = datetime(2026, 11, 24, 15, 37, 42, 123000, tzinfo=UTC)  # a Tuesday


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1767225600000", 1767225600000),
        ("2026-01-01T00:00:00Z", 1767225600000),
        ("2026-01-01T00:00:00", 1767225600000),
        ("2026-01-01 00:00:00", 1767225600000),
        ("2026-01-01T01:00:00+01:00", 1767225600000),
        ("2026-01-01", 1767225600000),
        ("now", ms(NOW)),
        ("now-30m", ms(NOW - timedelta(minutes=30))),
        ("now-2h", ms(NOW - timedelta(hours=2))),
        ("now-1d", ms(NOW - timedelta(days=1))),
        ("now-1w", ms(NOW - timedelta(weeks=1))),
        ("now-1M", ms(NOW.replace(month=10))),
        ("now-1y", ms(NOW.replace(year=2025))),
        ("now-2h/h", ms(datetime(2026, 11, 24, 13, 0, tzinfo=UTC))),
        ("now-1d/d", ms(datetime(2026, 11, 23, tzinfo=UTC))),
        ("now/w", ms(datetime(2026, 11, 23, tzinfo=UTC))),  # Monday
        ("now-1M/M", ms(datetime(2026, 10, 1, tzinfo=UTC))),
        ("now/y", ms(datetime(2026, 1, 1, tzinfo=UTC))),
        ("now-5m/m", ms(datetime(2026, 11, 24, 15, 32, tzinfo=UTC))),
        ("now+1d", ms(NOW + timedelta(days=1))),
    ],
)
def test_time_formats(text: str, expected: int) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "now-1", "now-1q", "now--1d", "2026-13-01", ""])
def test_bad_times(text: str) -> None:
    with pytest.raises(ValueError, match="is not a time"):
        parse_time(text, now=NOW)


def test_month_arithmetic_clamps_the_day() -> None:
    march_31 = datetime(2026, 3, 31, tzinfo=UTC)
    assert parse_time("now-1M", now=march_31) == ms(datetime(2026, 2, 28, tzinfo=UTC))


@given(n=st.integers(1, 500), unit=st.sampled_from("smhdwMy"))
def test_relative_frames_are_in_the_past_and_ordered(n: int, unit: str) -> None:
    assert parse_time(f"now-{n}{unit}", now=NOW) < parse_time("now", now=NOW)
    assert parse_time(f"now-{n + 1}{unit}", now=NOW) < parse_time(f"now-{n}{unit}", now=NOW)
    assert parse_time(f"now-{n}{unit}/{unit}", now=NOW) <= parse_time(f"now-{n}{unit}", now=NOW)


def test_an_eight_digit_time_is_an_iso_basic_date() -> None:
    assert parse_time("20260101") == parse_time("2026-01-01T00:00:00Z") == 1_767_225_600_000
    assert parse_time("1767225600000") == 1_767_225_600_000
    assert parse_time("20261399") == 20261399  # not a date: epoch milliseconds after all


def test_start_dates_with_milliseconds_are_exact() -> None:
    from datetime import UTC, datetime

    from reconciler.timeframe import epoch_millis, parse_start_date, parse_time

    base = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    for ms in range(1000):
        text = f"2026-01-01T00:00:00.{ms:03d}Z"
        assert parse_start_date(text) == base + ms
        assert parse_time(text) == base + ms
    assert epoch_millis(datetime(2026, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)) == base + 1
