"""Chart geometry for the admin statistics page, drawn by the templates as inline SVG.

No chart library and nothing from a CDN: the functions here turn numbers into rectangles, ticks
and labels in a fixed coordinate system (the SVG's ``viewBox``); CSS colours them by series class,
so they follow the light and dark themes. Every bar carries its numbers in words (its ``<title>``),
and the page shows the same numbers as a table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Format = Callable[[float], str]

# Text in the SVG is drawn in viewBox units: a chart narrower than its viewBox shrinks its text,
# so the page scrolls a chart sideways below a minimum width rather than shrink it further.
FONT = 12
CHAR_WIDTH = 7.3  # about the widest system-ui fonts' average advance at FONT
MAX_LABEL_CHARS = 26


@dataclass(frozen=True)
class Series:
    key: str  # a CSS class suffix: the bar's colour
    name: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: str
    title: str


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    title: str = ""  # the full text, when ``text`` is shortened


@dataclass
class Chart:
    width: int
    height: int
    # The plot area inside the axes.
    left: float
    top: float
    right: float
    bottom: float
    series: list[Series]
    kind: str = "bars"  # "columns" (over time) or "bars" (per category): sets its minimum width
    bars: list[Bar] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    # Category names beside horizontal bars, and values at their ends.
    labels: list[Label] = field(default_factory=list)
    values: list[Label] = field(default_factory=list)
    gridlines_vertical: bool = False

    @property
    def empty(self) -> bool:
        return not self.bars


def nice_ticks(maximum: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``maximum``: steps of 1, 2 or 5 times a power of ten."""
    if maximum <= 0 or not math.isfinite(maximum):
        return [0.0, 1.0]
    raw = maximum / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    steps = math.ceil(maximum / step - 1e-9)
    return [round(i * step, 10) for i in range(steps + 1)]


def number(value: float) -> str:
    """A count or a measurement, short: 12, 1,234, 3.5, 0.042."""
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def milliseconds(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:,.1f} s"
    return f"{number(value)} ms"


def percent(value: float) -> str:
    return f"{value * 100:.1f}".rstrip("0").rstrip(".") + " %"


def shorten(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Column:
    """One bucket of a stacked column chart: its axis label, its tooltip heading, its stack."""

    label: str
    heading: str
    values: Sequence[float]  # in the order of the chart's series


def stacked_columns(columns: Sequence[Column], series: Sequence[Series], *, max_labels: int = 8) -> Chart:
    """Columns over time, each a stack of the series' values (requests by outcome per hour)."""
    width, height = 720, 280
    chart = Chart(
        width,
        height,
        left=48,
        top=14,
        right=width - 12,
        bottom=height - 40,
        series=list(series),
        kind="columns",
    )
    if not columns:
        return chart
    ticks = nice_ticks(max(sum(c.values) for c in columns))
    top_value = ticks[-1]
    plot_h = chart.bottom - chart.top
    slot = (chart.right - chart.left) / len(columns)
    gap = min(slot * 0.2, 6)
    chart.y_ticks = [Tick(chart.bottom - plot_h * t / top_value, number(t)) for t in ticks]
    every = max(1, math.ceil(len(columns) / max_labels))
    for i, column in enumerate(columns):
        x = chart.left + i * slot + gap / 2
        if i % every == 0:
            chart.x_ticks.append(Tick(x + (slot - gap) / 2, column.label))
        base = chart.bottom
        total = sum(column.values)
        summary = ", ".join(f"{s.name} {number(v)}" for s, v in zip(series, column.values, strict=True))
        for s, value in zip(series, column.values, strict=True):
            if value <= 0:
                continue
            h = plot_h * value / top_value
            base -= h
            chart.bars.append(
                Bar(
                    x,
                    base,
                    slot - gap,
                    h,
                    s.key,
                    f"{column.heading}: {s.name} {number(value)} of {number(total)} ({summary})",
                )
            )
    return chart


@dataclass(frozen=True)
class Group:
    """One category of a horizontal bar chart (a model) with a value per series (None: no data)."""

    label: str
    values: Sequence[float | None]


def horizontal_bars(
    groups: Sequence[Group],
    series: Sequence[Series],
    *,
    fmt: Format = number,
    maximum: float | None = None,
    bar_height: int = 16,
) -> Chart:
    """A bar per series for each group, side by side, lengths on one shared axis."""
    longest = max((len(shorten(g.label)) for g in groups), default=4)
    left = min(12 + longest * CHAR_WIDTH, 210)
    width = 560
    per_group = bar_height * len(series) + 12
    height = 14 + per_group * max(len(groups), 1) + 30
    chart = Chart(
        width,
        height,
        left=left,
        top=14,
        right=width - 70,  # room for the value at the end of the longest bar
        bottom=height - 30,
        series=list(series),
        gridlines_vertical=True,
    )
    found = [v for g in groups for v in g.values if v is not None]
    if not found:
        return chart
    ticks = nice_ticks(maximum if maximum is not None else max(found))
    top_value = ticks[-1]
    plot_w = chart.right - chart.left
    chart.x_ticks = [Tick(chart.left + plot_w * t / top_value, fmt(t)) for t in ticks]
    for i, group in enumerate(groups):
        y0 = chart.top + i * per_group + 6
        chart.labels.append(
            Label(
                chart.left - 8,
                y0 + bar_height * len(series) / 2,
                shorten(group.label),
                group.label if shorten(group.label) != group.label else "",
            )
        )
        for j, (s, value) in enumerate(zip(series, group.values, strict=True)):
            if value is None:
                continue
            y = y0 + j * bar_height
            w = plot_w * value / top_value
            chart.bars.append(
                Bar(chart.left, y + 1, w, bar_height - 2, s.key, f"{group.label}: {s.name} {fmt(value)}")
            )
            chart.values.append(Label(chart.left + w + 4, y + bar_height / 2, fmt(value)))
    return chart
