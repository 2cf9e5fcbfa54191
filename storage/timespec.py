"""Durations (``90s``, ``30m``, ``24h``, ``7d``, ``2w``, ``1d12h``) and time bounds (a duration
back from now, an ISO 8601 date, or a date and time) for ``--since``/``--until``, the API filters
and ``db purge --older-than``."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(?:\d+[smhdw])+$")
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """``24h`` -> 24 hours; raise ValueError with the accepted forms."""
    value = text.strip().lower().replace(" ", "")
    if not _DURATION.match(value):
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 30m, 24h, 7d, 2w, 1d12h)")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _PART.findall(value)))


def parse_time_bound(text: str, *, now: datetime | None = None) -> datetime:
    """A duration ago, an ISO date (midnight UTC) or an ISO date-time (UTC unless it has an offset)."""
    value = text.strip()
    now = now or datetime.now(UTC)
    if _DURATION.match(value.lower()):
        return now - parse_duration(value)
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (24h, 7d) nor a date (2025-05-01, 2025-05-01T12:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
