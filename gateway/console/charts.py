"""Chart geometry for the trends page, drawn by the template as inline SVG (no script, no library).

:func:`stacked_bars` turns incidents per day and variant into one stacked bar per day (per week
when the period is longer than :data:`MAX_DAILY_BARS` days); :func:`domain_bars` the top
domains into horizontal bars; :func:`sparkline` a problem row's bounces per week. Colours are
the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies); each bar
also carries a ``<title>`` and the page repeats the figures in a table, so nothing depends on
colour alone.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Final

from storage.problems import DomainCount, TrendPoint

#: Okabe & Ito (2008), "Color Universal Design": eight colours; text on white passes WCAG AA.
PALETTE: Final = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MAX_DAILY_BARS: Final = 92
MAX_BAR_WIDTH: Final = 48.0
WIDTH: Final = 760
HEIGHT: Final = 220
LEFT: Final = 44
BOTTOM: Final = 24


@dataclasses.dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclasses.dataclass(frozen=True, slots=True)
class Tick:
    position: float
    label: str


@dataclasses.dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    rects: list[Rect]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    legend: list[tuple[str, str]]  # (colour, variant)
    #: (bucket label, {variant: count}, total) for the table under the chart.
    table: list[tuple[str, dict[str, int], int]]
    bucket: str  # "day" or "week"


def _buckets(
    points: Sequence[TrendPoint], first: date | None, last: date | None
) -> tuple[str, dict[date, dict[str, int]]]:
    days = [date.fromisoformat(p.day) for p in points]
    if not days:
        return "day", {}
    # The period asked for (the filters), else the data's own: days without incidents are bars too.
    first = min(first or min(days), min(days))
    last = max(last or max(days), max(days))
    weekly = (last - first).days >= MAX_DAILY_BARS
    counts: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for day, point in zip(days, points, strict=True):
        start = day - timedelta(days=day.weekday()) if weekly else day
        counts[start][point.variant or "-"] += point.count
    step = timedelta(days=7 if weekly else 1)
    cursor = first - timedelta(days=first.weekday()) if weekly else first
    while cursor <= last:  # empty buckets too, so gaps show as gaps
        counts[cursor]  # reading the defaultdict creates the empty bucket
        cursor += step
    return ("week" if weekly else "day"), dict(sorted(counts.items()))


def _nice_max(value: int) -> int:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000, 20000, 50000):
        if value <= step * 4:
            return step * 4
    return value


def stacked_bars(
    points: Sequence[TrendPoint],
    variant_order: Sequence[str],
    first: date | None = None,
    last: date | None = None,
) -> Chart:
    """Stacked bars per day (per week past :data:`MAX_DAILY_BARS` days) from ``first`` to ``last``."""
    bucket, counts = _buckets(points, first, last)
    seen = {v for per in counts.values() for v in per}
    variants = [v for v in variant_order if v in seen] + sorted(seen - set(variant_order))
    colours = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(variants)}
    totals = [sum(per.values()) for per in counts.values()]
    top = _nice_max(max(totals, default=0) or 1)
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - 8
    slot = plot_w / max(len(counts), 1)
    bar_w = min(max(slot * 0.8, 1.0), MAX_BAR_WIDTH)
    rects, table, x_ticks = [], [], []
    label_every = max(1, len(counts) // 8)
    for i, (start, per) in enumerate(counts.items()):
        x = LEFT + i * slot + (slot - bar_w) / 2
        y = 8.0 + plot_h
        for variant in variants:
            n = per.get(variant, 0)
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            rects.append(
                Rect(
                    round(x, 1),
                    round(y, 1),
                    round(bar_w, 1),
                    round(h, 1),
                    colours[variant],
                    f"{start.isoformat()} {variant}: {n}",
                )
            )
        table.append((start.isoformat(), {v: per.get(v, 0) for v in variants}, sum(per.values())))
        if i % label_every == 0:
            x_ticks.append(Tick(round(x + bar_w / 2, 1), start.strftime("%m-%d")))
    y_ticks = [Tick(round(8 + plot_h - plot_h * k / 4, 1), str(top * k // 4)) for k in range(5)]
    return Chart(WIDTH, HEIGHT, rects, x_ticks, y_ticks, [(colours[v], v) for v in variants], table, bucket)


def domain_bars(domains: Sequence[DomainCount]) -> Chart:
    row_h, label_w = 22, 230
    height = max(len(domains), 1) * row_h + 8
    top = max((d.count for d in domains), default=1) or 1
    rects = [
        Rect(
            label_w,
            4 + i * row_h,
            round((WIDTH - label_w - 60) * d.count / top, 1),
            row_h - 6,
            PALETTE[0],
            f"{d.domain}: {d.count}",
        )
        for i, d in enumerate(domains)
    ]
    ticks = [Tick(4 + i * row_h + row_h / 2, d.domain or "-") for i, d in enumerate(domains)]
    table = [(d.domain or "-", {"recipients": d.recipients}, d.count) for d in domains]
    return Chart(WIDTH, height, rects, [], ticks, [], table, "")


@dataclasses.dataclass(frozen=True, slots=True)
class Spark:
    """A row's bounces per week as small bars (oldest first), and the same figures as text."""

    bars: list[Rect]
    counts: list[int]
    width: int
    height: int


SPARK_WEEKS: Final = 12


def sparkline(days: dict[str, int], last: date, weeks: int = SPARK_WEEKS) -> Spark:
    """Bounces per week for the ``weeks`` weeks ending with ``last`` (a week = 7 days back from it)."""
    counts = [0] * weeks
    for day, n in days.items():
        back = (last - date.fromisoformat(day)).days // 7
        if 0 <= back < weeks:
            counts[weeks - 1 - back] += n
    width, height, gap = weeks * 7, 18, 1
    top = max(counts) or 1
    bars = [
        Rect(
            i * 7,
            round(height - max(height * n / top, 1.0 if n else 0.0), 1),
            7 - gap,
            round(max(height * n / top, 1.0 if n else 0.0), 1),
            PALETTE[1],
            str(n),
        )
        for i, n in enumerate(counts)
    ]
    return Spark(bars, counts, width, height)
