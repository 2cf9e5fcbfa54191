"""Durations and time bounds for --since/--until, the API filters and db purge (storage.timespec)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from storage.timespec import parse_duration, parse_time_bound

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        (" 1D 12H ", timedelta(days=1, hours=12)),  # case and spaces do not matter
        ("0s", timedelta(0)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "1y", "-1d", "1.5h", "1d-2h", "24 hours"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - timedelta(hours=24)),
        ("2025-05-01", datetime(2025, 5, 1, tzinfo=UTC)),  # midnight UTC
        ("2025-05-01T12:30:00", datetime(2025, 5, 1, 12, 30, tzinfo=UTC)),  # no offset: UTC
        ("2025-05-01T12:30:00Z", datetime(2025, 5, 1, 12, 30, tzinfo=UTC)),
        ("2025-05-01T12:30:00+09:00", datetime(2025, 5, 1, 3, 30, tzinfo=UTC)),  # converted
    ],
)
def test_time_bounds(text: str, expected: datetime) -> None:
    got = parse_time_bound(text, now=NOW)
    assert got == expected and got.tzinfo is UTC


@pytest.mark.parametrize("text", ["yesterday", "2025-13-01", "2025-05-01T25:00", "05/01/2025"])
def test_not_time_bounds(text: str) -> None:
    with pytest.raises(ValueError, match="neither a duration"):
        parse_time_bound(text, now=NOW)
